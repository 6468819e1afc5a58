"""Optimizers, how a recipe's learning rate and weight average follow the batch size, and per-iteration
learning-rate schedules with optional linear warm-up."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ..config import OptimizerConfig, ScheduleConfig


@dataclass(frozen=True)
class BatchScaling:
    """optimizer.lr and train.ema_decay at the effective batch (train.batch_size x train.accumulate_steps) under
    optimizer.lr_scaling from optimizer.reference_batch: the one place a recipe follows its batch size."""
    rule: str  # none | linear | sqrt
    batch: int  # effective batch
    reference_batch: Optional[int]
    base_lr: float  # optimizer.lr as configured
    base_ema_decay: Optional[float]  # train.ema_decay as configured

    @classmethod
    def of(cls, optimizer: OptimizerConfig, batch_size: int, accumulate_steps: int = 1,
           ema_decay: Optional[float] = None) -> "BatchScaling":
        return cls(rule=optimizer.lr_scaling, batch=batch_size * accumulate_steps,
                   reference_batch=optimizer.reference_batch, base_lr=optimizer.lr, base_ema_decay=ema_decay)

    @property
    def ratio(self) -> float:
        """k = batch / reference_batch (1 without scaling)."""
        return 1.0 if self.rule == "none" or not self.reference_batch else self.batch / self.reference_batch

    @property
    def lr(self) -> float:
        k = self.ratio
        return self.base_lr * (k if self.rule == "linear" else math.sqrt(k))

    @property
    def ema_decay(self) -> Optional[float]:
        """decay^k: k times fewer steps per epoch, each weighing as much as k of the reference's."""
        return None if self.base_ema_decay is None else self.base_ema_decay ** self.ratio

    def to_dict(self) -> dict:
        return {"rule": self.rule, "batch": self.batch, "reference_batch": self.reference_batch,
                "ratio": self.ratio, "lr": self.lr, "ema_decay": self.ema_decay}

    def describe(self, warmup_epochs: float = 0.0) -> Optional[str]:
        """The run-start line, or None when nothing is scaled; `warmup_epochs` is schedule.warmup_epochs."""
        if self.rule == "none":
            return None
        if self.ratio == 1:
            return (f"optimizer.lr_scaling {self.rule}: effective batch {self.batch} = reference_batch, lr and "
                    "train.ema_decay as set")
        factor = f"{self.ratio:g}" if self.rule == "linear" else f"sqrt({self.ratio:g})"
        text = (f"optimizer.lr_scaling {self.rule}: effective batch {self.batch} vs reference_batch "
                f"{self.reference_batch}, lr {self.base_lr:g} x {factor} = {self.lr:.3g}")
        if self.base_ema_decay is not None and self.ratio != 1:
            text += f"; train.ema_decay {self.base_ema_decay:g} ^ {self.ratio:g} = {self.ema_decay:.5g}"
        if self.ratio > 1 and warmup_epochs == 0:
            text += " (schedule.warmup_epochs is 0: a raised lr is usually warmed up, e.g. 1-5 epochs)"
        return text


def parameter_groups(model: nn.Module, cfg: OptimizerConfig, lr: Optional[float] = None) -> list[dict]:
    """Trainable parameters at `lr` (default optimizer.lr); those of `model.encoder` get lr x backbone_lr_mult."""
    lr = cfg.lr if lr is None else lr
    encoder = getattr(model, "encoder", None)
    backbone = {id(p) for p in encoder.parameters()} if isinstance(encoder, nn.Module) else set()
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in backbone]
    groups = [{"params": head, "lr": lr}]
    body = [p for p in model.parameters() if p.requires_grad and id(p) in backbone]
    if body:  # marked: train.freeze_encoder_for holds this group still
        groups.append({"params": body, "lr": lr * cfg.backbone_lr_mult, "encoder": True})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimizerConfig, lr: Optional[float] = None) -> torch.optim.Optimizer:
    """The configured optimizer over `parameter_groups(model, cfg, lr)`; `lr` (default optimizer.lr) is the
    base rate, e.g. `BatchScaling.lr`."""
    lr = cfg.lr if lr is None else lr
    params = parameter_groups(model, cfg, lr)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.RMSprop(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(cfg: ScheduleConfig, steps_per_epoch: int, total_epochs: int,
              total_steps: Optional[int] = None) -> Callable[[float], float]:
    """Multiplier of the base learning rate at schedule position `step` (0-based optimizer steps; a
    budgeted run passes fractional positions). The schedule spans `total_steps` (default
    steps_per_epoch x total_epochs); warm-up and step decay stay in epochs of steps_per_epoch."""
    total = max(1, total_steps if total_steps is not None else steps_per_epoch * total_epochs)
    warm = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total // 2 if total_steps is not None else total)
    floor = cfg.min_lr_ratio

    def factor(step: float) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.name == "constant":
            return 1.0
        if cfg.name == "step":
            return cfg.gamma ** (step // (cfg.step_epochs * steps_per_epoch))
        t = min(1.0, (step - warm) / max(1, total - warm))
        if cfg.name == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
        return floor + (1 - floor) * (1 - t) ** cfg.power  # poly

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, total_epochs: int, *,
    total_steps: Optional[int] = None, position: Optional[Callable[[int], float]] = None, accumulate_steps: int = 1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step. Steps, `steps_per_epoch` and `total_steps` count
    batches; with gradient accumulation an optimizer step is `accumulate_steps` batches (fewer at an
    epoch's end), so optimizer step j sits at the batch that starts it. A time-budgeted run passes its
    plan's schedule length (`total_steps`) and `position`, the schedule position of each batch step."""
    factor = lr_factor(cfg, steps_per_epoch, total_epochs, total_steps)
    if accumulate_steps == 1:
        if position is None:
            return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor(position(step)))
    per_epoch = -(-steps_per_epoch // accumulate_steps)  # optimizer steps per epoch
    at_batch = position

    def at_optimizer_step(step: int) -> float:
        epoch, j = divmod(step, per_epoch)
        batch = epoch * steps_per_epoch + min(j * accumulate_steps, steps_per_epoch)
        return factor(at_batch(batch) if at_batch is not None else batch)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, at_optimizer_step)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters())
