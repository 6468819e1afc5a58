"""From logits to labels: class probabilities (softmax, or one sigmoid per class for overlapping classes),
label maps, and the inference strategies for large images: sliding windows with Gaussian overlap blending,
and test-time augmentation (horizontal flip, several scales), averaged as class probabilities."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..data.multilabel import pack_target

Net = Callable[[torch.Tensor], torch.Tensor]


def class_probabilities(logits: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """(N, K, H, W) logits -> float32 probabilities: softmax over classes, or each class's sigmoid
    (`multilabel`: overlapping classes)."""
    return logits.float().sigmoid() if multilabel else logits.float().softmax(1)


def logits_from_probabilities(probs: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """The inverse of `class_probabilities` (up to softmax's shift): log p, or log(p / (1 - p))."""
    return torch.logit(probs, eps=1e-6) if multilabel else probs.clamp_min(1e-12).log()


def label_maps(logits: torch.Tensor, multilabel: bool = False, threshold: Optional[float] = None) -> torch.Tensor:
    """(N, K, H, W) logits -> (N, H, W) uint8 label maps: the most probable class, or for a two-class model
    with `threshold` class 1 wherever its probability is at least the threshold; `multilabel`: bit k set where
    class k's sigmoid is at least `threshold` (default 0.5), see data/multilabel.py."""
    if multilabel:
        present = logits >= 0 if threshold is None else class_probabilities(logits, True) >= threshold
        return pack_target(present)
    if threshold is None:
        return logits.argmax(1).to(torch.uint8)
    return (class_probabilities(logits)[:, 1] >= threshold).to(torch.uint8)


@dataclass
class InferenceSettings:
    """window: (h, w) of sliding windows (None: the whole image at once); stride: step between windows
    (default two thirds of the window); flip: also predict the mirrored image; scales: image scales."""

    window: Optional[tuple[int, int]] = None
    stride: Optional[tuple[int, int]] = None
    flip: bool = False
    scales: Sequence[float] = field(default_factory=lambda: (1.0,))

    @property
    def plain(self) -> bool:
        return self.window is None and not self.flip and list(self.scales) == [1.0]

    def describe(self) -> str:
        parts = []
        if self.window is not None:
            s = self.stride or _default_stride(self.window)
            parts.append(f"sliding window {self.window[0]}x{self.window[1]} stride {s[0]}x{s[1]}")
        if self.flip:
            parts.append("flip TTA")
        if list(self.scales) != [1.0]:
            parts.append("scales " + "/".join(f"{s:g}" for s in self.scales))
        return ", ".join(parts) or "whole image"


def _default_stride(window: tuple[int, int]) -> tuple[int, int]:
    return (max(1, window[0] * 2 // 3), max(1, window[1] * 2 // 3))


def _starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride)) + [length - window]  # the last window ends at the edge
    return sorted(set(starts))


def gaussian_weights(h: int, w: int, device=None) -> torch.Tensor:
    """(h, w) blending weights, highest in the window centre (sigma = size / 8, as nnU-Net), floor 1e-3."""
    def axis(n: int) -> torch.Tensor:
        x = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2
        return torch.exp(-0.5 * (x / max(n / 8, 1e-6)) ** 2)

    g = axis(h)[:, None] * axis(w)[None, :]
    return (g / g.max()).clamp_min(1e-3)


def size_divisor_of(net: Any) -> int:
    """What the input sides of `net` (a model, DDP wrapper or predictor) must be a multiple of (1: any)."""
    while not hasattr(net, "size_divisor") and isinstance(getattr(net, "module", None), torch.nn.Module):
        net = net.module  # DistributedDataParallel
    return int(getattr(net, "size_divisor", 1))


def net_logits(net: Net, x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, K, H, W) logits of `net`, the input first padded at the bottom and right to a
    multiple of its `size_divisor` (reflected where the image is large enough) and the logits cropped back:
    a model sees the grid it was trained on at every image size."""
    d = size_divisor_of(net)
    h, w = x.shape[-2:]
    ph, pw = (-h) % d, (-w) % d
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
    out = net(x)
    out = out["out"] if isinstance(out, dict) else out  # a model left in training mode
    return out[..., :h, :w] if ph or pw else out


def sliding_window_probs(net: Net, images: torch.Tensor, window: tuple[int, int], stride: Optional[tuple[int, int]] = None,
                         batch_windows: int = 4, multilabel: bool = False) -> torch.Tensor:
    """(N, C, H, W) -> (N, K, H, W) class probabilities from overlapping windows, Gaussian-weighted.

    Images smaller than the window are padded (reflect where possible) and cropped back.
    """
    n, _, h, w = images.shape
    wh, ww = window
    sh, sw = stride or _default_stride(window)
    ph, pw = max(0, wh - h), max(0, ww - w)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        images = F.pad(images, (0, pw, 0, ph), mode=mode)
    H, W = images.shape[-2:]
    boxes = [(y, x) for y in _starts(H, wh, sh) for x in _starts(W, ww, sw)]
    weight = gaussian_weights(wh, ww, images.device)
    acc: Optional[torch.Tensor] = None
    norm = torch.zeros(1, 1, H, W, device=images.device)
    for i in range(0, len(boxes), batch_windows):
        chunk = boxes[i:i + batch_windows]
        crops = torch.cat([images[:, :, y:y + wh, x:x + ww] for y, x in chunk])
        probs = class_probabilities(net_logits(net, crops), multilabel)
        if acc is None:
            acc = torch.zeros(n, probs.shape[1], H, W, device=images.device)
        for j, (y, x) in enumerate(chunk):
            acc[:, :, y:y + wh, x:x + ww] += probs[j * n:(j + 1) * n] * weight
            norm[:, :, y:y + wh, x:x + ww] += weight
    assert acc is not None
    return (acc / norm)[:, :, :h, :w]


def predict_probs(net: Net, images: torch.Tensor, settings: InferenceSettings, multilabel: bool = False) -> torch.Tensor:
    """(N, C, H, W) -> (N, K, H, W) class probabilities averaged over scales and flips."""
    h, w = images.shape[-2:]
    total: Optional[torch.Tensor] = None
    count = 0
    for scale in settings.scales:
        x = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False,
                                                       recompute_scale_factor=False)
        for flip in ((False, True) if settings.flip else (False,)):
            xi = x.flip(-1) if flip else x
            if settings.window is not None:
                p = sliding_window_probs(net, xi, settings.window, settings.stride, multilabel=multilabel)
            else:
                p = class_probabilities(net_logits(net, xi), multilabel)
            p = p.flip(-1) if flip else p
            if p.shape[-2:] != (h, w):
                p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
            total = p if total is None else total + p
            count += 1
    assert total is not None
    return total / count


def logits_with(net: Net, images: torch.Tensor, size: Sequence[int], settings: InferenceSettings,
                multilabel: bool = False) -> torch.Tensor:
    """Logits of the averaged probabilities, resized to `size`: label maps and losses behave as on logits."""
    probs = predict_probs(net, images, settings, multilabel)
    if tuple(probs.shape[-2:]) != tuple(size):
        probs = F.interpolate(probs, size=tuple(size), mode="bilinear", align_corners=False)
    return logits_from_probabilities(probs, multilabel)


def settings_from(window=None, stride=None, flip: bool = False, scales=None) -> InferenceSettings:
    """InferenceSettings from sliding-window and TTA values, checked (scales in (0, 8])."""
    scales = list(scales) if scales else [1.0]
    if any(not (0 < s <= 8) or math.isnan(s) for s in scales):
        raise ValueError("tta_scales: scales must be in (0, 8]")
    return InferenceSettings(tuple(window) if window else None, tuple(stride) if stride else None, bool(flip), scales)


def settings_from_config(ev) -> InferenceSettings:
    """From a config's `eval` section (sliding_window, sliding_stride, tta_flip, tta_scales)."""
    return settings_from(ev.sliding_window, ev.sliding_stride, ev.tta_flip, ev.tta_scales)
