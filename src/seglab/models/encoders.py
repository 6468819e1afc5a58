"""Backbones from torchvision as multi-scale feature extractors, with dilation and pretrained weights.

An encoder maps (N, C, H, W) to five feature maps at strides 2, 4, 8, 16, 32; with output_stride 16
or 8 the last one or two stages keep their resolution and use dilated convolutions instead.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
import torchvision.models as tvm

from ..errors import ConfigError, SeglabError
from .encoder_table import TORCHVISION_FAMILIES, encoders
from .weights import load_weights_file, resolve_weights

ENCODER_NAMES = encoders(*TORCHVISION_FAMILIES)  # the torchvision rows of the encoder table

# the classification heads of the torchvision networks: not part of an encoder, may be absent from a file
_TV_HEADS = ("fc.", "classifier.")

_TV_BUILDERS: dict[str, tuple[Callable[..., nn.Module], Callable[[], object]]] = {
    "resnet18": (tvm.resnet18, lambda: tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (tvm.resnet34, lambda: tvm.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (tvm.resnet50, lambda: tvm.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (tvm.resnet101, lambda: tvm.ResNet101_Weights.IMAGENET1K_V1),
    "vgg16_bn": (tvm.vgg16_bn, lambda: tvm.VGG16_BN_Weights.IMAGENET1K_V1),
    "mobilenet_v2": (tvm.mobilenet_v2, lambda: tvm.MobileNet_V2_Weights.IMAGENET1K_V1),
    "mobilenet_v3_large": (tvm.mobilenet_v3_large, lambda: tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1),
}


def dilate_stage(stage: nn.Module, dilation: int) -> None:
    """Turn a stage's stride-2 convolutions into stride 1 and dilate its spatial kernels.

    Keeps the stage's receptive field while keeping its input resolution (DeepLab's atrous trick).
    """
    for m in stage.modules():
        if isinstance(m, nn.Conv2d):
            if m.stride == (2, 2):
                m.stride = (1, 1)
            k = m.kernel_size[0]
            if k > 1:
                m.dilation = (dilation, dilation)
                m.padding = ((k // 2) * dilation, (k // 2) * dilation)
        elif isinstance(m, nn.MaxPool2d) and m.stride == 2:
            m.stride, m.kernel_size, m.padding = 1, 3, 1


class Encoder(nn.Module):
    """Runs `stages` in order and returns every stage's output (strides 2, 4, 8, 16, 32 before dilation)."""

    def __init__(self, name: str, stages: list[nn.Module], channels: list[int], output_stride: int):
        super().__init__()
        self.name = name
        self.pretrained_record: Optional[dict] = None  # the WeightsRecord of what was loaded (models/weights.py)
        self.stages = nn.ModuleList(stages)
        self.out_channels = list(channels)
        strides = [2, 4, 8, 16, 32]
        if output_stride not in (8, 16, 32):
            raise ConfigError(f"model.output_stride: expected 8, 16 or 32, got {output_stride}")
        dilation = 1
        for i in range(len(strides)):
            if strides[i] > output_stride:
                dilation *= 2
                dilate_stage(self.stages[i], dilation)
                strides[i] = output_stride
        self.strides = strides

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def _stages(name: str, net: nn.Module) -> tuple[list[nn.Module], list[int]]:
    if name.startswith("resnet"):
        wide = name in ("resnet50", "resnet101")
        ch = [64, 256, 512, 1024, 2048] if wide else [64, 64, 128, 256, 512]
        return [nn.Sequential(net.conv1, net.bn1, net.relu), nn.Sequential(net.maxpool, net.layer1),
                net.layer2, net.layer3, net.layer4], ch
    if name == "vgg16_bn":
        f = net.features  # each conv block ends with its max-pool at 6, 13, 23, 33, 43
        cuts = [0, 7, 14, 24, 34, 44]
        return [nn.Sequential(*f[a:b]) for a, b in zip(cuts[:-1], cuts[1:])], [64, 128, 256, 512, 512]
    if name == "mobilenet_v2":
        f = net.features
        cuts = [0, 2, 4, 7, 14, 18]
        return [nn.Sequential(*f[a:b]) for a, b in zip(cuts[:-1], cuts[1:])], [16, 24, 32, 96, 320]
    f = net.features  # mobilenet_v3_large
    cuts = [0, 2, 4, 7, 13, 17]
    return [nn.Sequential(*f[a:b]) for a, b in zip(cuts[:-1], cuts[1:])], [16, 24, 40, 112, 960]


def hub_checkpoint_path(weights: object) -> Path:
    """Where torch hub keeps the file of a torchvision weights enum (TORCH_HOME/hub/checkpoints/...)."""
    url = getattr(weights, "url")
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def imagenet_file(name: str) -> Path:
    """The file of a torchvision backbone's ImageNet weights in the local hub cache; never touches the network."""
    weights = _TV_BUILDERS[name][1]()
    path = hub_checkpoint_path(weights)
    if not path.is_file():
        raise SeglabError(
            f"pretrained '{name}' weights not found offline: put {path.name} into {path.parent} "
            f"(from {getattr(weights, 'url')}) or set model.pretrained to a local file"
        )
    return path


def _adapt_first_conv(net: nn.Module, in_channels: int) -> None:
    """Replace the first convolution for a channel count other than 3, reusing RGB weights."""
    for parent in net.modules():
        for cname, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                new = nn.Conv2d(in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                                child.dilation, child.groups, child.bias is not None)
                with torch.no_grad():  # as timm and segmentation_models_pytorch do it
                    if in_channels == 1:  # a grey image is R = G = B: the kernels' sum gives the same response
                        new.weight.copy_(child.weight.sum(1, keepdim=True))
                    else:  # the RGB kernels cycled over the bands, scaled to keep the response's size
                        new.weight.copy_(child.weight[:, [i % 3 for i in range(in_channels)]] * 3.0 / in_channels)
                    if child.bias is not None:
                        new.bias.copy_(child.bias)
                setattr(parent, cname, new)
                return


def build_encoder(
    name: str, *, in_channels: int = 3, output_stride: int = 32, pretrained: Optional[str] = None,
) -> Encoder:
    """A torchvision backbone as an Encoder; pretrained: None, 'imagenet' (hub cache), a file path or
    package:DIST, loaded by name, else by order (models/weights.py); its record in `pretrained_record`."""
    if name not in _TV_BUILDERS:
        raise ConfigError(f"model.encoder: unknown encoder '{name}'; available: {', '.join(ENCODER_NAMES)}")
    net = _TV_BUILDERS[name][0](weights=None)
    record = None
    if pretrained:  # the whole classification network, as the file holds it; its head may be absent
        path = imagenet_file(name) if pretrained == "imagenet" else resolve_weights(pretrained, name)
        record = load_weights_file(net, path, pretrained, optional=_TV_HEADS)
        record.left_random = [k for k in record.left_random if not k.startswith(_TV_HEADS)]
    if in_channels != 3:
        _adapt_first_conv(net, in_channels)
    stages, channels = _stages(name, net)
    enc = Encoder(name, stages, channels, output_stride)
    enc.pretrained_record = record.to_dict() if record is not None else None
    return enc
