"""U²-Net and U²-Net-P (Qin et al., Pattern Recognition 2020): nested U-structures of RSU blocks,
six side outputs fused by a 1x1 convolution; the side outputs are deep supervision in training."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..registry import register_model
from .base import SegmentationModel
from .blocks import ConvBNReLU, upsample_like


class RSU(nn.Module):
    """Residual U-block of `height` levels; `dilated` (RSU-4F) replaces pooling by growing dilation."""

    def __init__(self, height: int, cin: int, mid: int, cout: int, dilated: bool = False):
        super().__init__()
        self.dilated = dilated
        self.inp = ConvBNReLU(cin, cout)
        if dilated:
            rates = [2**i for i in range(height)]  # 1, 2, 4, 8
        else:
            rates = [1] * (height - 1) + [2]
        self.enc = nn.ModuleList(
            ConvBNReLU(cout if i == 0 else mid, mid, dilation=rates[i]) for i in range(height)
        )
        self.dec = nn.ModuleList(
            ConvBNReLU(2 * mid, cout if i == height - 2 else mid, dilation=rates[height - 2 - i])
            for i in range(height - 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xin = self.inp(x)
        feats, y = [], xin
        for i, conv in enumerate(self.enc):
            if i > 0 and not self.dilated and i < len(self.enc) - 1:
                y = F.max_pool2d(y, 2, ceil_mode=True)
            y = conv(y)
            feats.append(y)
        y = feats.pop()
        for conv in self.dec:
            skip = feats.pop()
            y = conv(torch.cat([upsample_like(y, skip), skip], dim=1))
        return y + xin


# (height, in, mid, out, dilated) per stage; decoder stages take the concatenation of two outputs.
_FULL = {
    "enc": [(7, None, 32, 64), (6, 64, 32, 128), (5, 128, 64, 256), (4, 256, 128, 512), (4, 512, 256, 512), (4, 512, 256, 512)],
    "dec": [(4, 1024, 256, 512), (4, 1024, 128, 256), (5, 512, 64, 128), (6, 256, 32, 64), (7, 128, 16, 64)],
}
_SMALL = {
    "enc": [(7, None, 16, 64), (6, 64, 16, 64), (5, 64, 16, 64), (4, 64, 16, 64), (4, 64, 16, 64), (4, 64, 16, 64)],
    "dec": [(4, 128, 16, 64), (4, 128, 16, 64), (5, 128, 16, 64), (6, 128, 16, 64), (7, 128, 16, 64)],
}


class U2Net(SegmentationModel):
    """U^2-Net (Qin et al. 2020): nested U-blocks, side outputs fused (auxiliary in training)."""
    def __init__(self, in_channels: int, num_classes: int, spec: dict):
        super().__init__()
        enc, dec = spec["enc"], spec["dec"]
        # Stages 5 and 6 of the encoder and the first decoder stage are RSU-4F (no pooling inside).
        self.enc = nn.ModuleList(
            RSU(h, in_channels if cin is None else cin, mid, cout, dilated=i >= 4) for i, (h, cin, mid, cout) in enumerate(enc)
        )
        self.dec = nn.ModuleList(RSU(h, cin, mid, cout, dilated=i == 0) for i, (h, cin, mid, cout) in enumerate(dec))
        side_in = [dec[4][3], dec[3][3], dec[2][3], dec[1][3], dec[0][3], enc[5][3]]
        self.sides = nn.ModuleList(nn.Conv2d(c, num_classes, 3, padding=1) for c in side_in)
        self.fuse = nn.Conv2d(6 * num_classes, num_classes, 1)

    def decode(self, x):
        feats, y = [], x
        for i, stage in enumerate(self.enc):
            if i > 0:
                y = F.max_pool2d(y, 2, ceil_mode=True)
            y = stage(y)
            feats.append(y)
        outs = [feats.pop()]  # stage 6
        y = outs[0]
        for stage in self.dec:
            skip = feats.pop()
            y = stage(torch.cat([upsample_like(y, skip), skip], dim=1))
            outs.append(y)
        # outs: en6, de5, de4, de3, de2, de1 -> sides in the paper's order d1..d6
        sides = [side(o) for side, o in zip(self.sides, reversed(outs))]
        sides = [upsample_like(s, sides[0]) for s in sides]
        fused = self.fuse(torch.cat(sides, dim=1))
        return fused, (sides if self.training else [])


@register_model("u2net")
def build_u2net(*, in_channels: int = 3, num_classes: int) -> U2Net:
    """U²-Net (about 44M parameters)."""
    return U2Net(in_channels, num_classes, _FULL)


@register_model("u2net_small")
def build_u2net_small(*, in_channels: int = 3, num_classes: int) -> U2Net:
    """U²-Net-P, the small version (about 1.1M parameters)."""
    return U2Net(in_channels, num_classes, _SMALL)
