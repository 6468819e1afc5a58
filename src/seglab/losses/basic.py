"""Cross-entropy, soft Dice and their weighted sum; every loss skips pixels equal to `ignore_index`."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..registry import LOSSES, builder_options, lookup, register_loss, register_strategy
from .pooling import batch_sum


class CrossEntropy(nn.Module):
    """Pixel-wise (optionally class-weighted) cross-entropy over (N, C, H, W) logits, (N, H, W) targets:
    sum of w[t] * -log p_t over labelled pixels / sum of w[t] (PyTorch's weighted mean)."""

    def __init__(self, ignore_index: int, weight: Optional[torch.Tensor] = None):
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight if weight is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
        per_pixel = F.cross_entropy(logits, target, weight=self.weight, ignore_index=self.ignore_index, reduction="none")
        valid = target != self.ignore_index
        if self.weight is not None:
            w = self.weight.to(per_pixel.dtype)[torch.where(valid, target, 0).clamp(0, len(self.weight) - 1)] * valid
        else:
            w = valid.to(per_pixel.dtype)
        # all pixels ignored: zero loss, not NaN
        return batch_sum(per_pixel.sum()) / batch_sum(w.sum()).clamp_min(1e-12)


class SoftDice(nn.Module):
    """1 - mean over classes of (2|P.G| + s) / (|P| + |G| + s), soft P from softmax, pooled over the batch;
    with class weights w, the w-weighted mean over classes."""

    def __init__(self, ignore_index: int, smooth: float = 1.0, weight: Optional[torch.Tensor] = None):
        super().__init__()
        self.ignore_index, self.smooth = ignore_index, smooth
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
        c = logits.shape[1]
        valid = (target != self.ignore_index).unsqueeze(1)
        prob = logits.float().softmax(1) * valid
        onehot = F.one_hot(target.clamp(0, c - 1) * valid.squeeze(1), c).permute(0, 3, 1, 2) * valid
        dims = (0, 2, 3)
        inter = batch_sum((prob * onehot).sum(dims))
        denom = batch_sum(prob.sum(dims) + onehot.sum(dims))
        dice = (2 * inter + self.smooth) / (denom + self.smooth).clamp_min(1e-7)
        if self.weight is None:
            return 1.0 - dice.mean()
        w = self.weight.to(dice)
        return 1.0 - (dice * w).sum() / w.sum().clamp_min(1e-12)


class Weighted(nn.Module):
    """Sum of losses with fixed weights, e.g. CE + Dice."""

    def __init__(self, parts: list[tuple[float, nn.Module]]):
        super().__init__()
        self.weights = [w for w, _ in parts]
        self.parts = nn.ModuleList(m for _, m in parts)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None,
                **extra) -> torch.Tensor:
        return sum(w * m(logits, target, labelled, **extra) for w, m in zip(self.weights, self.parts))


@register_loss("cross_entropy")
def build_cross_entropy(*, ignore_index: int, weight: Optional[torch.Tensor] = None) -> nn.Module:
    """Pixel-wise cross-entropy that skips `ignore_index`."""
    return CrossEntropy(ignore_index, weight)


@register_loss("dice")
def build_dice(*, ignore_index: int, weight: Optional[torch.Tensor] = None, dice_smooth: float = 1.0) -> nn.Module:
    """Soft Dice over the batch; `weight` weights the mean over classes."""
    return SoftDice(ignore_index, dice_smooth, weight)


@register_loss("ce_dice")
def build_ce_dice(
    *, ignore_index: int, weight: Optional[torch.Tensor] = None, ce_weight: float = 1.0,
    dice_weight: float = 1.0, dice_smooth: float = 1.0,
) -> nn.Module:
    """`ce_weight` x cross-entropy + `dice_weight` x Dice."""
    return Weighted([(ce_weight, CrossEntropy(ignore_index, weight)),
                     (dice_weight, SoftDice(ignore_index, dice_smooth, weight))])


def split_ce_dice(terms: list[tuple[float, str]], options: dict) -> list[tuple[float, str]]:
    """ce_dice as its cross-entropy and Dice terms (weights ce_weight, dice_weight); other terms as they are:
    for strategies that build their own form of each."""
    out: list[tuple[float, str]] = []
    for w, name in terms:
        if name == "ce_dice":
            out += [(w * options.get("ce_weight", 1.0), "cross_entropy"), (w * options.get("dice_weight", 1.0), "dice")]
        else:
            out.append((w, name))
    return out


def build_term(name: str, *, ignore_index: int, weight: Optional[torch.Tensor], options: dict) -> nn.Module:
    """The registered loss `name`, given those of `options` (and the class weights) its builder takes."""
    fn = lookup(LOSSES, "loss", name)
    if weight is not None and "weight" not in builder_options(fn):
        raise ConfigError(f"loss.class_weights: loss '{name}' takes no class weights; remove loss.class_weights")
    given = dict(options, ignore_index=ignore_index, weight=weight)
    return fn(**{k: v for k, v in given.items() if k in builder_options(fn)})


@register_strategy("naive")
def build_naive(terms: list[tuple[float, str]], *, ignore_index: int, weight: Optional[torch.Tensor],
                options: dict) -> nn.Module:
    """The weighted terms as they are: a sample's 0 pixels are background, whatever it annotates."""
    parts = [(w, build_term(name, ignore_index=ignore_index, weight=weight, options=options)) for w, name in terms]
    return parts[0][1] if len(parts) == 1 and parts[0][0] == 1.0 else Weighted(parts)
