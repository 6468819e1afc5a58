"""Augmentation from the config (albumentations) and the deterministic evaluation transform."""
from __future__ import annotations

from typing import Optional, Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from ..config import AugmentConfig
from .multilabel import class_pixel_counts


class ClassBalancedCrop(A.RandomCrop):
    """A random crop re-drawn (up to `tries` times, then the last draw is kept) while one class covers
    `max_share` or more of the crop's labelled pixels, or the crop holds one class only: MMSegmentation's
    `cat_max_ratio`. The draws come from the transform's own random state, so a sample's seed fixes them
    and a resumed or multi-process run crops exactly as an uninterrupted one."""

    def __init__(self, height: int, width: int, *, max_share: float, ignore_index: int, multilabel_classes: int = 0,
                 tries: int = 10):
        """`multilabel_classes`: K when the masks hold K packed class bits (overlapping classes), else 0."""
        super().__init__(height, width, p=1.0)
        self.max_share, self.ignore_index, self.tries = max_share, ignore_index, tries
        self.multilabel_classes = multilabel_classes

    def class_shares(self, mask: np.ndarray) -> np.ndarray:
        """(h, w) label map -> (K,) share of the labelled (not ignored) pixels that each present class covers."""
        hist = np.bincount(mask.ravel(), minlength=max(256, self.ignore_index + 1))
        labelled = hist.sum() - hist[self.ignore_index]
        if self.multilabel_classes:  # packed bits: a pixel counts for every class it holds
            counts = class_pixel_counts(hist[:256], self.multilabel_classes)
        else:
            counts = np.delete(hist, self.ignore_index)
        return counts[counts > 0] / max(1, labelled)

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        mask = data.get("mask")
        out = super().get_params_dependent_on_data(params, data)
        if mask is None or mask.ndim != 2:
            return out
        for _ in range(self.tries - 1):
            x1, y1, x2, y2 = out["crop_coords"]
            shares = self.class_shares(mask[y1:y2, x1:x2])
            if len(shares) > 1 and shares.max() < self.max_share:
                break
            out = super().get_params_dependent_on_data(params, data)
        return out


def build_train_transform(aug: AugmentConfig, ignore_index: int, multilabel_classes: int = 0) -> A.Compose:
    """Random geometry and colour for training; masks use nearest and pad with `ignore_index`; a crop with
    augment.cat_max_ratio balances its classes (`multilabel_classes`: K packed class bits per mask value)."""
    near = cv2.INTER_NEAREST
    ops: list = []
    if aug.resize is not None:
        ops.append(A.Resize(*aug.resize, interpolation=cv2.INTER_LINEAR, mask_interpolation=near))
    if aug.scale is not None and aug.scale != (1.0, 1.0):
        lo, hi = aug.scale
        ops.append(A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), mask_interpolation=near, p=1.0))
    if aug.crop is not None:
        h, w = aug.crop
        ops.append(A.PadIfNeeded(h, w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index))
        if aug.cat_max_ratio is not None:
            ops.append(ClassBalancedCrop(h, w, max_share=aug.cat_max_ratio, ignore_index=ignore_index,
                                         multilabel_classes=multilabel_classes))
        else:
            ops.append(A.RandomCrop(h, w))
    if aug.hflip > 0:
        ops.append(A.HorizontalFlip(p=aug.hflip))
    if aug.rotate > 0:
        ops.append(
            A.Rotate(
                limit=aug.rotate, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index,
                mask_interpolation=near, p=1.0,
            )
        )
    if aug.color_jitter > 0:
        s = aug.color_jitter
        ops.append(A.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4), p=0.8))
    return A.Compose(ops, seed=0)


def to_tensor(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, C) uint8 (0..255) or float32 (0..1, from 16-bit or float files) -> normalised (C, H, W) float32;
    `mean` and `std` hold one value per channel (the config checks it); NaN (missing, data.nodata) -> 0.
    `image` is never modified: a float32 array and its tensor share memory, and a cached sample would be
    normalised again at every read."""
    c = image.shape[2]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"{c} image channels but {len(mean)} means and {len(std)} stds")
    m = torch.tensor(list(mean), dtype=torch.float32).view(c, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(c, 1, 1)
    # torch.tensor copies (and accepts read-only arrays), so the in-place steps below touch only the copy
    x = torch.tensor(np.ascontiguousarray(image).transpose(2, 0, 1), dtype=torch.float32)
    if image.dtype == np.uint8:
        return x.div_(255.0).sub_(m).div_(s)
    # missing pixels (data.nodata, NaN after read_image) take the band's mean: 0 once normalised
    return x.sub_(m).div_(s).nan_to_num_(nan=0.0)


def prepare_eval_image(
    image: np.ndarray, input_size: Optional[Sequence[int]], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Deterministic: resize the image to the model's input size (if any) and normalise."""
    if input_size is not None and tuple(image.shape[:2]) != tuple(input_size):
        image = cv2.resize(image, (int(input_size[1]), int(input_size[0])), interpolation=cv2.INTER_LINEAR)
        if image.ndim == 2:
            image = image[..., None]
    return to_tensor(image, mean, std)
