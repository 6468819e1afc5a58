"""Segmentation losses; every one skips pixels equal to `ignore_index`."""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from .errors import ConfigError
from .registry import LOSSES, builder_options, lookup, register_loss


class CrossEntropy(nn.Module):
    """Pixel-wise (optionally class-weighted) cross-entropy over (N, C, H, W) logits, (N, H, W) targets."""

    def __init__(self, ignore_index: int, weight: Optional[torch.Tensor] = None):
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight if weight is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not (target != self.ignore_index).any():
            return logits.sum() * 0.0  # all pixels ignored: zero loss, not NaN
        return F.cross_entropy(logits, target, weight=self.weight, ignore_index=self.ignore_index)


class SoftDice(nn.Module):
    """1 - mean over classes of (2|P.G| + s) / (|P| + |G| + s), soft P from softmax, pooled over the batch."""

    def __init__(self, ignore_index: int, smooth: float = 1.0):
        super().__init__()
        self.ignore_index, self.smooth = ignore_index, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        c = logits.shape[1]
        valid = (target != self.ignore_index).unsqueeze(1)
        prob = logits.float().softmax(1) * valid
        onehot = F.one_hot(target.clamp(0, c - 1) * valid.squeeze(1), c).permute(0, 3, 1, 2) * valid
        dims = (0, 2, 3)
        inter = (prob * onehot).sum(dims)
        denom = prob.sum(dims) + onehot.sum(dims)
        return 1.0 - ((2 * inter + self.smooth) / (denom + self.smooth).clamp_min(1e-7)).mean()


class Weighted(nn.Module):
    """Sum of losses with fixed weights, e.g. CE + Dice."""

    def __init__(self, parts: list[tuple[float, nn.Module]]):
        super().__init__()
        self.weights = [w for w, _ in parts]
        self.parts = nn.ModuleList(m for _, m in parts)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * m(logits, target) for w, m in zip(self.weights, self.parts))


@register_loss("cross_entropy")
def build_cross_entropy(*, ignore_index: int, weight: Optional[torch.Tensor] = None) -> nn.Module:
    return CrossEntropy(ignore_index, weight)


@register_loss("dice")
def build_dice(*, ignore_index: int, dice_smooth: float = 1.0) -> nn.Module:
    return SoftDice(ignore_index, dice_smooth)


@register_loss("ce_dice")
def build_ce_dice(
    *, ignore_index: int, weight: Optional[torch.Tensor] = None, ce_weight: float = 1.0,
    dice_weight: float = 1.0, dice_smooth: float = 1.0,
) -> nn.Module:
    return Weighted([(ce_weight, CrossEntropy(ignore_index, weight)), (dice_weight, SoftDice(ignore_index, dice_smooth))])


def total_loss(
    loss_fn: nn.Module, outputs: Union[torch.Tensor, dict], target: torch.Tensor, aux_weight: Union[float, list[float]]
) -> torch.Tensor:
    """Loss of the main logits plus weighted losses of auxiliary outputs (training-mode dict outputs)."""
    if isinstance(outputs, torch.Tensor):
        return loss_fn(outputs, target)
    aux = outputs.get("aux", [])
    weights = aux_weight if isinstance(aux_weight, list) else [aux_weight] * len(aux)
    if len(weights) != len(aux):
        raise ConfigError(f"loss.aux_weight: the model has {len(aux)} auxiliary outputs, {len(weights)} weights given")
    loss = loss_fn(outputs["out"], target)
    for w, a in zip(weights, aux):
        loss = loss + w * loss_fn(a, target)
    return loss


def class_weights_from_counts(method: str, counts: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    """Class weights from training-set pixel counts.

    counts[c]: pixels of class c; image_pixels[c]: pixels of the images in which c appears.
    'inverse_frequency': total / (C * counts[c]); 'median_frequency' (Eigen & Fergus 2015):
    median(f) / f[c] with f[c] = counts[c] / image_pixels[c]. Absent classes get weight 0.
    """
    counts = counts.astype(np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    if method == "inverse_frequency":
        w[present] = counts.sum() / (present.sum() * counts[present])
    elif method == "median_frequency":
        f = counts[present] / image_pixels[present]
        w[present] = np.median(f) / f
    else:
        raise ConfigError(f"loss.class_weights: unknown method {method!r}; allowed: inverse_frequency, median_frequency")
    return w


def build_loss(
    name: str, *, ignore_index: int, weight: Optional[torch.Tensor], ce_weight: float, dice_weight: float,
    dice_smooth: float,
) -> nn.Module:
    """Create a registered loss; it maps (N, C, H, W) logits and (N, H, W) targets to a scalar."""
    fn = lookup(LOSSES, "loss", name)
    given = dict(ignore_index=ignore_index, weight=weight, ce_weight=ce_weight, dice_weight=dice_weight, dice_smooth=dice_smooth)
    return fn(**{k: v for k, v in given.items() if k in builder_options(fn)})
