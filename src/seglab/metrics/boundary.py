"""Semantic Boundary IoU (Cheng et al., CVPR 2021), pooled over a dataset.

For each class c and image, the boundary band of a binary mask M is M minus its erosion by d pixels,
d = max(1, round(ratio x image diagonal)); erosion is a 3x3 erosion repeated d times with pixels
outside the image counted as background (so the image border is boundary). Intersections and
unions of the ground-truth and predicted bands are summed over all images; a class whose union is
empty everywhere (absent from ground truth and prediction) is NaN. Ignored pixels are left out of
both counts; the bands themselves are computed on the full masks.

Two equal implementations of the band: OpenCV's erosion for CPU tensors (30-60x faster than max-pooling
on a CPU, measured in docs/benchmarks.md) and separable max-pooling for GPU tensors, where the label maps
already are. The tests check that both give identical counts.
"""
from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..collectives import all_reduce_tensor
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


def band_counts_torch(pred: torch.Tensor, target: torch.Tensor, classes: torch.Tensor, d: int,
                      ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) label maps -> band intersections and unions (K,) for `classes` (K,), by max-pooling."""
    cls = classes.to(target.device).view(-1, 1, 1)
    gt_band = boundary_band(target.unsqueeze(0) == cls, d)
    pr_band = boundary_band(pred.unsqueeze(0) == cls, d)
    valid = (target != ignore_index).unsqueeze(0)
    gt_band, pr_band = gt_band & valid, pr_band & valid
    return (gt_band & pr_band).sum((1, 2)).cpu(), (gt_band | pr_band).sum((1, 2)).cpu()


def band_counts_opencv(pred: np.ndarray, target: np.ndarray, classes: list[int], d: int,
                       ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same counts as `band_counts_torch` for (H, W) numpy label maps, with OpenCV's erosion."""
    kernel = np.ones((2 * d + 1, 2 * d + 1), np.uint8)
    valid = (target != ignore_index).view(np.uint8)
    inter = torch.zeros(len(classes), dtype=torch.int64)
    union = torch.zeros(len(classes), dtype=torch.int64)

    def band(mask: np.ndarray) -> np.ndarray:
        # a zero constant border makes the image border part of every touching mask's boundary
        eroded = cv2.erode(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        return cv2.bitwise_and(cv2.subtract(mask, eroded), valid)

    for k, c in enumerate(classes):
        gb = band((target == c).view(np.uint8))
        pb = band((pred == c).view(np.uint8))
        inter[k] = cv2.countNonZero(cv2.bitwise_and(gb, pb))
        union[k] = cv2.countNonZero(cv2.bitwise_or(gb, pb))
    return inter, union


def _small_labels(x: torch.Tensor) -> np.ndarray:
    """A CPU label map as numpy, in uint8 when every value fits (comparisons are then 4-8x faster)."""
    a = x.numpy()
    return a.astype(np.uint8) if a.size and 0 <= a.min() and a.max() <= 255 else a


def _values(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a 1-D label array (a bincount for uint8: no sort)."""
    return np.flatnonzero(np.bincount(a, minlength=1)) if a.dtype == np.uint8 else np.unique(a)


class BoundaryIoU:
    """Accumulates per-class boundary intersections and unions over (H, W) label maps.

    `backend`: 'auto' = OpenCV for CPU tensors, max-pooling on the tensor's device otherwise.
    `multilabel`: the maps are packed one bit per class (overlapping classes, data/multilabel.py); each
    class's band is that of its own binary mask.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, dilation_ratio: float = 0.02,
                 backend: Literal["auto", "opencv", "torch"] = "auto", multilabel: bool = False) -> None:
        if backend not in ("auto", "opencv", "torch"):
            raise ValueError(f"backend must be 'auto', 'opencv' or 'torch', got {backend!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.dilation_ratio = dilation_ratio
        self.backend = backend
        self.multilabel = multilabel
        self.intersection = torch.zeros(num_classes, dtype=torch.int64)
        self.union = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: (H, W) or (N, H, W) integer label maps at the image's full resolution."""
        if pred.dim() == 2:
            pred, target = pred[None], target[None]
        for p, t in zip(pred, target):
            self.add(*self.image_counts(p, t))

    def add(self, intersection: torch.Tensor, union: torch.Tensor) -> None:
        """Add one image's (K,) band intersections and unions from `image_counts`."""
        self.intersection += intersection
        self.union += union

    def image_counts(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(H, W) label maps of one image -> its (K,) int64 boundary-band intersections and unions (CPU)."""
        inter_all = torch.zeros(self.num_classes, dtype=torch.int64)
        union_all = torch.zeros(self.num_classes, dtype=torch.int64)
        h, w = target.shape
        d = boundary_dilation(h, w, self.dilation_ratio)
        n = self.num_classes
        if self.multilabel:
            return self._multilabel_counts(pred, target, d)
        if self._opencv(target):
            t, p = _small_labels(target.cpu()), _small_labels(pred.cpu())
            present = np.zeros(n, dtype=bool)
            ids = _values(t[t != self.ignore_index])
            if ids.size and ids[-1] >= n:
                raise ValueError(f"target holds class ids outside 0..{n - 1}")
            present[ids] = True
            present[np.minimum(_values(p.ravel()), n - 1)] = True
            classes = np.flatnonzero(present).tolist()
            if classes:
                inter, union = band_counts_opencv(p, t, classes, d, self.ignore_index)
                inter_all[classes] += inter
                union_all[classes] += union
            return inter_all, union_all
        present = torch.zeros(n, dtype=torch.bool, device=target.device)
        present[target[target != self.ignore_index].unique().long()] = True
        present[pred.unique().long().clamp(max=n - 1)] = True
        idx = present.nonzero().flatten()
        if idx.numel():
            inter, union = band_counts_torch(pred, target, idx, d, self.ignore_index)
            inter_all[idx.cpu()] += inter
            union_all[idx.cpu()] += union
        return inter_all, union_all

    def _opencv(self, target: torch.Tensor) -> bool:
        """Whether bands are computed with OpenCV (CPU tensors under 'auto') rather than max-pooling."""
        return self.backend == "opencv" or (self.backend == "auto" and target.device.type == "cpu")

    def _multilabel_counts(self, pred: torch.Tensor, target: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed maps: class k's band counts from the binary maps of bit k (ignored pixels kept out)."""
        inter = torch.zeros(self.num_classes, dtype=torch.int64)
        union = torch.zeros(self.num_classes, dtype=torch.int64)
        ignore = self.ignore_index
        on_cpu = self._opencv(target)
        if on_cpu:
            t, p = target.cpu().numpy().astype(np.int64), pred.cpu().numpy().astype(np.int64)
        else:
            t, p = target.long(), pred.long()
        ignored = t == ignore
        for k in range(self.num_classes):
            tk, pk = (t >> k) & 1, (p >> k) & 1
            if on_cpu:
                tk = np.where(ignored, ignore, tk).astype(np.uint8)
                if (tk == 1).any() or pk.any():
                    i, u = band_counts_opencv(pk.astype(np.uint8), tk, [1], d, ignore)
                    inter[k], union[k] = i[0], u[0]
            else:
                tk = torch.where(ignored, torch.full_like(tk, ignore), tk)
                i, u = band_counts_torch(pk, tk, torch.tensor([1]), d, ignore)
                inter[k], union[k] = i[0], u[0]
        return inter, union

    def all_reduce(self) -> None:
        """Sum the counts over distributed ranks (no-op without a process group)."""
        both = all_reduce_tensor(torch.stack([self.intersection, self.union]))
        self.intersection, self.union = both[0], both[1]

    def per_class(self) -> torch.Tensor:
        out = torch.full((self.num_classes,), float("nan"), dtype=torch.float64)
        ok = self.union > 0
        out[ok] = self.intersection[ok].double() / self.union[ok].double()
        return out

    def mean(self) -> float:
        return nanmean(self.per_class())
