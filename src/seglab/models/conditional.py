"""Class-conditioned segmentation (Dmitriev & Kaufman, CVPR 2019): one binary output per (image, class).

The class code (one-hot over the K-1 foreground classes) enters the decoder of a U-Net from scratch at
every stage, as in the paper, or the input of any other model as extra constant planes. In eval mode all
classes run in one batched pass and are combined into K-channel scores whose argmax is the label map:
channel c >= 1 is class c's foreground logit, channel 0 the logit of the threshold, so a pixel is
background unless some class's foreground probability exceeds the threshold, else the most likely class.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn


class ConditionalSegmenter(nn.Module):
    """(N, C, H, W) -> (N, K, H, W) combined scores; in training with `labelled` (N, K) bool, the binary
    logits of each annotated (sample, class) pair: {"out": (P, 1, H, W), "aux": [...], "pairs": (P, 2)}."""

    # The training step passes these batch entries to forward as keyword arguments (see models.train_inputs).
    train_inputs = ("labelled",)

    def __init__(self, net: nn.Module, num_classes: int, threshold: float, decoder_code: bool):
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.threshold = threshold
        self.decoder_code = decoder_code
        self.register_buffer("codes", torch.eye(num_classes - 1), persistent=False)

    def _run(self, x: torch.Tensor, code: torch.Tensor) -> Any:
        if self.decoder_code:
            return self.net(x, code)
        planes = code[:, :, None, None].to(x.dtype).expand(-1, -1, *x.shape[-2:])
        return self.net(torch.cat([x, planes], 1))

    def forward(self, x: torch.Tensor, labelled: Optional[torch.Tensor] = None) -> Any:
        if self.training and labelled is not None:
            pairs = labelled.to(x.device, torch.bool)[:, 1:].nonzero()
            pairs[:, 1] += 1
            out = self._run(x[pairs[:, 0]], self.codes[pairs[:, 1] - 1])
            if isinstance(out, dict):
                return {"out": out["out"], "aux": out.get("aux", []), "pairs": pairs}
            return {"out": out, "aux": [], "pairs": pairs}
        n, k1 = x.shape[0], self.num_classes - 1
        xr = x.unsqueeze(1).expand(n, k1, *x.shape[1:]).reshape(n * k1, *x.shape[1:])
        code = self.codes.unsqueeze(0).expand(n, k1, k1).reshape(n * k1, k1)
        out = self._run(xr, code)
        if isinstance(out, dict):
            out = out["out"]
        fg = out.reshape(n, k1, *out.shape[-2:])
        bg = torch.full_like(fg[:, :1], math.log(self.threshold / (1 - self.threshold)))
        return torch.cat([bg, fg], 1)
