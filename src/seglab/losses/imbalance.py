"""Losses for imbalanced classes: focal, Tversky, focal Tversky, Lovász-softmax and OHEM cross-entropy.

Each skips pixels equal to `ignore_index`, takes class weights (K,) where it can (`loss.class_weights`), and
pools its batch sums over torchrun ranks (`batch_sum`), so N processes train what one process would.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..registry import register_loss
from .pooling import batch_kth_smallest, batch_sum


def _targets(target: torch.Tensor, ignore_index: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid (N, H, W) bool, target with ignored pixels set to class 0, in 0..k-1)."""
    valid = target != ignore_index
    return valid, torch.where(valid, target, 0).clamp(0, k - 1)


def _pixel_weights(weight: Optional[torch.Tensor], t: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """w[t] on labelled pixels, 0 on ignored ones (1 on labelled pixels without class weights)."""
    if weight is None:
        return valid.float()
    return weight.float()[t] * valid


def _class_mean(values: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    """The mean of per-class values (K,), weighted by the class weights when given."""
    if weight is None:
        return values.mean()
    w = weight.to(values)
    return (values * w).sum() / w.sum().clamp_min(1e-12)


def at_least(value: float, low: float, key: str) -> float:
    """`value`, or a one-line error naming loss.`key` when it is below `low`."""
    if not value >= low:
        raise ConfigError(f"loss.{key}: must be >= {low:g} (got {value})")
    return value


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., ICCV 2017) over (N, K, H, W) logits: the sum over labelled pixels of
    w[t] (1 - p_t)^gamma (-log p_t), divided by the sum of w[t]; gamma 0 is the (weighted) cross-entropy."""

    def __init__(self, ignore_index: int, weight: Optional[torch.Tensor] = None, gamma: float = 2.0):
        super().__init__()
        self.ignore_index, self.gamma = ignore_index, gamma
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
        valid, t = _targets(target, self.ignore_index, logits.shape[1])
        log_pt = F.log_softmax(logits.float(), 1).gather(1, t[:, None])[:, 0]
        # clamped so that (1 - p_t)^gamma keeps a finite gradient at p_t = 1 for gamma < 1
        modulation = (1 - log_pt.exp()).clamp_min(1e-12).pow(self.gamma) if self.gamma else 1.0
        w = _pixel_weights(self.weight, t, valid)
        return batch_sum((w * modulation * -log_pt).sum()) / batch_sum(w.sum()).clamp_min(1e-12)


class TverskyLoss(nn.Module):
    """Tversky loss (Salehi et al., 2017) with soft counts pooled over the batch: per class
    TI = (TP + s) / (TP + alpha FP + beta FN + s); the loss is the (class-weighted) mean of 1 - TI, or of
    (1 - TI)^gamma for the focal Tversky loss (Abraham & Khan, 2019). alpha = beta = 0.5 is soft Dice with
    smoothing 2s."""

    def __init__(self, ignore_index: int, weight: Optional[torch.Tensor] = None, alpha: float = 0.3, beta: float = 0.7,
                 gamma: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.ignore_index, self.alpha, self.beta, self.gamma, self.smooth = ignore_index, alpha, beta, gamma, smooth
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
        k = logits.shape[1]
        valid, t = _targets(target, self.ignore_index, k)
        prob = logits.float().softmax(1) * valid[:, None]
        onehot = F.one_hot(t, k).permute(0, 3, 1, 2) * valid[:, None]
        dims = (0, 2, 3)
        tp = batch_sum((prob * onehot).sum(dims))
        fp = batch_sum(prob.sum(dims)) - tp
        fn = batch_sum(onehot.sum(dims).float()) - tp
        ti = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth).clamp_min(1e-7)
        per_class = 1 - ti
        if self.gamma != 1.0:
            per_class = per_class.clamp_min(1e-7).pow(self.gamma)
        return _class_mean(per_class, self.weight)


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """(C, P) 0/1 ground truth sorted by decreasing error -> the gradient of the Lovász extension of the
    Jaccard loss per row (Berman et al., CVPR 2018, Alg. 1)."""
    gts = gt_sorted.sum(1, keepdim=True)
    intersection = gts - gt_sorted.cumsum(1)
    union = gts + (1 - gt_sorted).cumsum(1)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], 1)


class LovaszSoftmax(nn.Module):
    """Lovász-softmax loss (Berman et al., CVPR 2018), per image over the classes present in its ground
    truth ((class-weighted) mean), then the mean over the images that have a labelled pixel."""

    def __init__(self, ignore_index: int, weight: Optional[torch.Tensor] = None):
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
        k = logits.shape[1]
        prob = logits.float().softmax(1)
        total = prob.new_zeros(())
        images = prob.new_zeros(())
        for p, y in zip(prob, target):
            keep = y != self.ignore_index
            if not bool(keep.any()):
                continue
            p, y = p[:, keep], y[keep]  # (K, P), (P,)
            fg = F.one_hot(y.clamp(0, k - 1), k).T.float()
            present = fg.sum(1) > 0
            errors = (fg - p).abs()[present]
            errors, order = errors.sort(1, descending=True)
            per_class = (errors * lovasz_grad(fg[present].gather(1, order))).sum(1)
            total = total + _class_mean(per_class, None if self.weight is None else self.weight[present])
            images = images + 1
        return batch_sum(total) / batch_sum(images).clamp_min(1)


class OhemCrossEntropy(nn.Module):
    """Cross-entropy on hard pixels only (online hard example mining, Shrivastava et al. 2016; as in
    MMSegmentation's OHEMPixelSampler): labelled pixels whose target probability is below `threshold`,
    and at least the `min_kept` hardest ones; (class-weighted) mean over the kept pixels."""

    def __init__(self, ignore_index: int, weight: Optional[torch.Tensor] = None, threshold: float = 0.7,
                 min_kept: int = 100_000):
        super().__init__()
        self.ignore_index, self.threshold, self.min_kept = ignore_index, threshold, min_kept
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
        valid, t = _targets(target, self.ignore_index, logits.shape[1])
        log_pt = F.log_softmax(logits.float(), 1).gather(1, t[:, None])[:, 0]
        pt = log_pt.detach().exp()
        hard = valid & (pt < self.threshold)
        n_valid = int(batch_sum(valid.sum().float()))
        k = min(self.min_kept, n_valid)
        if k > 0:  # every rank takes the same branch: n_valid is the global count
            kth = batch_kth_smallest(pt[valid], k)
            hard = hard | (valid & (pt <= kth))
        w = _pixel_weights(self.weight, t, hard)
        return batch_sum((w * -log_pt).sum()) / batch_sum(w.sum()).clamp_min(1e-12)


@register_loss("focal")
def build_focal(*, ignore_index: int, weight: Optional[torch.Tensor] = None, focal_gamma: float = 2.0) -> nn.Module:
    """Focal loss (Lin et al. 2017); gamma 0 is cross-entropy."""
    return FocalLoss(ignore_index, weight, at_least(focal_gamma, 0.0, "focal_gamma"))


@register_loss("tversky")
def build_tversky(*, ignore_index: int, weight: Optional[torch.Tensor] = None, tversky_alpha: float = 0.3,
                  tversky_beta: float = 0.7, dice_smooth: float = 1.0) -> nn.Module:
    """Tversky loss (Salehi et al. 2017): false positives weighted alpha, false negatives beta."""
    return TverskyLoss(ignore_index, weight, at_least(tversky_alpha, 0.0, "tversky_alpha"),
                       at_least(tversky_beta, 0.0, "tversky_beta"), 1.0, dice_smooth)


@register_loss("focal_tversky")
def build_focal_tversky(*, ignore_index: int, weight: Optional[torch.Tensor] = None, tversky_alpha: float = 0.3,
                        tversky_beta: float = 0.7, focal_tversky_gamma: float = 0.75, dice_smooth: float = 1.0) -> nn.Module:
    """Mean over classes of (1 - Tversky index) ** gamma (Abraham & Khan 2019)."""
    return TverskyLoss(ignore_index, weight, at_least(tversky_alpha, 0.0, "tversky_alpha"),
                       at_least(tversky_beta, 0.0, "tversky_beta"),
                       at_least(focal_tversky_gamma, 0.0, "focal_tversky_gamma"), dice_smooth)


@register_loss("lovasz")
def build_lovasz(*, ignore_index: int, weight: Optional[torch.Tensor] = None) -> nn.Module:
    """Lovasz-softmax (Berman et al. 2018), per image over its present classes."""
    return LovaszSoftmax(ignore_index, weight)


@register_loss("ohem")
def build_ohem(*, ignore_index: int, weight: Optional[torch.Tensor] = None, ohem_threshold: float = 0.7,
               ohem_min_kept: int = 100_000) -> nn.Module:
    """Cross-entropy over the hard pixels (target probability below the threshold, at least min_kept)."""
    if not 0.0 < ohem_threshold <= 1.0:
        raise ConfigError(f"loss.ohem_threshold: a probability in (0, 1] (got {ohem_threshold})")
    return OhemCrossEntropy(ignore_index, weight, ohem_threshold, int(at_least(ohem_min_kept, 1, "ohem_min_kept")))
