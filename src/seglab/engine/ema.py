"""An exponential moving average of a model's weights (`train.ema_decay`), the model a run validates and saves."""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """After every optimizer step, each floating tensor of the model's state (weights and batch-norm
    statistics) moves toward the trained one: ema <- d * ema + (1 - d) * trained; integer buffers (batch
    counts) are copied. `model` is the averaged copy, in eval mode.

    With `warmup`, d = min(decay, (1 + n) / (10 + n)) at the n-th update (as torchvision's and timm's
    references do): without it a short run's average would still hold much of the random initial weights
    (0.999^1000 = 37% after 1000 steps). `updates` is saved in checkpoints so a resumed run goes on alike."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, trained: nn.Module) -> None:
        d = self.current_decay()
        mine, theirs = self.model.state_dict(), trained.state_dict()
        for key, value in mine.items():
            if value.dtype.is_floating_point:
                value.lerp_(theirs[key].to(value.dtype), 1.0 - d)
            else:
                value.copy_(theirs[key])
        self.updates += 1
