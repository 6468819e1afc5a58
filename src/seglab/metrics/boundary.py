"""Semantic Boundary IoU (Cheng et al., CVPR 2021), pooled over a dataset.

For each class c and image, the boundary band of a binary mask M is M minus its erosion by d pixels,
d = max(1, round(ratio x image diagonal)); erosion is a 3x3 erosion repeated d times with pixels
outside the image counted as background (so the image border is boundary). Intersections and
unions of the ground-truth and predicted bands are summed over all images; a class whose union is
empty everywhere (absent from ground truth and prediction) is NaN. Ignored pixels are left out of
both counts; the bands themselves are computed on the full masks.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .confusion import nanmean


def boundary_dilation(height: int, width: int, ratio: float = 0.02) -> int:
    """d = max(1, round(ratio * diagonal)), as in the reference implementation."""
    return max(1, int(round(ratio * math.sqrt(height**2 + width**2))))


def erode(masks: torch.Tensor, d: int) -> torch.Tensor:
    """Binary erosion of (K, H, W) masks by a (2d+1)^2 square (= 3x3 applied d times), zero border."""
    x = masks.float().unsqueeze(1)
    inv = F.pad(1.0 - x, (d, d, d, d), value=1.0)
    k = 2 * d + 1
    # A square structuring element is separable: a row pass then a column pass.
    grown = F.max_pool2d(F.max_pool2d(inv, (1, k), stride=1), (k, 1), stride=1)
    return (grown < 0.5).squeeze(1)


def boundary_band(masks: torch.Tensor, d: int) -> torch.Tensor:
    """(K, H, W) bool -> pixels of each mask within d of its edge (or of the image border)."""
    masks = masks.bool()
    return masks & ~erode(masks, d)


class BoundaryIoU:
    """Accumulates per-class boundary intersections and unions over (H, W) label maps."""

    def __init__(self, num_classes: int, ignore_index: int = 255, dilation_ratio: float = 0.02) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.dilation_ratio = dilation_ratio
        self.intersection = torch.zeros(num_classes, dtype=torch.int64)
        self.union = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: (H, W) or (N, H, W) integer label maps at the image's full resolution."""
        if pred.dim() == 2:
            pred, target = pred[None], target[None]
        for p, t in zip(pred, target):
            self._update_one(p, t)

    def _update_one(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        h, w = target.shape
        d = boundary_dilation(h, w, self.dilation_ratio)
        classes = torch.arange(self.num_classes, device=target.device).view(-1, 1, 1)
        present = torch.zeros(self.num_classes, dtype=torch.bool, device=target.device)
        present[target[target != self.ignore_index].unique().long()] = True
        present[pred.unique().long().clamp(max=self.num_classes - 1)] = True
        idx = present.nonzero().flatten()
        if idx.numel() == 0:
            return
        gt_band = boundary_band(target.unsqueeze(0) == classes[idx], d)
        pr_band = boundary_band(pred.unsqueeze(0) == classes[idx], d)
        valid = (target != self.ignore_index).unsqueeze(0)
        gt_band, pr_band = gt_band & valid, pr_band & valid
        self.intersection[idx.cpu()] += (gt_band & pr_band).sum((1, 2)).cpu()
        self.union[idx.cpu()] += (gt_band | pr_band).sum((1, 2)).cpu()

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
            both = torch.stack([self.intersection, self.union]).to(dev)
            dist.all_reduce(both)
            self.intersection, self.union = both[0].cpu(), both[1].cpu()

    def per_class(self) -> torch.Tensor:
        out = torch.full((self.num_classes,), float("nan"), dtype=torch.float64)
        ok = self.union > 0
        out[ok] = self.intersection[ok].double() / self.union[ok].double()
        return out

    def mean(self) -> float:
        return nanmean(self.per_class())
