"""Overlapping classes (multi-label masks) packed one bit per class into the usual (H, W) uint8 label map.

A multi-label sample has K binary masks; pixel value sum_k 2^k * mask_k[y, x] carries all of them, so the
whole pipeline built for one label map per image (nearest-neighbour augmentation, padding with the ignore
value, batching, the report's colours) carries K overlapping masks unchanged. K is at most 7: the ignore
value (255 by default, at least 2^K) never collides with a combination of classes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# bits per pixel left for classes once the ignore value (>= 2^K) is reserved in a byte
MAX_MULTILABEL_CLASSES = 7


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """(K, H, W) bool -> (H, W) uint8 with bit k set where mask k is."""
    out = np.zeros(masks.shape[1:], np.uint8)
    for k, m in enumerate(masks):
        out |= m.astype(np.uint8) << k
    return out


def unpack_masks(packed: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) packed map -> (K, H, W) bool (ignored pixels come out as whatever bits the ignore value has;
    mask them with `packed != ignore_index`)."""
    return np.stack([(packed >> k) & 1 for k in range(num_classes)]).astype(bool)


def unpack_target(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(..., H, W) integer packed maps -> (..., K, H, W) bool, class k's mask in channel k."""
    import torch  # here, not at the top: convert and inspect's first lines need no torch

    bits = torch.arange(num_classes, device=target.device)
    shape = (1,) * (target.dim() - 2) + (num_classes, 1, 1)
    return (target.unsqueeze(-3).long() >> bits.view(shape)) & 1 == 1


def pack_target(masks: torch.Tensor) -> torch.Tensor:
    """(..., K, H, W) bool -> (..., H, W) uint8 packed maps (the inverse of `unpack_target`)."""
    import torch

    k = masks.shape[-3]
    weights = (2 ** torch.arange(k, device=masks.device)).view((k, 1, 1))
    return (masks.long() * weights).sum(-3).to(torch.uint8)


def class_pixel_counts(histogram: np.ndarray, num_classes: int) -> np.ndarray:
    """A 256-bin histogram of packed values -> (K,) pixels in which each class is present (ignored
    values, at least 2^K, are left out)."""
    values = np.arange(1 << num_classes)
    return np.array([histogram[values[(values >> k) & 1 == 1]].sum() for k in range(num_classes)], np.int64)


def blend_palette(palette: list[tuple[int, int, int]]) -> np.ndarray:
    """(256, 3) uint8 colours of packed values: one class its own colour, overlapping classes the mean of
    theirs, no class (and the ignore value) black."""
    k = len(palette)
    colors = np.asarray(palette, np.float64)
    lut = np.zeros((256, 3), np.uint8)
    for v in range(1, 1 << k):
        members = [c for c in range(k) if v >> c & 1]
        lut[v] = np.round(colors[members].mean(0)).astype(np.uint8)
    return lut
