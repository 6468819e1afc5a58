"""Decoder heads shared by several architectures."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from .blocks import ConvBNReLU, SeparableConvBNReLU


class FCNHead(nn.Sequential):
    """3x3 conv to in/4 channels, BN, ReLU, dropout, 1x1 classifier (torchvision's FCN and aux head)."""

    def __init__(self, cin: int, num_classes: int, dropout: float = 0.1) -> None:
        mid = cin // 4
        super().__init__(ConvBNReLU(cin, mid), nn.Dropout(dropout), nn.Conv2d(mid, num_classes, 1))


class ASPPPooling(nn.Module):
    """ASPP's image-level branch: global average pool, 1x1 conv, upsampled back."""
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(cin, cout, 1, pooled=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.proj(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """DeepLabV3 atrous spatial pyramid pooling: 1x1, dilated 3x3 branches and image pooling, projected."""

    def __init__(self, cin: int, rates: Sequence[int], cout: int = 256, dropout: float = 0.5,
                 separable: bool = False) -> None:
        super().__init__()
        conv = (lambda r: SeparableConvBNReLU(cin, cout, r)) if separable else (lambda r: ConvBNReLU(cin, cout, 3, dilation=r))
        branches = [ConvBNReLU(cin, cout, 1)] + [conv(r) for r in rates]
        self.branches = nn.ModuleList(branches + [ASPPPooling(cin, cout)])
        self.project = nn.Sequential(ConvBNReLU(len(self.branches) * cout, cout, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


def _pool_matrix(n: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """(bins, n) averaging matrix of adaptive average pooling along one axis."""
    m = torch.zeros(bins, n, dtype=like.dtype, device=like.device)
    for i in range(bins):
        a, b = (i * n) // bins, -(-((i + 1) * n) // bins)
        m[i, a:b] = 1.0 / (b - a)
    return m


def adaptive_avg_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """adaptive_avg_pool2d; during ONNX export written as two matrix products, which export at any size."""
    if not torch.onnx.is_in_onnx_export() or bins == 1:
        return F.adaptive_avg_pool2d(x, bins)
    h, w = x.shape[-2:]
    return _pool_matrix(int(h), bins, x) @ x @ _pool_matrix(int(w), bins, x).T


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling: average-pool to each bin size, reduce, upsample, concatenate with input."""

    def __init__(self, cin: int, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        red = cin // len(bins)
        self.bins = tuple(bins)
        self.stages = nn.ModuleList(ConvBNReLU(cin, red, 1, pooled=b == 1) for b in bins)
        self.out_channels = cin + red * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(s(adaptive_avg_pool(x, b)), size=size, mode="bilinear", align_corners=False)
                  for b, s in zip(self.bins, self.stages)]
        return torch.cat([x] + pooled, dim=1)
