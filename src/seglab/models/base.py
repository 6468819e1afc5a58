"""The common model contract: logits at input size; auxiliary outputs only in training."""
from __future__ import annotations

from typing import Union

import torch
from torch import nn
import torch.nn.functional as F

ModelOutput = Union[torch.Tensor, dict]


def resize_to(x: torch.Tensor, size) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, H, W) bilinear; unchanged when already that size (kept as an op in exports)."""
    if tuple(x.shape[-2:]) == tuple(size) and not torch.onnx.is_in_onnx_export():  # an export keeps the op
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class SegmentationModel(nn.Module):
    """Subclasses implement `decode(x) -> (logits, [aux logits])` at any resolution.

    forward returns (N, K, H, W) logits at the input size; in training mode, when there are
    auxiliary outputs, {"out": logits, "aux": [logits, ...]} with every output at input size.
    """

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError

    @property
    def size_divisor(self) -> int:
        """Inference pads images to a multiple of this (evaluation/inference.py): the encoder's, else 1."""
        return int(getattr(getattr(self, "encoder", None), "size_divisor", 1))

    def train(self, mode: bool = True) -> "SegmentationModel":
        super().train(mode)
        if mode:
            from ._common import frozen_eval

            frozen_eval(self)
        return self

    def forward(self, x: torch.Tensor) -> ModelOutput:
        size = x.shape[-2:]
        out, aux = self.decode(x)
        out = resize_to(out, size)
        if self.training and aux:
            return {"out": out, "aux": [resize_to(a, size) for a in aux]}
        return out
