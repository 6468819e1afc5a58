"""U-Net (Ronneberger et al., 2015) with BatchNorm, configurable width and depth, optional dropout."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn
import torch.nn.functional as F

from ..registry import register_model
from ._common import make_encoder
from .base import SegmentationModel
from .blocks import DoubleConv, match_size
from .encoder_table import encoders


class UNet(nn.Module):
    """(N, in_channels, H, W) -> logits (N, num_classes, H, W) for any H, W."""

    def __init__(self, in_channels: int, num_classes: int, base_channels: int, depth: int, dropout: float,
                 condition_channels: int = 0):
        super().__init__()
        self.condition_channels = condition_channels
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.stem = DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1])) for i in range(depth)
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        cc = condition_channels
        self.fuse = nn.ModuleList(DoubleConv(2 * widths[i] + cc, widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor, code: Optional[torch.Tensor] = None) -> torch.Tensor:
        """code (N, condition_channels): a class code tiled into every decoder stage (conditional U-Net)."""
        if self.condition_channels and code is None:
            code = x.new_zeros(x.shape[0], self.condition_channels)
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = self.dropout(skips.pop())
        for up, fuse in zip(self.up, self.fuse):
            skip = skips.pop()
            parts = [skip, match_size(up(y), skip)]
            if self.condition_channels:
                parts.append(code[:, :, None, None].to(skip.dtype).expand(-1, -1, *skip.shape[-2:]))
            y = fuse(torch.cat(parts, dim=1))
        return self.head(y)


class EncoderUNet(SegmentationModel):
    """U-Net decoder over a pretrained-style encoder's five stages (strides 2..32), then to input size."""

    def __init__(self, encoder, num_classes: int, decoder_channels: tuple[int, ...], dropout: float):
        super().__init__()
        self.encoder = encoder
        skips = encoder.out_channels[:4][::-1]  # strides 16, 8, 4, 2
        cin = encoder.out_channels[4]
        blocks = []
        for skip, cout in zip(skips + [0], decoder_channels):
            blocks.append(DoubleConv(cin + skip, cout))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(cin, num_classes, 3, padding=1)

    def decode(self, x):
        feats = self.encoder(x)
        y = self.dropout(feats[4])
        targets = feats[:4][::-1] + [x]  # skips at strides 16, 8, 4, 2, then the input size
        for i, (block, ref) in enumerate(zip(self.blocks, targets)):
            y = F.interpolate(y, size=ref.shape[-2:], mode="nearest")
            y = block(torch.cat([y, ref], 1) if i < 4 else y)
        return self.head(y), []


UNET_ENCODERS = encoders("resnet", "vgg", "mobilenet", "timm")


@register_model("unet", UNET_ENCODERS)
def build_unet(
    *, in_channels: int = 3, num_classes: int, base_channels: int = 32, depth: int = 4, dropout: float = 0.0,
    encoder: Optional[str] = None, pretrained: Optional[str] = None,
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16), freeze_backbone: Union[bool, int] = False,
    condition_channels: int = 0,
) -> nn.Module:
    """U-Net: from scratch (`depth` poolings, widths base_channels * 2**i) or on a torchvision `encoder`.

    condition_channels: width of a class code concatenated to every decoder stage (from scratch only;
    set by the conditional partial-label strategy).
    """
    if encoder is not None:
        if condition_channels:
            raise ValueError("condition_channels: only a U-Net from scratch takes a class code in its decoder")
        if len(decoder_channels) != 5:
            raise ValueError("decoder_channels: expected 5 widths, one per decoder stage")
        enc = make_encoder(encoder, allowed=UNET_ENCODERS, in_channels=in_channels, output_stride=32,
                           pretrained=pretrained, freeze_backbone=freeze_backbone, model="unet")
        return EncoderUNet(enc, num_classes, tuple(decoder_channels), dropout)
    if pretrained is not None or freeze_backbone is not False:
        raise ValueError("pretrained: a U-Net from scratch has no backbone; set model.encoder (e.g. resnet34)")
    if not 1 <= depth <= 6:
        raise ValueError("depth: expected 1..6")
    if base_channels < 1:
        raise ValueError("base_channels: expected a positive integer")
    if not 0.0 <= dropout < 1.0:
        raise ValueError("dropout: expected 0 <= dropout < 1")
    if condition_channels < 0:
        raise ValueError("condition_channels: expected 0 or more")
    return UNet(in_channels, num_classes, base_channels, depth, dropout, condition_channels)
