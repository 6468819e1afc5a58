"""DeepLab v2 (ASPP of summed dilated branches), v3 (ASPP with image pooling) and v3+ (low-level decoder)."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from ._common import make_encoder
from .encoder_table import encoders
from .base import SegmentationModel
from .blocks import ConvBNReLU, SeparableConvBNReLU, upsample_like
from .heads import ASPP, FCNHead

BACKBONES = encoders("resnet", "mobilenet", "timm")


def _rates(output_stride: int) -> tuple[int, ...]:
    """ASPP rates 6/12/18 at output stride 16, doubled at 8 (Chen et al. 2017)."""
    if output_stride not in (8, 16):
        raise ConfigError(f"model.output_stride: DeepLab uses 8 or 16, got {output_stride}")
    return (6, 12, 18) if output_stride == 16 else (12, 24, 36)


class DeepLabV2(SegmentationModel):
    """DeepLab v2: a dilated encoder and an ASPP of summed 3x3 atrous branches."""
    def __init__(self, encoder, num_classes: int, rates):
        super().__init__()
        self.encoder = encoder
        c = encoder.out_channels[4]
        self.branches = nn.ModuleList(nn.Conv2d(c, num_classes, 3, padding=r, dilation=r) for r in rates)

    def decode(self, x):
        f = self.encoder(x)[4]
        return torch.stack([b(f) for b in self.branches]).sum(0), []


class DeepLabV3(SegmentationModel):
    """DeepLab v3: a dilated encoder, ASPP with image pooling, an optional auxiliary head."""
    def __init__(self, encoder, num_classes: int, rates, aux: bool):
        super().__init__()
        self.encoder = encoder
        c = encoder.out_channels
        self.aspp = ASPP(c[4], rates)
        self.head = nn.Sequential(ConvBNReLU(256, 256), nn.Conv2d(256, num_classes, 1))
        self.aux_head = FCNHead(c[3], num_classes) if aux else None

    def decode(self, x):
        f = self.encoder(x)
        aux = [self.aux_head(f[3])] if self.aux_head is not None and self.training else []
        return self.head(self.aspp(f[4])), aux


class DeepLabV3Plus(SegmentationModel):
    """separable=False: the paper's ResNet variant (plain ASPP, two 3x3 decoder convs); True: atrous
    separable convolutions in ASPP, after it and in a single decoder conv (the Xception-style design)."""

    def __init__(self, encoder, num_classes: int, rates, separable: bool):
        super().__init__()
        self.encoder = encoder
        c = encoder.out_channels
        if separable:
            self.aspp = nn.Sequential(ASPP(c[4], rates, separable=True), SeparableConvBNReLU(256, 256))
            decoder = [SeparableConvBNReLU(256 + 48, 256)]
        else:
            self.aspp = ASPP(c[4], rates, dropout=0.1)
            decoder = [ConvBNReLU(256 + 48, 256), ConvBNReLU(256, 256)]
        self.low = ConvBNReLU(c[1], 48, 1)
        self.head = nn.Sequential(*decoder, nn.Conv2d(256, num_classes, 1))

    def decode(self, x):
        f = self.encoder(x)
        low = self.low(f[1])
        return self.head(torch.cat([upsample_like(self.aspp(f[4]), low), low], dim=1)), []


def _encoder(name, encoder, in_channels, output_stride, pretrained, freeze_backbone):
    return make_encoder(encoder, allowed=BACKBONES, in_channels=in_channels, output_stride=output_stride,
                        pretrained=pretrained, freeze_backbone=freeze_backbone, model=name)


@register_model("deeplabv2", BACKBONES)
def build_deeplabv2(
    *, in_channels: int = 3, num_classes: int, encoder: str = "resnet101", pretrained: Optional[str] = None,
    output_stride: int = 8, rates: tuple[int, ...] = (6, 12, 18, 24), freeze_backbone: Union[bool, int] = False,
) -> DeepLabV2:
    """DeepLab v2: dilated backbone (output stride 8) and summed dilated 3x3 classifier branches."""
    enc = _encoder("deeplabv2", encoder, in_channels, output_stride, pretrained, freeze_backbone)
    return DeepLabV2(enc, num_classes, rates)


@register_model("deeplabv3", BACKBONES)
def build_deeplabv3(
    *, in_channels: int = 3, num_classes: int, encoder: str = "resnet50", pretrained: Optional[str] = None,
    output_stride: int = 16, aux: bool = True, freeze_backbone: Union[bool, int] = False,
) -> DeepLabV3:
    """DeepLab v3: ASPP (rates 6/12/18 at output stride 16, doubled at 8) with image pooling."""
    enc = _encoder("deeplabv3", encoder, in_channels, output_stride, pretrained, freeze_backbone)
    return DeepLabV3(enc, num_classes, _rates(output_stride), aux)


@register_model("deeplabv3plus", BACKBONES)
def build_deeplabv3plus(
    *, in_channels: int = 3, num_classes: int, encoder: str = "resnet50", pretrained: Optional[str] = None,
    output_stride: int = 16, separable: bool = False, freeze_backbone: Union[bool, int] = False,
) -> DeepLabV3Plus:
    """DeepLab v3+: ASPP encoder and a decoder fusing stride-4 features; `separable` for atrous separable convs."""
    enc = _encoder("deeplabv3plus", encoder, in_channels, output_stride, pretrained, freeze_backbone)
    return DeepLabV3Plus(enc, num_classes, _rates(output_stride), separable)
