"""LR-ASPP (Howard et al., ICCV 2019) on MobileNetV3-Large: the fastest model in the zoo."""
from __future__ import annotations

from typing import Optional, Union

from torch import nn

from ..registry import register_model
from ._common import make_encoder
from .encoder_table import encoders
from .base import SegmentationModel
from .blocks import upsample_like


class LRASPP(SegmentationModel):
    """Low-level (stride 8) and high-level (stride 16, dilated) features, squeeze-gated."""

    def __init__(self, encoder, num_classes: int, inter_channels: int):
        super().__init__()
        self.encoder = encoder
        low_c, high_c = encoder.out_channels[2], encoder.out_channels[4]
        self.cbr = nn.Sequential(nn.Conv2d(high_c, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels),
                                 nn.ReLU(inplace=True))
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_c, inter_channels, 1, bias=False),
                                   nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_c, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def decode(self, x):
        f = self.encoder(x)
        low, high = f[2], f[4]
        y = upsample_like(self.cbr(high) * self.scale(high), low)
        return self.low_classifier(low) + self.high_classifier(y), []


LRASPP_ENCODERS = encoders("timm", names=("mobilenet_v3_large",))


@register_model("lraspp", LRASPP_ENCODERS)
def build_lraspp(
    *, in_channels: int = 3, num_classes: int, encoder: str = "mobilenet_v3_large", pretrained: Optional[str] = None,
    inter_channels: int = 128, freeze_backbone: Union[bool, int] = False,
) -> LRASPP:
    """LR-ASPP head on a MobileNetV3-Large whose last stage is dilated (output stride 16)."""
    enc = make_encoder(encoder, allowed=LRASPP_ENCODERS, in_channels=in_channels, output_stride=16,
                       pretrained=pretrained, freeze_backbone=freeze_backbone, model="lraspp")
    return LRASPP(enc, num_classes, inter_channels)
