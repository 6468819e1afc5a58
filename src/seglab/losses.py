"""Segmentation losses; every one skips pixels equal to `ignore_index`.

Under torchrun every sum a loss pools over the batch (pixel counts, Dice intersections and unions) goes
through `batch_sum`, which inside `pooled_over_ranks()` adds the other ranks' sums: each rank then computes
the loss of the whole global batch, with gradients through its own pixels, so N processes train what one
process would for every loss, not only for per-pixel means (nnU-Net and MONAI do the same for Dice).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Union

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from .errors import ConfigError
from .registry import LOSSES, builder_options, lookup, register_loss


_pooled = False  # set by pooled_over_ranks() around a training step under torchrun


@contextlib.contextmanager
def pooled_over_ranks(enabled: bool = True) -> Iterator[None]:
    """Losses computed inside pool their batch sums over all torchrun ranks (see `batch_sum`). Every rank
    must compute the same losses inside it (each sum is a collective operation)."""
    global _pooled
    before, _pooled = _pooled, enabled and torch.distributed.is_available() and torch.distributed.is_initialized()
    try:
        yield
    finally:
        _pooled = before


def batch_sum(x: torch.Tensor) -> torch.Tensor:
    """A per-batch sum (any shape, already summed over this rank's samples) -> the same sum over the global
    batch when pooled over ranks; its gradient flows to this rank's part only (the others' parts are
    constants here and get their gradients on their own ranks)."""
    if not _pooled:
        return x
    total = x.detach().clone()
    torch.distributed.all_reduce(total)
    return x + (total - x.detach())


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
        inter = batch_sum((prob * onehot).sum(dims))
        denom = batch_sum(prob.sum(dims) + onehot.sum(dims))
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
        w = valid.float()
        if self.weight is not None:
            w = w * self.weight[torch.where(valid, target, 0).clamp(0, len(self.weight) - 1)]
        return -batch_sum((w * logq).sum()) / batch_sum(w.sum()).clamp_min(1e-12)


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
        inter = batch_sum(((prob * onehot).sum((2, 3)) * use).sum(0))
        denom = batch_sum(((prob.sum((2, 3)) + onehot.sum((2, 3))) * use).sum(0))
        dice = (2 * inter + self.smooth) / (denom + self.smooth).clamp_min(1e-7)
        present = batch_sum(use.sum(0)) > 0
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
            return logits.sum() * 0.0  # every sample annotates every class: nothing to exclude (on every rank)
        logits = logits.float()
        valid = target != self.ignore_index
        excl = (valid & (target > 0)).float()  # (N, H, W): labelled foreground
        unannotated = ~labelled.to(logits.device, torch.bool)
        unannotated[:, 0] = False
        lse = torch.logsumexp(logits, 1)
        if self.kind == "ce":
            # sum over classes c not annotated by a sample of -log(1 - p_c) on its labelled foreground
            total = logits.new_zeros(())
            for c in range(1, k):
                rows = unannotated[:, c]
                others = torch.cat([logits[rows, :c], logits[rows, c + 1:]], 1)
                log_not_c = torch.logsumexp(others, 1) - lse[rows]  # log(1 - p_c), stable
                total = total - (excl[rows] * log_not_c).sum()
            # Per labelled pixel, like the cross-entropy: a mean over the excluded pixels alone would give a
            # small labelled object the weight of whole images and tilt the model towards foreground.
            return batch_sum(total) / batch_sum(valid.sum().to(total.dtype)).clamp_min(1)
        inter, denom, rows_of = (logits.new_zeros(k - 1) for _ in range(3))
        parts_i, parts_d, parts_r = [], [], []
        for c in range(1, k):
            rows = unannotated[:, c]
            e, p = excl[rows], (logits[rows, c] - lse[rows]).exp()
            parts_i.append((e * p).sum())
            parts_d.append(e.sum() + p.sum())
            parts_r.append(rows.sum().to(logits.dtype))
        if k > 1:
            inter, denom, rows_of = torch.stack(parts_i), torch.stack(parts_d), torch.stack(parts_r)
        inter, denom, rows_of = batch_sum(inter), batch_sum(denom), batch_sum(rows_of)
        used = rows_of > 0  # classes that some sample of the (global) batch does not annotate
        terms = 2 * inter / (denom + self.smooth)
        return (terms * used).sum() / used.sum().clamp_min(1)


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
        logits = logits.float()
        y, valid = _pair_targets(target, pairs, self.ignore_index)
        w = valid.float()
        loss = logits.new_zeros(())
        if self.kind in ("bce", "bce_dice"):
            bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
            loss = loss + self.ce_weight * batch_sum((bce * w).sum()) / batch_sum(w.sum()).clamp_min(1e-12)
        if self.kind in ("dice", "bce_dice"):
            # the mean over the global batch's (sample, class) pairs of each pair's Dice loss
            p = logits.sigmoid() * w
            inter, denom = (p * y * w).sum((1, 2)), (p + y * w).sum((1, 2))
            per_pair = 1.0 - (2 * inter + self.smooth) / (denom + self.smooth)
            count = batch_sum(logits.new_tensor(float(len(per_pair))))
            dice = batch_sum(per_pair.sum()) / count.clamp_min(1)
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
