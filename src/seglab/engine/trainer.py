"""The training loop, read top to bottom; every knob comes from the config.

`build_training` sets everything up (data, model, loss, loader, optimizer), `train_step` is one
optimizer step, `measure_speed` times a few steps and a validation before epoch 1 (the time estimate
and a time budget's plan come from it), and `fit` runs the epochs into the run folder.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..config import Config, config_differences, config_from_dict, dump_config, load_config
from ..data.datasets import DataBundle, EpochSampler, EvalDataset, TrainDataset, build_data
from ..data.splits import load_split, save_split
from ..durations import format_duration, parse_duration
from ..errors import CheckpointError, ConfigError, SeglabError, brief
from ..evaluation.evaluate import run_evaluation
from ..fileio import atomic_write_text
from ..losses import build_loss, class_weights_from_counts, pooled_over_ranks, total_loss
from ..models import build_model_from_meta
from ..run_dir import RunDir, RunLock
from ..tracking import create_tracker
from .budget import BudgetPlan, Estimate
from ..checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .hardware import describe_hardware
from .distributed import (DistInfo, all_reduce_sum, barrier, broadcast_buffers, cleanup_distributed, convert_sync_batchnorm,
                          group_is_initialized, init_distributed)
from .rank import is_main_process
from .optim import build_optimizer, build_scheduler, count_parameters
from .precision import amp_dtype, resolve_amp

log = logging.getLogger("seglab")

# The clock of every duration the trainer measures and of time budgets; tests replace it with a
# simulated one to check budgets without timing anything.
clock: Callable[[], float] = time.perf_counter


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def _attach_log_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)  # the run's log file gets every line even when the console shows none
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    return handler




@dataclass
class TrainState:
    """Everything of a run's progress that a checkpoint carries besides tensors."""

    epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: Optional[float] = None
    best_epoch: Optional[int] = None
    bad_validations: int = 0
    train_seconds: float = 0.0  # training time so far: measurement, steps, validations, checkpoint writes
    stopped_early: bool = False
    mlflow_run_id: Optional[str] = None
    estimate: Optional[dict[str, Any]] = None  # Estimate.to_dict() measured before epoch 1
    plan: Optional[dict[str, Any]] = None  # BudgetPlan.to_dict() of a time-budgeted run

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainState":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Training:
    """A run's parts, built from its config; nothing is written by building them."""

    cfg: Config
    dist: DistInfo
    device: torch.device
    data: DataBundle
    model_meta: dict[str, Any]
    model: nn.Module
    net: nn.Module  # the model as trained: wrapped in DDP and / or compiled
    precision: str
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    class_weights: Optional[torch.Tensor]
    train_set: TrainDataset
    val_set: EvalDataset
    sampler: EpochSampler
    train_loader: DataLoader
    optimizer: torch.optim.Optimizer

    @property
    def conditional(self) -> bool:
        return self.model_meta["conditional"] is not None


def build_training(cfg: Config, *, split: Optional[dict[str, Any]], dist: DistInfo, device: torch.device,
                   class_weights: Optional[torch.Tensor] = None, check_files: bool = True,
                   timing_only: bool = False) -> Training:
    """Data, model, loss, loader and optimizer of `cfg` on `device` (the learning-rate schedule is built
    by the caller: its length may come from a time budget)."""
    if cfg.train.batch_size % dist.world_size:
        raise SeglabError(f"train.batch_size: {cfg.train.batch_size} (the global batch) does not split over "
                          f"{dist.world_size} processes")
    # Data first: every training and validation file is decoded before anything is written.
    data = build_data(cfg, split=split, check=("train", "val") if check_files else ())
    labels = data.labels
    if class_weights is None and timing_only and isinstance(cfg.loss.class_weights, str):
        # A timing-only build decodes no masks, so frequency weights are unknown; a weighted loss
        # costs the same whatever the weights are.
        class_weights = torch.ones(labels.num_classes)
    if class_weights is None:
        class_weights = _class_weights(cfg, data.train_counts, data.train_image_pixels, labels.num_classes)
    lc = cfg.loss
    conditional = {"threshold": lc.conditional_threshold} if lc.strategy == "conditional" else None
    model_meta = {"name": cfg.model.name, "options": cfg.model.options(), "in_channels": cfg.data.in_channels,
                  "num_classes": labels.num_classes, "conditional": conditional}
    model = build_model_from_meta(model_meta).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dist.enabled and cfg.train.sync_bn:
        model = convert_sync_batchnorm(model, device)
    net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) if dist.enabled else model
    if cfg.train.compile:
        net = torch.compile(net)
    precision = resolve_amp(cfg.train.amp, device)
    loss_fn = build_loss(lc.name, ignore_index=labels.ignore_index, weight=class_weights, ce_weight=lc.ce_weight,
                         dice_weight=lc.dice_weight, dice_smooth=lc.dice_smooth, strategy=lc.strategy,
                         exclusion_weight=lc.exclusion_weight).to(device)
    train_set = TrainDataset(data.loaders["train"], cfg)
    val_set = EvalDataset(data.loaders["val"], cfg)
    groups = data.loaders["train"].source_of if cfg.data.balance_sources and data.sources else None
    sampler = EpochSampler(len(train_set), seed=cfg.seed, groups=groups, rank=dist.rank, num_replicas=dist.world_size)
    train_loader = DataLoader(train_set, batch_size=cfg.train.batch_size // dist.world_size, sampler=sampler,
                              drop_last=len(train_set) > cfg.train.batch_size, num_workers=cfg.train.num_workers,
                              persistent_workers=cfg.train.num_workers > 0, pin_memory=device.type == "cuda")
    return Training(cfg=cfg, dist=dist, device=device, data=data, model_meta=model_meta, model=model, net=net,
                    precision=precision, scaler=torch.amp.GradScaler("cuda", enabled=precision == "fp16"),
                    loss_fn=loss_fn, class_weights=class_weights, train_set=train_set, val_set=val_set,
                    sampler=sampler, train_loader=train_loader, optimizer=build_optimizer(model, cfg.optimizer))


def train_step(t: Training, images: torch.Tensor, masks: torch.Tensor, labelled: torch.Tensor,
               where: str) -> torch.Tensor:
    """One optimizer step on a batch (N, C, H, W) / (N, H, W) / (N, K); returns the detached loss.
    The caller steps the learning-rate schedule."""
    cfg, device = t.cfg, t.device
    images = images.to(device, non_blocking=True)
    masks = masks.to(device, non_blocking=True)
    labelled = labelled.to(device, non_blocking=True)
    if cfg.train.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    dtype = amp_dtype(t.precision)
    # torchrun: every rank computes the loss of the whole global batch (losses pool their sums over ranks),
    # so any loss, Dice included, trains as in one process
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None), pooled_over_ranks(t.dist.enabled):
        outputs = t.net(images, labelled) if t.conditional else t.net(images)
        loss = total_loss(t.loss_fn, outputs, masks, cfg.loss.aux_weight, labelled)
    if not torch.isfinite(loss):
        raise SeglabError(f"training diverged at {where}: loss is {float(loss.detach())}; lower optimizer.lr")
    t.optimizer.zero_grad(set_to_none=True)
    # each rank's gradient is the global loss's through its own pixels; DDP averages them, so scale back to the sum
    t.scaler.scale(loss * t.dist.world_size if t.dist.enabled else loss).backward()
    if cfg.train.grad_clip:
        t.scaler.unscale_(t.optimizer)
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), cfg.train.grad_clip)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    return loss.detach()


def validate(t: Training, dataset: torch.utils.data.Dataset) -> dict[str, Any]:
    """Metrics of the model on `dataset` (sharded over torchrun ranks and all-reduced)."""
    cfg = t.cfg
    if t.dist.enabled:
        broadcast_buffers(t.model)
    return run_evaluation(t.model, dataset, t.data.labels, device=t.device, batch_size=cfg.eval.batch_size,
                          dilation_ratio=cfg.eval.boundary_dilation_ratio, loss_fn=t.loss_fn,
                          channels_last=cfg.train.channels_last, num_workers=cfg.train.num_workers,
                          shard=(t.dist.rank, t.dist.world_size)).metrics


def measure_speed(t: Training, steps: int) -> Estimate:
    """Time `steps` training steps of epoch 1 (the first is warm-up and not counted; data loading
    included) and a validation of a few images scaled to the whole split, then put the model,
    optimizer and random states back as they were: the run trains exactly as without the measurement."""
    start = clock()
    saved_model = copy.deepcopy(t.model.state_dict())
    saved_opt = copy.deepcopy(t.optimizer.state_dict())
    saved_scaler = copy.deepcopy(t.scaler.state_dict())
    saved_rng = rng_state()
    t.model.train()
    t.sampler.set_epoch(1)
    steps = max(1, min(steps, len(t.train_loader)))
    times: list[float] = []
    mark = clock()
    for i, (images, masks, labelled) in enumerate(t.train_loader):
        train_step(t, images, masks, labelled, where="the speed measurement")
        now = clock()
        times.append(now - mark)
        mark = now
        if i + 1 >= steps:
            break
    step_seconds = float(np.mean(times[1:] if len(times) > 1 else times))
    # validation: one batch to warm up, then two timed batches scaled to the split
    n_val, bs = len(t.val_set), t.cfg.eval.batch_size * t.dist.world_size
    warm = min(n_val, bs)
    timed = list(range(warm, min(n_val, warm + 2 * bs))) or list(range(warm))
    validate(t, Subset(t.val_set, range(warm)))
    mark = clock()
    validate(t, Subset(t.val_set, timed))
    val_seconds = (clock() - mark) * n_val / len(timed)
    t.model.load_state_dict(saved_model)
    t.optimizer.load_state_dict(saved_opt)
    t.scaler.load_state_dict(saved_scaler)
    set_rng_state(saved_rng)
    step_seconds, val_seconds, probe_seconds = rank_mean([step_seconds, val_seconds, clock() - start], t.device)
    return Estimate(step_seconds=step_seconds, val_seconds=val_seconds, batch_size=t.cfg.train.batch_size,
                    steps_per_epoch=len(t.train_loader), probe_seconds=probe_seconds)


def rank_mean(values: list[float], device: torch.device) -> list[float]:
    """The mean over torchrun ranks (the values themselves in one process). Every number a time budget plans
    from goes through here: ranks that planned from their own clocks would stop at different steps and
    leave the others waiting in an all-reduce."""
    if not group_is_initialized():
        return values
    world = torch.distributed.get_world_size()
    return [v / world for v in all_reduce_sum(values, device)]


def estimate_training(cfg: Config) -> Estimate:
    """Measure a config's training speed on its own pipeline without training or writing anything
    (what `seglab compare` prints for every experiment before the first starts)."""
    dist, device = init_distributed(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.seed)
    t = build_training(cfg, split=None, dist=dist, device=device, check_files=False, timing_only=True)
    return measure_speed(t, max(1, cfg.train.estimate_steps))


def describe_plan(cfg: Config, est: Estimate, plan: Optional[BudgetPlan]) -> str:
    """The line printed before epoch 1: how long the run will take, or what its budget buys."""
    if plan is None:
        return (f"estimate: {est.describe(cfg.train.epochs, cfg.train.val_every)}; "
                "set train.time_budget (or --budget 30m) to fit a budget")
    return (f"time budget {format_duration(plan.budget_seconds)}: planned {plan.end_step} steps = "
            f"{plan.end_step / plan.steps_per_epoch:.1f} epochs, the whole {cfg.schedule.name} schedule "
            f"({est.train_images_per_s:.1f} train img/s, {format_duration(est.val_seconds)} per validation, "
            f"measured in {est.probe_seconds:.1f} s)")


def fit(cfg: Config, *, resume: bool = False, overwrite: bool = False, split: Optional[dict[str, Any]] = None,
        on_epoch: Optional[Callable[[dict[str, Any]], None]] = None, estimate: Optional[Estimate] = None) -> RunDir:
    """Train `cfg` into its run folder (or continue the run there); returns the run folder.

    `split` (split.json form) replaces resolving the config's sources, e.g. one cross-validation fold.
    `on_epoch(row)` sees every finished epoch's metrics row (e.g. to prune a tuning trial by raising).
    `estimate`: the speed measured beforehand (`estimate_training`), instead of measuring it here.
    Writes config.yaml, split.json, metrics.csv, train.log, tb/, checkpoints/{last,best}.pt, summary.json,
    holding the run folder's lock throughout (torchrun: rank 0).
    """
    run = RunDir(cfg.run_dir())
    with RunLock(run) if is_main_process() else contextlib.nullcontext():
        return _fit(run, cfg, resume=resume, overwrite=overwrite, split=split, on_epoch=on_epoch, estimate=estimate)


def _resume_point(run: RunDir, cfg: Config, main: bool) -> dict[str, Any]:
    """last.pt, checked against the run's config.yaml, with the run folder put in the state that last.pt
    describes: temporaries of interrupted writes removed, best.pt completed when a stop came between
    writing last.pt and best.pt of an improving epoch, metrics.csv as of last.pt."""
    ckpt = load_checkpoint(run.last)
    if not main:  # torchrun: rank 0 checks (and may rewrite config.yaml); a refusal there stops every rank
        return ckpt
    stored = load_config(run.config)  # the file alone, without this resume's --set / --budget
    try:
        saved = config_from_dict(ckpt["config"], str(run.last))
    except ConfigError as exc:
        raise CheckpointError(f"{run.last}: its config is not valid ({exc})") from None
    diff = config_differences(saved, stored)
    if diff:
        raise SeglabError(f"{run.config}: differs from the run's checkpoints/last.pt at {diff} (checkpoint vs file); "
                          "restore the run's config.yaml, or train a new run (--resume continues the run that was started)")
    run.clean_temporaries()
    state = ckpt["train_state"]
    if state.get("best_epoch") is not None and state["best_epoch"] == state.get("epoch"):
        # last.pt of an improving epoch holds exactly what best.pt must: the stop came before best.pt's write
        best = load_checkpoint(run.best)["train_state"].get("epoch") if run.best.is_file() else None
        if best != state["best_epoch"]:
            save_checkpoint(run.best, {k: v for k, v in ckpt.items() if k not in ("format", "version")})
            log.info(f"{run.best}: completed from last.pt (the run stopped between the two writes)")
    run.write_metrics_csv(TrainState.from_dict(state).history)
    if dump_config(cfg) != dump_config(stored):  # resumed with other settings (--budget, --set): recorded
        atomic_write_text(run.config, dump_config(cfg))
    return ckpt


def _fit(run: RunDir, cfg: Config, *, resume: bool, overwrite: bool, split: Optional[dict[str, Any]],
         on_epoch: Optional[Callable[[dict[str, Any]], None]], estimate: Optional[Estimate]) -> RunDir:
    if not resume:
        run.check_new(overwrite)
    ckpt = _resume_point(run, cfg, is_main_process()) if resume else None
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.seed)
    owns_group = not group_is_initialized()  # compare / k-fold hold one group over all their trainings
    dist, device = init_distributed(cfg.train.device)
    main = dist.is_main  # only rank 0 writes the run folder and logs
    barrier()  # every rank has checked the folder before rank 0 creates it
    log_level = log.level
    if not main:
        log.setLevel(logging.WARNING)

    t = build_training(cfg, split=load_split(run.split) if resume else split, dist=dist, device=device,
                       class_weights=ckpt["class_weights"] if ckpt is not None else None, check_files=not resume)
    labels, model, optimizer = t.data.labels, t.model, t.optimizer
    state = TrainState.from_dict(ckpt["train_state"]) if ckpt is not None else TrainState()
    if ckpt is None and main:
        run.prepare_new(overwrite)
        atomic_write_text(run.config, dump_config(cfg))
        save_split(run.split, t.data.split)
    handler = _attach_log_file(run.log) if main else None
    n_params = count_parameters(model)
    if resume:
        log.info(f"resuming {run.path} after epoch {state.epoch} ({format_duration(state.train_seconds)} of training so far)")
    else:
        log.info(f"run {run.path}: {cfg.model.name} ({n_params:,} parameters) on {device}"
                 f"{f' x {dist.world_size} processes' if dist.enabled else ''}"
                 f"{f', {t.precision} autocast' if t.precision != 'none' else ''}, "
                 f"{len(t.train_set)} train / {len(t.val_set)} val images, {labels.num_classes} classes")
        for src in t.data.sources:
            log.info(f"source {src.name} ({src.config.split}): annotates "
                     f"{', '.join(labels.names[c] for c in src.annotated)}; strategy {cfg.loss.strategy}")

    # How long the run will take, measured on its own pipeline; a time budget's plan comes from it.
    budget = parse_duration(cfg.train.time_budget) if cfg.train.time_budget is not None else None
    if ckpt is None and (cfg.train.estimate_steps > 0 or budget is not None):
        if estimate is None:
            estimate = measure_speed(t, max(1, cfg.train.estimate_steps))
            state.train_seconds += estimate.probe_seconds
        state.estimate = estimate.to_dict()
        if budget is not None:
            state.plan = BudgetPlan.create(budget, state.train_seconds, estimate, cfg.train.val_every).to_dict()
    plan = BudgetPlan.from_dict(state.plan) if state.plan is not None else None
    if plan is not None and budget is not None and budget != plan.budget_seconds:  # resumed with a new budget
        log.info(f"time budget changed from {format_duration(plan.budget_seconds)} to {format_duration(budget)}")
        plan.budget_seconds = budget
    if ckpt is None and state.estimate is not None:
        log.info(describe_plan(cfg, Estimate(**state.estimate), plan))
    spe = len(t.train_loader)
    scheduler = build_scheduler(optimizer, cfg.schedule, spe, cfg.train.epochs,
                                position=plan.position if plan is not None else None,
                                total_steps=plan.schedule_steps if plan is not None else None)
    if ckpt is not None:  # after building the schedule, which sets the optimizer's first learning rate
        if ckpt["model"]["num_classes"] != labels.num_classes or ckpt["labels"]["names"] != labels.names:
            raise CheckpointError(f"{run.last}: trained for {ckpt['model']['num_classes']} classes "
                                  f"({', '.join(ckpt['labels']['names'][:5])}...), but the data now gives "
                                  f"{labels.num_classes} ({', '.join(labels.names[:5])}...); the palette or class "
                                  "settings changed since the run started")
        try:
            model.load_state_dict(ckpt["model_state"])
        except RuntimeError as exc:
            raise CheckpointError(f"{run.last}: weights do not fit the run's model ({brief(exc)})") from None
        optimizer.load_state_dict(ckpt["optimizer_state"])
        scheduler.load_state_dict(ckpt["scheduler_state"])
        set_rng_state(ckpt["rng"])

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run.tensorboard), purge_step=state.epoch + 1 if resume else None) if main else None
    tracker = create_tracker(cfg.tracking, cfg.output.name, state.mlflow_run_id) if main else None
    if tracker is not None and not resume:
        tracker.log_config(cfg.to_dict())
    state.mlflow_run_id = tracker.run_id if tracker is not None else None
    better = (lambda a, b: a > b) if cfg.train.best_mode == "max" else (lambda a, b: a < b)

    def planned_epochs() -> int:
        return plan.planned_epochs if plan is not None else cfg.train.epochs

    def finished() -> bool:
        done = state.global_step >= plan.end_step if plan is not None else state.epoch >= cfg.train.epochs
        return done or state.stopped_early

    def payload() -> dict[str, Any]:
        if plan is not None:
            state.plan = plan.to_dict()
        return {
            "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict(), "train_state": asdict(state), "rng": rng_state(),
            "class_weights": t.class_weights, "config": cfg.to_dict(), "labels": labels.to_dict(),
            "model": t.model_meta,
            "normalization": {"mean": list(cfg.augment.mean), "std": list(cfg.augment.std)},
            "input_size": list(cfg.augment.resize) if cfg.augment.resize else None,
        }

    # the recent speed a budget re-plans from: long enough to average out step-to-step noise, short enough
    # to notice a machine that slows down within an epoch or two
    step_times: deque[float] = deque(maxlen=max(50, 2 * spe))
    mark = clock()  # training time is counted from here, in state.train_seconds at every epoch end

    def replan(used: float, seen_per_s: float) -> None:
        """Re-check the budget plan from the time used and the recent step speed (all ranks alike)."""
        assert plan is not None
        used, speed = rank_mean([used, float(np.mean(step_times))], device)
        old_end = plan.end_step
        if (plan.recheck(state.global_step, used, step_seconds=speed)
                and abs(plan.end_step - old_end) >= 0.05 * old_end):  # small corrections are not news
            log.info(f"re-planned at step {state.global_step}: {old_end} -> {plan.end_step} steps "
                     f"({seen_per_s:.1f} train img/s now; {format_duration(used)} of "
                     f"{format_duration(plan.budget_seconds)} used)")
    try:
        while not finished():
            epoch = state.epoch + 1
            t.sampler.set_epoch(epoch)
            model.train()
            t0 = clock()
            loss_sum, seen, data_seconds, step_sum, val_seconds = 0.0, 0, 0.0, 0.0, 0.0
            t_data = t_step = clock()
            bar = tqdm(t.train_loader, desc=f"epoch {epoch}/{planned_epochs()}", unit="batch", leave=False,
                       disable=not (main and sys.stderr.isatty()), dynamic_ncols=True)
            for images, masks, labelled in bar:
                data_seconds += clock() - t_data  # time spent waiting for the loader
                loss = train_step(t, images, masks, labelled, where=f"epoch {epoch}, step {state.global_step}")
                scheduler.step()
                state.global_step += 1
                loss_sum += loss.item() * images.shape[0]
                seen += images.shape[0]
                now = clock()
                step_times.append(now - t_step)
                step_sum += now - t_step
                t_step = now
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{seen / max(now - t0, 1e-9):.1f}")
                if plan is not None:
                    used = state.train_seconds + (now - mark)
                    if state.global_step % spe == 0:  # this epoch's validation and writes are still to come
                        used += plan.epoch_overhead_seconds + (plan.val_seconds if epoch % cfg.train.val_every == 0 else 0)
                    if len(step_times) >= 3:
                        replan(used, seen / max(now - t0, 1e-9))
                    if state.global_step >= plan.end_step:
                        break  # the plan ends inside this epoch: validate and stop
                t_data = clock()
            train_time = clock() - t0
            local_seen = seen
            loss_sum, seen = all_reduce_sum([loss_sum, float(seen)], device)
            # loader vs model throughput: a loader slower than the model starves it
            row: dict[str, Any] = {"epoch": epoch, "step": state.global_step, "train_loss": loss_sum / max(seen, 1),
                                   "lr": optimizer.param_groups[0]["lr"], "train_images_per_s": seen / max(train_time, 1e-9),
                                   "loader_images_per_s": local_seen / max(data_seconds, 1e-9),
                                   "model_images_per_s": local_seen / max(train_time - data_seconds, 1e-9)}
            last_epoch = (state.global_step >= plan.end_step) if plan is not None else epoch >= cfg.train.epochs
            improved = False
            if epoch % cfg.train.val_every == 0 or last_epoch:
                t_val = clock()
                m = validate(t, t.val_set)
                val_seconds = clock() - t_val
                if plan is not None:
                    plan.val_seconds = rank_mean([val_seconds], device)[0]
                row.update(val_loss=m["loss"], val_miou=m["miou"], val_pixel_accuracy=m["pixel_accuracy"],
                           val_mean_boundary_iou=m["mean_boundary_iou"])
                value = m["loss"] if cfg.train.best_metric == "val_loss" else m[cfg.train.best_metric]
                if not math.isnan(value) and (state.best_value is None or better(value, state.best_value)):
                    state.best_value, state.best_epoch, state.bad_validations = value, epoch, 0
                    improved = True
                else:
                    state.bad_validations += 1
                    patience = cfg.train.early_stopping_patience
                    if patience is not None and state.bad_validations >= patience:
                        state.stopped_early = True
            now = clock()
            row["epoch_seconds"] = now - t0
            state.train_seconds += now - mark  # the previous epoch's checkpoint writes count here too
            mark = now
            row["elapsed_seconds"] = state.train_seconds
            state.history.append(row)
            state.epoch = epoch
            # last.pt is the resume point: written after the epoch is complete, atomically.
            if main:
                save_checkpoint(run.last, payload())
                if improved:
                    save_checkpoint(run.best, payload())
                run.write_metrics_csv(state.history)
                for key, value in row.items():
                    if key != "epoch" and value is not None:
                        writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key, value, epoch)
                writer.flush()
                if tracker is not None:
                    tracker.log_epoch(row)
            barrier()  # a resumed rank must find this epoch's last.pt
            if plan is not None:  # what an epoch costs beyond its steps and validation: loader start, writes, logs
                plan.epoch_overhead_seconds = max(0.0, rank_mean([clock() - t0 - step_sum - val_seconds], device)[0])
                if not last_epoch and step_times:
                    # the validation just measured may have freed (or taken) time that the next step's re-check
                    # would see too late: a plan whose next step is its last could not use it
                    replan(state.train_seconds + (clock() - mark), row["train_images_per_s"])
            val_txt = (f" val_loss {row['val_loss']:.4f} mIoU {row['val_miou']:.4f} pixel_acc {row['val_pixel_accuracy']:.4f} "
                       f"BIoU {row['val_mean_boundary_iou']:.4f}{' *' if improved else ''}" if "val_miou" in row else "")
            log.info(f"epoch {epoch}/{planned_epochs()} train_loss {row['train_loss']:.4f}{val_txt} "
                     f"lr {row['lr']:.3g} {row['train_images_per_s']:.1f} img/s (loader {row['loader_images_per_s']:.0f}, "
                     f"model {row['model_images_per_s']:.1f}) {row['epoch_seconds']:.1f} s")
            if on_epoch is not None:
                on_epoch(row)
            if state.stopped_early:
                log.info(f"early stopping: no improvement of {cfg.train.best_metric} in {cfg.train.early_stopping_patience} validations")
        best = "none" if state.best_value is None else f"{state.best_value:.4f}"
        log.info(f"training done: {state.epoch} epochs ({state.global_step} steps) in {format_duration(state.train_seconds)}"
                 f"{_budget_note(plan)}"
                 f"{_estimate_vs_actual(state, cfg, plan)}; best {cfg.train.best_metric} {best} at epoch {state.best_epoch}")
    finally:
        if writer is not None:
            writer.close()
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
        if owns_group:
            cleanup_distributed()
        log.setLevel(log_level)
    if not main:
        return run
    if tracker is not None:
        tracker.log_artifact(run.best, "checkpoints")
    run.write_json(run.summary, {
        "mlflow_run_id": state.mlflow_run_id, "model": cfg.model.name, "parameters": n_params, "device": str(device),
        "hardware": describe_hardware(device), "torch": torch.__version__, "precision": t.precision, "class_names": labels.names,
        "best_metric": cfg.train.best_metric, "best_value": state.best_value, "best_epoch": state.best_epoch,
        "timing": _timing_summary(state, cfg, plan, spe),
    })
    return run


def _budget_note(plan: Optional[BudgetPlan]) -> str:
    return "" if plan is None else f" of a {format_duration(plan.budget_seconds)} budget, re-planned {plan.replans} times"


def _estimated_seconds(state: TrainState, cfg: Config, plan: Optional[BudgetPlan]) -> Optional[float]:
    """What the measurement before epoch 1 predicted for the run as configured (the plan's own length
    when budgeted), measurement included."""
    if state.estimate is None:
        return None
    est = Estimate(**state.estimate)
    if plan is not None:  # the first plan's length at the measured speeds
        first = BudgetPlan(budget_seconds=plan.budget_seconds, steps_per_epoch=plan.steps_per_epoch,
                           val_every=plan.val_every, end_step=plan.schedule_steps, schedule_steps=plan.schedule_steps,
                           step_seconds=est.step_seconds, val_seconds=est.val_seconds)
        return est.probe_seconds + first.cost(0, plan.schedule_steps)
    return est.probe_seconds + est.seconds_for(cfg.train.epochs, cfg.train.val_every)


def _estimate_vs_actual(state: TrainState, cfg: Config, plan: Optional[BudgetPlan]) -> str:
    expected = _estimated_seconds(state, cfg, plan)
    if expected is None or state.stopped_early:
        return ""
    return f" (estimated {format_duration(expected)}{' at the first plan' if plan is not None else ''})"


def _timing_summary(state: TrainState, cfg: Config, plan: Optional[BudgetPlan], steps_per_epoch: int) -> dict[str, Any]:
    hist = state.history
    out: dict[str, Any] = {
        "epochs_run": state.epoch, "steps_run": state.global_step, "train_seconds": state.train_seconds,
        "mean_epoch_seconds": state.train_seconds / max(state.epoch, 1),
        "train_images_per_s": float(np.mean([r["train_images_per_s"] for r in hist])) if hist else None,
        "steps_per_epoch": steps_per_epoch,
        "estimate": state.estimate, "estimated_seconds": _estimated_seconds(state, cfg, plan),
    }
    if plan is not None:
        out.update(budget_seconds=plan.budget_seconds, planned_steps=plan.end_step,
                   planned_epochs=round(plan.end_step / steps_per_epoch, 2), replans=plan.replans,
                   budget_used=state.train_seconds / plan.budget_seconds)
    return out
