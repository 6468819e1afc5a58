"""A run's parts built from its config (`build_training`), one optimizer step (`train_step`) and a
validation (`validate`): what the epoch loop and the speed measurement are made of."""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..artifacts.model_info import ModelInfo
from ..collectives import all_reduce_sum, group_is_initialized
from ..config import Config
from ..data.datasets import DataBundle, EpochSampler, EvalDataset, TrainDataset, build_data, init_loader_worker
from ..data.splits import Split
from ..errors import ConfigError, SeglabError
from ..evaluation.evaluate import run_evaluation
from ..losses import build_loss_from_config, check_loss_config, class_weights_from_counts, pooled_over_ranks, total_loss
from ..models import build_model_from_meta, train_inputs
from ..models.timm_encoder import check_timm_name, pretrained_normalization, timm_base
from ..models.weights import weights_records
from ..tracking import check_trackers
from .distributed import DistInfo, broadcast_buffers, convert_sync_batchnorm
from .ema import ModelEMA
from .optim import BatchScaling, build_optimizer
from .precision import amp_dtype
from .prefetch import DeviceBatches
from .runtime import DeviceFacts, RuntimeChoices, choose_runtime

log = logging.getLogger("seglab")


def _class_weights(cfg: Config, counts: Optional[np.ndarray], image_pixels: Optional[np.ndarray], n: int):
    cw = cfg.loss.class_weights
    if cw is None:
        return None
    if isinstance(cw, list):
        if len(cw) != n:
            raise SeglabError(f"loss.class_weights: expected {n} weights (one per class), got {len(cw)}")
        return torch.tensor(cw, dtype=torch.float32)
    assert counts is not None and image_pixels is not None
    return torch.tensor(class_weights_from_counts(cw, counts, image_pixels), dtype=torch.float32)


@dataclass
class Training:
    """A run's parts, built from its config; nothing is written by building them."""

    cfg: Config
    dist: DistInfo
    device: torch.device
    data: DataBundle
    model_info: ModelInfo  # what its checkpoints carry besides the weights
    model: nn.Module
    net: nn.Module  # the model as trained: wrapped in DDP and / or compiled
    runtime: RuntimeChoices  # precision, loader workers, TF32, cudnn.benchmark (and why)
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    class_weights: Optional[torch.Tensor]
    train_set: TrainDataset
    val_set: EvalDataset
    sampler: EpochSampler
    train_loader: DataLoader
    train_batches: DeviceBatches  # train_loader's batches on the device, one step ahead (what the loop iterates)
    optimizer: torch.optim.Optimizer
    scaling: BatchScaling  # optimizer.lr and train.ema_decay at this run's batch (optimizer.lr_scaling)
    ema: Optional[ModelEMA] = None  # train.ema_decay: the averaged model, validated and saved

    @property
    def precision(self) -> str:
        return self.runtime.precision

    @property
    def eval_model(self) -> nn.Module:
        """The model validated and saved as the run's weights: the moving average when there is one."""
        return self.ema.model if self.ema is not None else self.model


def resolve_normalization(cfg: Config, say: bool = True) -> Config:
    """cfg with a pretrained timm encoder's mean / std (its pretrained config), unless the config sets them:
    the weights only see the inputs they were trained on. The training's config (`Training.cfg`) is this
    copy, so config.yaml, the checkpoint and everything reading them (eval, predict, exports) use the same;
    the config itself is read-only."""
    opts = cfg.model.options()
    given = {"mean", "std"} & cfg.augment.model_fields_set
    if not opts.get("pretrained") or given or cfg.data.in_channels != 3:
        return cfg
    norm = pretrained_normalization(str(opts.get("encoder") or ""))
    if norm is None or (tuple(cfg.augment.mean), tuple(cfg.augment.std)) == norm:
        return cfg
    if say:
        log.info(f"augment.mean {list(norm[0])}, augment.std {list(norm[1])}: from {opts['encoder']}'s pretrained config")
    augment = cfg.augment.model_copy(update={"mean": norm[0], "std": norm[1]})
    return cfg.model_copy(update={"augment": augment})


def check_fine_tuning(cfg: Config, model: nn.Module) -> None:
    """Refuse encoder settings on a model without an encoder: they would change nothing, silently."""
    if isinstance(getattr(model, "encoder", None), nn.Module):
        return
    given = [f"{k} {f'{v:g}' if isinstance(v, float) else v}" for k, v, unset in (
        ("train.freeze_encoder_for", cfg.train.freeze_encoder_for, None),
        ("train.freeze_encoder_bn", cfg.train.freeze_encoder_bn, False),
        ("optimizer.backbone_lr_mult", cfg.optimizer.backbone_lr_mult, 1.0)) if v != unset]
    if given:
        raise ConfigError(f"{', '.join(given)}: model {cfg.model.name} (as configured) has no encoder, so this would "
                          "change nothing; remove it, or use a model with one (e.g. unet with model.encoder: resnet34)")


def build_training(cfg: Config, *, split: Optional[Split], dist: DistInfo, device: torch.device,
                   class_weights: Optional[torch.Tensor] = None, check_files: bool = True,
                   timing_only: bool = False, load_pretrained: bool = True) -> Training:
    """Data, model, loss, loader and optimizer of `cfg` on `device` (the learning-rate schedule is built
    by the caller: its length may come from a time budget)."""
    cfg.train.check_processes(dist.world_size)
    check_loss_config(cfg.loss)  # a misspelt loss fails before the data are decoded
    check_trackers(cfg.tracking)  # so does a tracker whose package is missing
    if timm_base(cfg.model.options().get("encoder")):
        check_timm_name(cfg.model.options()["encoder"])  # so does a misspelt timm encoder
    cfg = resolve_normalization(cfg, say=not timing_only)
    # Data first: every training and validation file is decoded before anything is written.
    data = build_data(cfg.data, cfg.augment, split=split, check=("train", "val") if check_files else ())
    labels = data.labels
    if class_weights is None and timing_only and isinstance(cfg.loss.class_weights, str):
        # A timing-only build decodes no masks, so frequency weights are unknown; a weighted loss
        # costs the same whatever the weights are.
        class_weights = torch.ones(labels.num_classes)
    if class_weights is None:
        class_weights = _class_weights(cfg, data.train_counts, data.train_image_pixels, labels.num_classes)
    lc = cfg.loss
    conditional = {"threshold": lc.conditional_threshold} if lc.strategy == "conditional" else None
    info = ModelInfo(name=cfg.model.name, options=cfg.model.options(), in_channels=cfg.data.in_channels,
                     num_classes=labels.num_classes, labels=labels, mean=tuple(cfg.augment.mean),
                     std=tuple(cfg.augment.std), input_size=tuple(cfg.augment.resize) if cfg.augment.resize else None,
                     image_max=cfg.data.image_max, nodata=cfg.data.nodata, conditional=conditional)
    model = build_model_from_meta(info.model_meta, pretrained=load_pretrained).to(device)
    info = info.with_pretrained(weights_records(model))  # what was loaded (a resume restores last.pt's)
    check_fine_tuning(cfg, model)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dist.enabled and cfg.train.sync_bn:
        model = convert_sync_batchnorm(model, device)
    net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) if dist.enabled else model
    if cfg.train.compile:
        net = torch.compile(net)
    runtime = choose_runtime(cfg.train.amp, cfg.train.num_workers, facts=DeviceFacts.of(device),
                             fixed_input_size=cfg.augment.crop is not None or cfg.augment.resize is not None,
                             procs_on_node=int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size)))
    runtime.apply()
    workers = runtime.num_workers
    loss_fn = build_loss_from_config(lc, ignore_index=labels.ignore_index, weight=class_weights).to(device)
    train_set = TrainDataset(data.readers["train"], cfg.augment)
    val_set = EvalDataset(data.readers["val"], cfg.augment)
    groups = data.readers["train"].source_of if cfg.data.balance_sources and data.sources else None
    sampler = EpochSampler(len(train_set), seed=cfg.seed, groups=groups, rank=dist.rank, num_replicas=dist.world_size)
    train_loader = DataLoader(train_set, batch_size=cfg.train.batch_size // dist.world_size, sampler=sampler,
                              drop_last=len(train_set) > cfg.train.batch_size, num_workers=workers,
                              persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                              worker_init_fn=init_loader_worker if workers > 0 else None)
    scaling = BatchScaling.of(cfg.optimizer, cfg.train.batch_size, cfg.train.accumulate_steps, cfg.train.ema_decay)
    return Training(cfg=cfg, dist=dist, device=device, data=data, model_info=info, model=model, net=net,
                    runtime=runtime, scaler=torch.amp.GradScaler("cuda", enabled=runtime.precision == "fp16"),
                    loss_fn=loss_fn, class_weights=class_weights, train_set=train_set, val_set=val_set,
                    sampler=sampler, train_loader=train_loader, train_batches=DeviceBatches(train_loader, device),
                    optimizer=build_optimizer(model, cfg.optimizer, scaling.lr), scaling=scaling,
                    ema=ModelEMA(model, scaling.ema_decay) if scaling.ema_decay is not None else None)


def train_step(t: Training, images: torch.Tensor, masks: torch.Tensor, labelled: torch.Tensor, where: str, *,
               first: bool = True, last: bool = True, group: int = 1, check: bool = True) -> torch.Tensor:
    """One batch (N, C, H, W) / (N, H, W) / (N, K) of an optimizer step made of `group` batches (gradient
    accumulation): the `first` clears the gradients, each adds its loss / group, the `last` steps the
    optimizer (and the moving average). Returns the batch's detached loss; the caller steps the schedule
    after the last. `check`: refuse a non-finite loss here, which waits for the device (the epoch loop
    checks its summed loss every few steps instead: `check_finite`)."""
    cfg, device = t.cfg, t.device
    images = images.to(device, non_blocking=True)
    masks = masks.to(device, non_blocking=True)
    labelled = labelled.to(device, non_blocking=True)
    batch = {"labelled": labelled}
    if cfg.train.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    dtype = amp_dtype(t.precision)
    # torchrun: every rank computes the loss of the whole global batch (losses pool their sums over ranks),
    # so any loss, Dice included, trains as in one process
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None), pooled_over_ranks(t.dist.enabled):
        outputs = t.net(images, **{name: batch[name] for name in train_inputs(t.model)})
        loss = total_loss(t.loss_fn, outputs, masks, cfg.loss.aux_weight, labelled)
    if check:
        check_finite(float(loss.detach()), where)
    if first:
        t.optimizer.zero_grad(set_to_none=True)
    # each rank's gradient is the global loss's through its own pixels; DDP averages them, so scale back to the sum
    scaled = loss * t.dist.world_size if t.dist.enabled else loss
    # DDP: gradients are averaged over ranks once, at the group's last batch
    with t.net.no_sync() if t.dist.enabled and not last and hasattr(t.net, "no_sync") else contextlib.nullcontext():
        t.scaler.scale(scaled / group if group > 1 else scaled).backward()
    if not last:
        return loss.detach()
    if cfg.train.grad_clip:
        t.scaler.unscale_(t.optimizer)
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), cfg.train.grad_clip)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    if t.ema is not None:
        t.ema.update(t.model)
    return loss.detach()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously to the host); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_finite(loss: float, where: str) -> None:
    """Stop a run whose loss is no longer a number (the weights are lost from there on)."""
    if not np.isfinite(loss):
        raise SeglabError(f"training diverged {where}: loss is {loss}; lower optimizer.lr")


def validate(t: Training, dataset: torch.utils.data.Dataset) -> dict[str, Any]:
    """Metrics of the model on `dataset` (sharded over torchrun ranks and all-reduced)."""
    cfg = t.cfg
    if t.dist.enabled:
        broadcast_buffers(t.eval_model)
    return run_evaluation(t.eval_model, dataset, t.data.labels, device=t.device, batch_size=cfg.eval.batch_size,
                          dilation_ratio=cfg.eval.boundary_dilation_ratio, loss_fn=t.loss_fn,
                          channels_last=cfg.train.channels_last, num_workers=t.runtime.num_workers,
                          shard=(t.dist.rank, t.dist.world_size)).metrics


def rank_mean(values: list[float], device: torch.device) -> list[float]:
    """The mean over torchrun ranks (the values themselves in one process). Every number a time budget plans
    from goes through here: ranks that planned from their own clocks would stop at different steps and
    leave the others waiting in an all-reduce."""
    if not group_is_initialized():
        return values
    world = torch.distributed.get_world_size()
    return [v / world for v in all_reduce_sum(values)]
