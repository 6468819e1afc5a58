"""U-Net (Ronneberger et al., 2015) with BatchNorm, configurable width and depth, optional dropout."""
from __future__ import annotations

import torch
from torch import nn

from ..registry import register_model
from .blocks import DoubleConv, match_size


class UNet(nn.Module):
    """(N, in_channels, H, W) -> logits (N, num_classes, H, W) for any H, W."""

    def __init__(self, in_channels: int, num_classes: int, base_channels: int, depth: int, dropout: float):
        super().__init__()
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.stem = DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1])) for i in range(depth)
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.fuse = nn.ModuleList(DoubleConv(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = self.dropout(skips.pop())
        for up, fuse in zip(self.up, self.fuse):
            skip = skips.pop()
            y = fuse(torch.cat([skip, match_size(up(y), skip)], dim=1))
        return self.head(y)


@register_model("unet")
def build_unet(
    *, in_channels: int = 3, num_classes: int, base_channels: int = 32, depth: int = 4, dropout: float = 0.0
) -> UNet:
    """U-Net from scratch: `depth` poolings, widths base_channels * 2**i."""
    if not 1 <= depth <= 6:
        raise ValueError("depth: expected 1..6")
    if base_channels < 1:
        raise ValueError("base_channels: expected a positive integer")
    if not 0.0 <= dropout < 1.0:
        raise ValueError("dropout: expected 0 <= dropout < 1")
    return UNet(in_channels, num_classes, base_channels, depth, dropout)
