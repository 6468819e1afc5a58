"""An exponential moving average of a model's weights (`train.ema_decay`), the model a run validates and saves."""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """After every optimizer step, each floating tensor of the model's state (weights and batch-norm
    statistics) moves toward the trained one: ema <- decay * ema + (1 - decay) * trained; integer
    buffers (batch counts) are copied. `model` is the averaged copy, in eval mode."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, trained: nn.Module) -> None:
        mine, theirs = self.model.state_dict(), trained.state_dict()
        for key, value in mine.items():
            if value.dtype.is_floating_point:
                value.lerp_(theirs[key].to(value.dtype), 1.0 - self.decay)
            else:
                value.copy_(theirs[key])
