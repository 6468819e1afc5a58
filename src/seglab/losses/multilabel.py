"""Losses of overlapping classes (model.output: multilabel): one sigmoid per class, targets packed one bit per
class (data/multilabel.py). The `multilabel` strategy builds the sigmoid form of cross-entropy (binary
cross-entropy), Dice (binary Dice per class) and focal loss from `loss.name`'s terms."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
import torch.nn.functional as F

from ..data.multilabel import unpack_target
from ..registry import register_strategy
from .basic import Weighted, split_ce_dice
from .imbalance import at_least
from .pooling import batch_sum

_FORMS = ("cross_entropy", "dice", "ce_dice", "focal")


def _targets(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K, H, W) logits, (N, H, W) packed targets -> float (N, K, H, W) targets and (N, 1, H, W) valid mask."""
    valid = (target != ignore_index).unsqueeze(1)
    return (unpack_target(target, logits.shape[1]) & valid).to(torch.float32), valid


def _class_weight(weight: Optional[torch.Tensor], k: int, like: torch.Tensor) -> torch.Tensor:
    w = torch.ones(k) if weight is None else weight
    return w.to(device=like.device, dtype=torch.float32).view(1, k, 1, 1)


class BinaryCrossEntropy(nn.Module):
    """Per-class binary cross-entropy (focal when gamma > 0: (1 - p_t)^gamma down-weights easy pixels, Lin et
    al. 2017), summed over classes and labelled pixels with class weights w_k, divided by the sum of the weights."""

    def __init__(self, ignore_index: int, weight: Optional[torch.Tensor] = None, gamma: float = 0.0):
        super().__init__()
        self.ignore_index, self.gamma = ignore_index, gamma
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
        logits = logits.float()
        t, valid = _targets(logits, target, self.ignore_index)
        per = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
        if self.gamma > 0:
            p_t = torch.exp(-per)  # the probability given to the true value
            per = (1.0 - p_t).pow(self.gamma) * per
        w = _class_weight(self.weight, logits.shape[1], logits) * valid
        return batch_sum((per * w).sum()) / batch_sum(w.expand_as(per).sum()).clamp_min(1e-12)


class BinaryDice(nn.Module):
    """1 - mean over classes of (2|P.G| + s) / (|P| + |G| + s), P each class's sigmoid, pooled over the batch
    and the labelled pixels; with class weights, their weighted mean."""

    def __init__(self, ignore_index: int, smooth: float = 1.0, weight: Optional[torch.Tensor] = None):
        super().__init__()
        self.ignore_index, self.smooth = ignore_index, smooth
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
        t, valid = _targets(logits, target, self.ignore_index)
        prob = logits.float().sigmoid() * valid
        dims = (0, 2, 3)
        inter = batch_sum((prob * t).sum(dims))
        denom = batch_sum(prob.sum(dims) + t.sum(dims))
        dice = (2 * inter + self.smooth) / (denom + self.smooth).clamp_min(1e-7)
        w = _class_weight(self.weight, logits.shape[1], logits).flatten()
        return 1.0 - (dice * w).sum() / w.sum().clamp_min(1e-12)


@register_strategy("multilabel", forms=_FORMS)
def build_multilabel(terms: list[tuple[float, str]], *, ignore_index: int, weight: Optional[torch.Tensor],
                     options: dict) -> nn.Module:
    """Overlapping classes: each term's sigmoid form (cross_entropy -> binary cross-entropy per class, dice ->
    binary Dice per class, focal -> sigmoid focal loss, ce_dice -> both), class weights per class."""
    smooth = options.get("dice_smooth", 1.0)
    parts: list[tuple[float, nn.Module]] = []
    for w, name in split_ce_dice(terms, options):
        if name == "cross_entropy":
            parts.append((w, BinaryCrossEntropy(ignore_index, weight)))
        elif name == "dice":
            parts.append((w, BinaryDice(ignore_index, smooth, weight)))
        else:  # focal
            gamma = at_least(float(options.get("focal_gamma", 2.0)), 0.0, "focal_gamma")
            parts.append((w, BinaryCrossEntropy(ignore_index, weight, gamma)))
    return parts[0][1] if len(parts) == 1 and parts[0][0] == 1.0 else Weighted(parts)
