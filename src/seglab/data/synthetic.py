"""A procedural dataset of textured shapes on textured backgrounds: no download, fully deterministic.

Each class has its own shape and texture (stripes, checks, rings, dots, speckle) while colours are
drawn at random, so a model must use shape and texture rather than colour alone.
"""
from __future__ import annotations

import numpy as np
import cv2

from .labels import LabelSpace, default_palette

CLASS_NAMES = ["background", "disc", "box", "triangle", "ring", "cross"]
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def synthetic_labels(num_classes: int) -> LabelSpace:
    """The label space of synthetic data with `num_classes` classes (background first)."""
    return LabelSpace(CLASS_NAMES[:num_classes], default_palette(num_classes), 255)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    small = rng.random((cells, cells), dtype=np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _texture(cls: int, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A (H, W) pattern in [0, 1] characteristic of class `cls`."""
    h, w = yy.shape
    if cls == 1:  # stripes at a random angle
        a = rng.uniform(0, np.pi)
        period = rng.uniform(5, 9)
        return 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / period)
    if cls == 2:  # checks
        p = int(rng.integers(4, 8))
        return (((yy // p) + (xx // p)) % 2).astype(np.float32)
    if cls == 3:  # speckle
        return rng.random((h, w), dtype=np.float32)
    if cls == 4:  # concentric rings
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        return 0.5 + 0.5 * np.sin(np.hypot(yy - cy, xx - cx) / rng.uniform(1.5, 2.5))
    p = int(rng.integers(5, 8))  # dots
    return (((yy % p) < 2) & ((xx % p) < 2)).astype(np.float32)


def _shape(cls: int, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A boolean (H, W) mask of the class's shape at a random place and size."""
    m = np.zeros((h, w), np.uint8)
    s = min(h, w)
    r = rng.uniform(0.12, 0.25) * s
    cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
    if cls == 1:
        cv2.circle(m, (int(cx), int(cy)), int(r), 1, -1)
    elif cls == 2:
        a = rng.uniform(0, 180)
        box = cv2.boxPoints(((cx, cy), (2 * r, 2 * r * rng.uniform(0.5, 1.0)), a))
        cv2.fillPoly(m, [box.astype(np.int32)], 1)
    elif cls == 3:
        a0 = rng.uniform(0, 2 * np.pi)
        pts = [(cx + r * np.cos(a0 + k * 2 * np.pi / 3), cy + r * np.sin(a0 + k * 2 * np.pi / 3)) for k in range(3)]
        cv2.fillPoly(m, [np.array(pts, np.int32)], 1)
    elif cls == 4:
        cv2.circle(m, (int(cx), int(cy)), int(r), 1, -1)
        cv2.circle(m, (int(cx), int(cy)), int(r * 0.5), 0, -1)
    else:
        t = max(2, int(r * 0.35))
        cv2.rectangle(m, (int(cx - r), int(cy - t)), (int(cx + r), int(cy + t)), 1, -1)
        cv2.rectangle(m, (int(cx - t), int(cy - r)), (int(cx + t), int(cy + r)), 1, -1)
    return m.astype(bool)


def make_synthetic_sample(
    *, split: str, index: int, size: tuple[int, int], num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return (image (H, W, 3) uint8, mask (H, W) uint8) for sample `index` of `split`."""
    h, w = size
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 200, 3).astype(np.float32)
    light = _smooth_noise(rng, h, w, 4)[..., None] * 80 - 40
    img = base + light + rng.normal(0, 8, (h, w, 3)).astype(np.float32)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, num_classes))
        region = _shape(cls, rng, h, w)
        color_a, color_b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = _texture(cls, rng, yy, xx)[..., None]
        patch = color_a * t + color_b * (1 - t) + rng.normal(0, 6, (h, w, 3))
        img[region] = patch[region]
        mask[region] = cls
    return np.clip(img, 0, 255).astype(np.uint8), mask
