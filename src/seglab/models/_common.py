"""Helpers shared by the builders: encoder construction with freezing and pretrained reporting."""
from __future__ import annotations

from typing import Optional, Union

from torch import nn

from ..errors import ConfigError
from .encoders import Encoder, build_encoder
from .encoder_table import TIMM_ANY
from .timm_encoder import TimmEncoder, timm_base
from .weights import load_timm_weights


def make_encoder(
    name: str, *, allowed: tuple[str, ...], in_channels: int, output_stride: int, pretrained: Optional[str],
    freeze_backbone: Union[bool, int], model: str,
) -> Encoder:
    """Build `name` if this architecture takes it (a torchvision name, or timm/NAME where it takes timm
    encoders), load weights, freeze as asked."""
    if timm_base(name):
        if TIMM_ANY not in allowed:
            raise ConfigError(f"model.encoder: '{model}' takes {', '.join(allowed)}, not timm encoders; got '{name}'")
        enc: Union[Encoder, TimmEncoder] = TimmEncoder(name, in_channels=in_channels, output_stride=output_stride)
        if pretrained:  # the record is kept on the encoder; the trainer logs it into train.log
            load_timm_weights(enc, pretrained, in_channels)
        freeze_stages(enc, freeze_backbone)
        return enc
    if name not in allowed:
        shown = ", ".join("timm/NAME (any timm encoder)" if a == TIMM_ANY else a for a in allowed)
        raise ConfigError(f"model.encoder: '{model}' takes {shown}; got '{name}'")
    # the record of what was loaded is kept on the encoder; the trainer logs it into train.log
    enc = build_encoder(name, in_channels=in_channels, output_stride=output_stride, pretrained=pretrained)
    freeze_stages(enc, freeze_backbone)
    return enc


def freeze_stages(enc: Union[Encoder, "TimmEncoder"], freeze: Union[bool, int]) -> None:
    """freeze=True freezes every stage; an int N leaves the top N stages trainable (0 = all frozen).

    Frozen stages also keep their BatchNorm statistics fixed (see `SegmentationModel.train`).
    """
    if freeze is False:
        return
    n = len(enc.stages)
    keep = 0 if freeze is True else int(freeze)
    if not 0 <= keep <= n:
        raise ConfigError(f"model.freeze_backbone: expected true, false or 0..{n} trainable top stages, got {freeze}")
    for stage in list(enc.stages)[: n - keep]:
        stage.requires_grad_(False)
        for m in stage.modules():
            m.frozen = True  # type: ignore[attr-defined]


def frozen_eval(module: nn.Module) -> None:
    """Put frozen stages' BatchNorm layers back in eval mode after model.train()."""
    for m in module.modules():
        if getattr(m, "frozen", False):
            m.eval()
