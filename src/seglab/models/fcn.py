"""FCN (Long et al., CVPR 2015): FCN-32s/16s/8s on VGG16, and FCN on a dilated ResNet (torchvision's)."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from ..registry import register_model
from ._common import make_encoder
from .encoder_table import encoders
from .base import SegmentationModel
from .blocks import upsample_like
from .heads import FCNHead

FCN_ENCODERS = encoders("resnet", "timm")
VGGS = encoders("vgg")  # FCN-8s / 16s / 32s: VGG-16


def bilinear_kernel(channels: int, k: int) -> torch.Tensor:
    """Weights that make a transposed convolution start as bilinear upsampling (as in the paper)."""
    f = (k + 1) // 2
    c = f - 1 if k % 2 == 1 else f - 0.5
    og = torch.arange(k, dtype=torch.float32)
    filt = 1 - (og - c).abs() / f
    w = torch.zeros(channels, channels, k, k)
    w[range(channels), range(channels)] = filt[:, None] * filt[None, :]
    return w


class FCNVGG(SegmentationModel):
    """VGG16 conv layers, fc6/fc7 as convolutions, and 0, 1 or 2 skip fusions (32s, 16s, 8s)."""

    def __init__(self, encoder, num_classes: int, skips: int, fc_channels: int, dropout: float):
        super().__init__()
        self.encoder = encoder
        self.skips = skips
        self.fc = nn.Sequential(
            nn.Conv2d(512, fc_channels, 7, padding=3), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            nn.Conv2d(fc_channels, num_classes, 1),
        )
        self.score_pool4 = nn.Conv2d(512, num_classes, 1) if skips >= 1 else None
        self.score_pool3 = nn.Conv2d(256, num_classes, 1) if skips >= 2 else None
        self.up = nn.ModuleList(nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
                                for _ in range(skips))
        for up in self.up:
            up.weight.data.copy_(bilinear_kernel(num_classes, 4))
        for conv in (self.score_pool4, self.score_pool3):
            if conv is not None:  # zero-init, so training starts from the coarser net (as in the paper)
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def decode(self, x):
        f = self.encoder(x)
        score = self.fc(f[4])
        for up, (conv, pool) in zip(self.up, ((self.score_pool4, f[3]), (self.score_pool3, f[2]))):
            skip = conv(pool)
            score = upsample_like(up(score), skip) + skip
        return score, []


class FCNResNet(SegmentationModel):
    """Dilated ResNet + FCNHead, auxiliary FCNHead on the stride-16 stage (torchvision's fcn_resnet*)."""

    def __init__(self, encoder, num_classes: int, aux: bool, dropout: float):
        super().__init__()
        self.encoder = encoder
        c = encoder.out_channels
        self.head = FCNHead(c[4], num_classes, dropout)
        self.aux_head = FCNHead(c[3], num_classes, dropout) if aux else None

    def decode(self, x):
        f = self.encoder(x)
        aux = [self.aux_head(f[3])] if self.aux_head is not None and self.training else []
        return self.head(f[4]), aux


def _vgg(skips: int, name: str):
    def build(
        *, in_channels: int = 3, num_classes: int, encoder: str = "vgg16_bn", pretrained: Optional[str] = None,
        fc_channels: int = 4096, dropout: float = 0.5, freeze_backbone: Union[bool, int] = False,
    ) -> FCNVGG:
        enc = make_encoder(encoder, allowed=("vgg16_bn",), in_channels=in_channels, output_stride=32,
                           pretrained=pretrained, freeze_backbone=freeze_backbone, model=name)
        return FCNVGG(enc, num_classes, skips, fc_channels, dropout)

    build.__doc__ = f"{name}: VGG16 FCN with {skips} skip fusions."
    return build


build_fcn32s = register_model("fcn32s", VGGS)(_vgg(0, "fcn32s"))
build_fcn16s = register_model("fcn16s", VGGS)(_vgg(1, "fcn16s"))
build_fcn8s = register_model("fcn8s", VGGS)(_vgg(2, "fcn8s"))


@register_model("fcn", FCN_ENCODERS)
def build_fcn(
    *, in_channels: int = 3, num_classes: int, encoder: str = "resnet50", pretrained: Optional[str] = None,
    output_stride: int = 8, aux: bool = True, dropout: float = 0.1, freeze_backbone: Union[bool, int] = False,
) -> FCNResNet:
    """FCN head on a dilated ResNet (output stride 8 by default), with an auxiliary head."""
    enc = make_encoder(encoder, allowed=FCN_ENCODERS, in_channels=in_channels, output_stride=output_stride,
                       pretrained=pretrained, freeze_backbone=freeze_backbone, model="fcn")
    return FCNResNet(enc, num_classes, aux, dropout)
