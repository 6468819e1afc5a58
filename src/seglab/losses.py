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

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not (target != self.ignore_index).any():
            return logits.sum() * 0.0  # all pixels ignored: zero loss, not NaN
        return F.cross_entropy(logits, target, weight=self.weight, ignore_index=self.ignore_index)


class SoftDice(nn.Module):
    """1 - mean over classes of (2|P.G| + s) / (|P| + |G| + s), soft P from softmax, pooled over the batch."""

    def __init__(self, ignore_index: int, smooth: float = 1.0):
        super().__init__()
        self.ignore_index, self.smooth = ignore_index, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
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

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None,
                **extra) -> torch.Tensor:
        return sum(w * m(logits, target, labelled, **extra) for w, m in zip(self.weights, self.parts))


# ---- partial labels: a sample annotates only some classes; its 0 pixels are "background or unannotated" ----

def _merged_set(labelled: Optional[torch.Tensor], n: int, k: int, device) -> torch.Tensor:
    """(N, K) bool: the classes a 0 pixel may be: background plus every class the sample does not annotate."""
    if labelled is None:
        merged = torch.zeros(n, k, dtype=torch.bool, device=device)
    else:
        merged = ~labelled.to(device=device, dtype=torch.bool)
    merged[:, 0] = True
    return merged


def marginal_log_prob(logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor],
                      ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """log q(target) per pixel, where q merges background with the unannotated classes.

    logits (N, K, H, W), target (N, H, W), labelled (N, K) bool or None (= all annotated).
    log q(0) = logsumexp(logits of merged classes) - logsumexp(all logits): the log of a sum of
    probabilities, never of a sum of logits. Returns (log q (N, H, W), valid mask (N, H, W)).
    """
    n, k = logits.shape[:2]
    logits = logits.float()
    valid = target != ignore_index
    t = torch.where(valid, target, 0).clamp(0, k - 1)
    merged = _merged_set(labelled, n, k, logits.device)[:, :, None, None]
    lse = torch.logsumexp(logits, 1)
    bg = torch.logsumexp(logits.masked_fill(~merged, float("-inf")), 1)
    own = logits.gather(1, t[:, None]).squeeze(1)
    return torch.where(t == 0, bg, own) - lse, valid


class MarginalCrossEntropy(CrossEntropy):
    """Marginal cross-entropy (Shi et al., Medical Image Analysis 2021); plain CE when all classes are annotated."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
        logq, valid = marginal_log_prob(logits, target, labelled, self.ignore_index)
        if not valid.any():
            return logits.sum() * 0.0
        w = valid.float()
        if self.weight is not None:
            w = w * self.weight[torch.where(valid, target, 0).clamp(0, len(self.weight) - 1)]
        return -(w * logq).sum() / w.sum().clamp_min(1e-12)


class MarginalDice(nn.Module):
    """Soft Dice on marginal probabilities: background's is the summed probability of background and of
    the sample's unannotated classes; a class enters only through samples that annotate it."""

    def __init__(self, ignore_index: int, smooth: float = 1.0):
        super().__init__()
        self.ignore_index, self.smooth = ignore_index, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
        n, k = logits.shape[:2]
        logits = logits.float()
        valid = (target != self.ignore_index)
        merged = _merged_set(labelled, n, k, logits.device)
        lse = torch.logsumexp(logits, 1, keepdim=True)
        prob = (logits - lse).exp()
        bg = (torch.logsumexp(logits.masked_fill(~merged[:, :, None, None], float("-inf")), 1, keepdim=True) - lse).exp()
        prob = torch.cat([bg, prob[:, 1:]], 1) * valid[:, None]
        onehot = F.one_hot(torch.where(valid, target, 0).clamp(0, k - 1), k).permute(0, 3, 1, 2) * valid[:, None]
        use = (~merged).float()
        use[:, 0] = 1.0  # (N, K): which samples speak for each class
        inter = ((prob * onehot).sum((2, 3)) * use).sum(0)
        denom = ((prob.sum((2, 3)) + onehot.sum((2, 3))) * use).sum(0)
        dice = (2 * inter + self.smooth) / (denom + self.smooth).clamp_min(1e-7)
        present = use.sum(0) > 0
        return 1.0 - dice[present].mean()


class ExclusionLoss(nn.Module):
    """Exclusion loss (Shi et al. 2021): a class the sample does not annotate cannot be on the pixels that
    the sample labels as another foreground class, so its probability there is pushed to 0.

    kind 'ce': sum over those pixels and excluded classes of -log(1 - p_c), divided by the number of
    labelled (not ignored) pixels of the batch, the denominator of the cross-entropy it is added to;
    'dice': mean over classes of 2 sum(e p_c) / (sum(e) + sum(p_c) + s), e the exclusion mask.
    """

    def __init__(self, ignore_index: int, kind: str = "ce", smooth: float = 1.0):
        super().__init__()
        self.ignore_index, self.kind, self.smooth = ignore_index, kind, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
        n, k = logits.shape[:2]
        if labelled is None:
            return logits.sum() * 0.0
        logits = logits.float()
        valid = target != self.ignore_index
        excl = (valid & (target > 0)).float()  # (N, H, W): labelled foreground
        unannotated = ~labelled.to(logits.device, torch.bool)
        unannotated[:, 0] = False
        lse = torch.logsumexp(logits, 1)
        total = logits.new_zeros(())
        terms = logits.new_zeros(())
        for c in range(1, k):
            rows = unannotated[:, c]
            if not rows.any():
                continue
            e = excl[rows]
            if self.kind == "ce":
                others = torch.cat([logits[rows, :c], logits[rows, c + 1:]], 1)
                log_not_c = torch.logsumexp(others, 1) - lse[rows]  # log(1 - p_c), stable
                total = total - (e * log_not_c).sum()
            else:
                p = (logits[rows, c] - lse[rows]).exp()
                total = total + 2 * (e * p).sum() / (e.sum() + p.sum() + self.smooth)
                terms = terms + 1
        if self.kind == "ce":
            # Per labelled pixel, like the cross-entropy: a mean over the excluded pixels alone would give a
            # small labelled object the weight of whole images and tilt the model towards foreground.
            return total / valid.sum().clamp_min(1)
        return total / terms.clamp_min(1.0)


# ---- conditional model: one binary output per (image, class) ----

def _pair_targets(target: torch.Tensor, pairs: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = target[pairs[:, 0]]
    valid = t != ignore_index
    return (t == pairs[:, 1, None, None]).float(), valid


def _pairs_of(labelled: Optional[torch.Tensor], n: int, k: int, device) -> torch.Tensor:
    lab = torch.ones(n, k, dtype=torch.bool, device=device) if labelled is None else labelled.to(device, torch.bool)
    pairs = lab[:, 1:].nonzero()
    pairs[:, 1] += 1
    return pairs


class ConditionalLoss(nn.Module):
    """Binary loss of a class-conditioned model, on the classes each sample annotates only.

    Takes the training output (P, 1, H, W) with `pairs` (P, 2) = (sample, class), or the combined
    (N, K, H, W) scores of eval mode (channel c >= 1 = logit of class c's foreground).
    kind: 'bce', 'dice' or 'bce_dice' (weights ce_weight, dice_weight).
    """

    def __init__(self, ignore_index: int, kind: str, ce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.ignore_index, self.kind, self.smooth = ignore_index, kind, smooth
        self.ce_weight, self.dice_weight = ce_weight, dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None,
                pairs: Optional[torch.Tensor] = None) -> torch.Tensor:
        if pairs is None:  # combined scores: pick each annotated class's channel
            pairs = _pairs_of(labelled, logits.shape[0], logits.shape[1], logits.device)
            logits = logits[pairs[:, 0], pairs[:, 1]]
        else:
            logits = logits[:, 0]
        if pairs.numel() == 0:
            return logits.sum() * 0.0
        logits = logits.float()
        y, valid = _pair_targets(target, pairs, self.ignore_index)
        if not valid.any():
            return logits.sum() * 0.0
        w = valid.float()
        loss = logits.new_zeros(())
        if self.kind in ("bce", "bce_dice"):
            bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
            loss = loss + self.ce_weight * (bce * w).sum() / w.sum()
        if self.kind in ("dice", "bce_dice"):
            p = logits.sigmoid() * w
            inter, denom = (p * y * w).sum((1, 2)), (p + y * w).sum((1, 2))
            dice = 1.0 - ((2 * inter + self.smooth) / (denom + self.smooth)).mean()
            loss = loss + (self.dice_weight if self.kind == "bce_dice" else 1.0) * dice
        return loss


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
    loss_fn: nn.Module, outputs: Union[torch.Tensor, dict], target: torch.Tensor, aux_weight: Union[float, list[float]],
    labelled: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Loss of the main logits plus weighted losses of auxiliary outputs (training-mode dict outputs).

    labelled (N, K) bool: the classes each sample annotates (None: all); a conditional model's
    training output also carries its (sample, class) `pairs`.
    """
    args = (labelled,) if labelled is not None else ()  # plain (logits, target) losses work too
    if isinstance(outputs, torch.Tensor):
        return loss_fn(outputs, target, *args)
    extra = {"pairs": outputs["pairs"]} if "pairs" in outputs else {}
    aux = outputs.get("aux", [])
    weights = aux_weight if isinstance(aux_weight, list) else [aux_weight] * len(aux)
    if len(weights) != len(aux):
        raise ConfigError(f"loss.aux_weight: the model has {len(aux)} auxiliary outputs, {len(weights)} weights given")
    loss = loss_fn(outputs["out"], target, *args, **extra)
    for w, a in zip(weights, aux):
        loss = loss + w * loss_fn(a, target, *args, **extra)
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
    dice_smooth: float, strategy: str = "naive", exclusion_weight: float = 1.0,
) -> nn.Module:
    """Create a loss: (N, K, H, W) logits, (N, H, W) targets and optional (N, K) annotated classes -> scalar.

    `strategy` picks the partial-label form of the named loss (see LossConfig.strategy).
    """
    fn = lookup(LOSSES, "loss", name)
    if strategy == "conditional":
        if weight is not None:
            raise ConfigError("loss.class_weights: not used by the conditional strategy (one binary output per class)")
        kind = {"cross_entropy": "bce", "dice": "dice", "ce_dice": "bce_dice"}[name]
        return ConditionalLoss(ignore_index, kind, ce_weight, dice_weight, dice_smooth)
    if strategy in ("marginal", "marginal_exclusion"):
        parts: list[tuple[float, nn.Module]] = []
        if name in ("cross_entropy", "ce_dice"):
            w = ce_weight if name == "ce_dice" else 1.0
            parts.append((w, MarginalCrossEntropy(ignore_index, weight)))
            if strategy == "marginal_exclusion":
                parts.append((w * exclusion_weight, ExclusionLoss(ignore_index, "ce")))
        if name in ("dice", "ce_dice"):
            w = dice_weight if name == "ce_dice" else 1.0
            parts.append((w, MarginalDice(ignore_index, dice_smooth)))
            if strategy == "marginal_exclusion":
                parts.append((w * exclusion_weight, ExclusionLoss(ignore_index, "dice", dice_smooth)))
        return Weighted(parts)
    given = dict(ignore_index=ignore_index, weight=weight, ce_weight=ce_weight, dice_weight=dice_weight, dice_smooth=dice_smooth)
    return fn(**{k: v for k, v in given.items() if k in builder_options(fn)})
