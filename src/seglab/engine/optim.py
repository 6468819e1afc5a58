"""Optimizers and per-iteration learning-rate schedules with optional linear warm-up."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

from ..config import OptimizerConfig, ScheduleConfig


def parameter_groups(model: nn.Module, cfg: OptimizerConfig) -> list[dict]:
    """Trainable parameters; those of `model.encoder` get lr x backbone_lr_mult."""
    encoder = getattr(model, "encoder", None)
    backbone = {id(p) for p in encoder.parameters()} if isinstance(encoder, nn.Module) else set()
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in backbone]
    groups = [{"params": head, "lr": cfg.lr}]
    body = [p for p in model.parameters() if p.requires_grad and id(p) in backbone]
    if body:  # marked: train.freeze_encoder_for holds this group still
        groups.append({"params": body, "lr": cfg.lr * cfg.backbone_lr_mult, "encoder": True})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """The configured optimizer over `parameter_groups(model, cfg)`."""
    params = parameter_groups(model, cfg)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


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
