"""Partial labels: a sample annotates only some classes; its 0 pixels are "background or unannotated".
Marginal cross-entropy and Dice, the exclusion loss (Shi et al., Medical Image Analysis 2021) and the binary
loss of a class-conditioned model (Dmitriev & Kaufman, CVPR 2019)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..registry import register_strategy
from .basic import CrossEntropy, Weighted, split_ce_dice
from .pooling import batch_sum


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
    the sample's unannotated classes; a class enters only through samples that annotate it. Class
    weights, when given, weight the mean over classes."""

    def __init__(self, ignore_index: int, smooth: float = 1.0, weight: Optional[torch.Tensor] = None):
        super().__init__()
        self.ignore_index, self.smooth = ignore_index, smooth
        self.register_buffer("weight", weight, persistent=False)

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
        if self.weight is None:
            return 1.0 - dice[present].mean()
        w = self.weight.to(dice)[present]
        return 1.0 - (dice[present] * w).sum() / w.sum().clamp_min(1e-12)


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
            loss = loss + self.dice_weight * dice
        return loss


# ---- the strategies: one loss from the weighted terms of loss.name ----

_FORMS = ("cross_entropy", "dice", "ce_dice")  # the losses with a partial-label form


def _marginal(strategy: str, terms: list[tuple[float, str]], ignore_index: int, weight: Optional[torch.Tensor],
              options: dict, exclusion_weight: Optional[float]) -> nn.Module:
    smooth = options.get("dice_smooth", 1.0)
    parts: list[tuple[float, nn.Module]] = []
    for w, name in split_ce_dice(terms, options):
        if name == "cross_entropy":
            parts.append((w, MarginalCrossEntropy(ignore_index, weight)))
            if exclusion_weight is not None:
                parts.append((w * exclusion_weight, ExclusionLoss(ignore_index, "ce")))
        else:
            parts.append((w, MarginalDice(ignore_index, smooth, weight)))
            if exclusion_weight is not None:
                parts.append((w * exclusion_weight, ExclusionLoss(ignore_index, "dice", smooth)))
    return Weighted(parts)


@register_strategy("marginal", forms=_FORMS)
def build_marginal(terms: list[tuple[float, str]], *, ignore_index: int, weight: Optional[torch.Tensor],
                   options: dict) -> nn.Module:
    """A sample's 0 pixels are background or any class it does not annotate (Shi et al. 2021)."""
    return _marginal("marginal", terms, ignore_index, weight, options, None)


@register_strategy("marginal_exclusion", forms=_FORMS)
def build_marginal_exclusion(terms: list[tuple[float, str]], *, ignore_index: int, weight: Optional[torch.Tensor],
                             options: dict, exclusion_weight: float = 1.0) -> nn.Module:
    """Marginal, plus the exclusion loss of each term weighted by `exclusion_weight`."""
    return _marginal("marginal_exclusion", terms, ignore_index, weight, options, exclusion_weight)


@register_strategy("conditional", forms=_FORMS)
def build_conditional(terms: list[tuple[float, str]], *, ignore_index: int, weight: Optional[torch.Tensor],
                      options: dict) -> nn.Module:
    """Binary cross-entropy and / or Dice of a class-conditioned model, per annotated (sample, class)."""
    if weight is not None:
        raise ConfigError("loss.class_weights: not used by the conditional strategy (one binary output per class)")
    ce = dice = 0.0
    names = set()
    for w, name in split_ce_dice(terms, options):
        names.add(name)
        ce, dice = (ce + w, dice) if name == "cross_entropy" else (ce, dice + w)
    kind = "bce_dice" if len(names) == 2 else ("bce" if "cross_entropy" in names else "dice")
    return ConditionalLoss(ignore_index, kind, ce, dice, options.get("dice_smooth", 1.0))
