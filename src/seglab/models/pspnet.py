"""PSPNet (Zhao et al., CVPR 2017): dilated ResNet, pyramid pooling over 1, 2, 3, 6 bins, auxiliary head."""
from __future__ import annotations

from typing import Optional, Union

from torch import nn

from ..registry import register_model
from ._common import make_encoder
from .encoder_table import encoders
from .base import SegmentationModel
from .blocks import ConvBNReLU
from .heads import FCNHead, PyramidPooling


class PSPNet(SegmentationModel):
    """Pyramid pooling on a dilated encoder, with an optional auxiliary FCN head (Zhao et al., CVPR 2017)."""

    # ONNX: adaptive average pooling to 2, 3 and 6 bins exports as fixed pooling windows of the traced size
    export_fixed_size = "its pyramid pooling (adaptive average pools to 1, 2, 3 and 6 bins) exports for one input size"

    def __init__(self, encoder, num_classes: int, bins, aux: bool, dropout: float):
        super().__init__()
        self.encoder = encoder
        c = encoder.out_channels
        self.ppm = PyramidPooling(c[4], bins)
        self.head = nn.Sequential(ConvBNReLU(self.ppm.out_channels, 512), nn.Dropout2d(dropout),
                                  nn.Conv2d(512, num_classes, 1))
        self.aux_head = FCNHead(c[3], num_classes, dropout) if aux else None

    def decode(self, x):
        f = self.encoder(x)
        aux = [self.aux_head(f[3])] if self.aux_head is not None and self.training else []
        return self.head(self.ppm(f[4])), aux


PSPNET_ENCODERS = encoders("resnet", "timm")


@register_model("pspnet", PSPNET_ENCODERS)
def build_pspnet(
    *, in_channels: int = 3, num_classes: int, encoder: str = "resnet50", pretrained: Optional[str] = None,
    output_stride: int = 8, bins: tuple[int, ...] = (1, 2, 3, 6), aux: bool = True, dropout: float = 0.1,
    freeze_backbone: Union[bool, int] = False,
) -> PSPNet:
    """PSPNet on a dilated ResNet (output stride 8), auxiliary FCN head on the stride-16 stage."""
    enc = make_encoder(encoder, allowed=PSPNET_ENCODERS, in_channels=in_channels, output_stride=output_stride,
                       pretrained=pretrained, freeze_backbone=freeze_backbone, model="pspnet")
    return PSPNet(enc, num_classes, bins, aux, dropout)
