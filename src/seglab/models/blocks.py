"""Layers shared by the architectures."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class PooledBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm for globally pooled features: with a single value per channel (batch 1 at 1x1),
    where batch statistics are undefined, it normalises with the running statistics instead."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class ConvBNReLU(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU."""
    def __init__(self, cin: int, cout: int, kernel: int = 3, dilation: int = 1, pooled: bool = False) -> None:
        pad = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
            PooledBatchNorm2d(cout) if pooled else nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise (dilated) 3x3 then pointwise 1x1, BN, ReLU: DeepLabV3+'s atrous separable convolution."""

    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU layers, the U-Net stage."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(ConvBNReLU(cin, cout), ConvBNReLU(cout, cout))


def match_size(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Zero-pad or crop x (N, C, h, w) to ref's spatial size; used where pooling floored odd sizes."""
    dh, dw = ref.shape[-2] - x.shape[-2], ref.shape[-1] - x.shape[-1]
    if dh == 0 and dw == 0 and not torch.onnx.is_in_onnx_export():  # an export keeps the op: other sizes need it
        return x
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def upsample_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of x to ref's spatial size."""
    if x.shape[-2:] == ref.shape[-2:] and not torch.onnx.is_in_onnx_export():  # see match_size
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)
