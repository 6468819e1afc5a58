"""The training loop: one function, read top to bottom; every knob comes from the config."""
from __future__ import annotations

import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import Config, dump_config
from ..data.datasets import EpochSampler, EvalDataset, TrainDataset, build_data
from ..data.splits import load_split, save_split
from ..errors import SeglabError
from ..evaluation.evaluate import run_evaluation
from ..fileio import atomic_write_text
from ..losses import build_loss, class_weights_from_counts, total_loss
from ..models import build_model_from_meta
from ..reporting.run_dir import RunDir
from ..reporting.tracking import create_tracker
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .distributed import (all_reduce_sum, barrier, cleanup_distributed, convert_sync_batchnorm,
                          group_is_initialized, init_distributed, resolve_device)
from .optim import build_optimizer, build_scheduler, count_parameters
from .precision import amp_dtype, resolve_amp

log = logging.getLogger("seglab")


def pick_device(name: str) -> torch.device:
    """train.device ('auto', 'cpu', 'cuda[:N]') -> the device of a single process."""
    return resolve_device(name, 0)


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


def fit(cfg: Config, *, resume: bool = False, overwrite: bool = False, split: Optional[dict[str, Any]] = None,
        on_epoch: Optional[Callable[[dict[str, Any]], None]] = None) -> RunDir:
    """Train `cfg` into its run folder (or continue the run there); returns the run folder.

    `split` (split.json form) replaces resolving the config's sources, e.g. one cross-validation fold.
    `on_epoch(row)` sees every finished epoch's metrics row (e.g. to prune a tuning trial by raising).
    Writes config.yaml, split.json, metrics.csv, train.log, tb/ and checkpoints/{last,best}.pt.
    """
    run = RunDir(cfg.run_dir())
    ckpt = load_checkpoint(run.last) if resume else None
    if not resume and run.path.exists() and any(run.path.iterdir()) and not overwrite:
        raise SeglabError(f"{run.path}: run folder exists; pass --resume to continue it or --overwrite to replace it")
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
    if cfg.train.batch_size % dist.world_size:
        raise SeglabError(f"train.batch_size: {cfg.train.batch_size} (the global batch) does not split over "
                          f"{dist.world_size} processes")
    batch_size = cfg.train.batch_size // dist.world_size

    # Data first: every training and validation file is decoded before anything is written.
    split = load_split(run.split) if resume else split
    data = build_data(cfg, split=split, check=() if resume else ("train", "val"))
    labels = data.labels
    weights = (ckpt["class_weights"] if ckpt is not None else
               _class_weights(cfg, data.train_counts, data.train_image_pixels, labels.num_classes))
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
    autocast_dtype = amp_dtype(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    loss_fn = build_loss(lc.name, ignore_index=labels.ignore_index, weight=weights, ce_weight=lc.ce_weight,
                         dice_weight=lc.dice_weight, dice_smooth=lc.dice_smooth, strategy=lc.strategy,
                         exclusion_weight=lc.exclusion_weight).to(device)
    train_set = TrainDataset(data.loaders["train"], cfg)
    val_set = EvalDataset(data.loaders["val"], cfg)
    groups = data.loaders["train"].source_of if cfg.data.balance_sources and data.sources else None
    sampler = EpochSampler(len(train_set), seed=cfg.seed, groups=groups, rank=dist.rank, num_replicas=dist.world_size)
    train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=len(train_set) > cfg.train.batch_size,
                              num_workers=cfg.train.num_workers, persistent_workers=cfg.train.num_workers > 0,
                              pin_memory=device.type == "cuda")
    optimizer = build_optimizer(model, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.schedule, len(train_loader), cfg.train.epochs)

    state: dict[str, Any] = {"epoch": 0, "global_step": 0, "history": [], "best_value": None, "best_epoch": None,
                             "bad_validations": 0, "train_seconds": 0.0, "stopped_early": False}
    if ckpt is not None:
        model.load_state_dict(ckpt["model_state"])
        optimizer.load_state_dict(ckpt["optimizer_state"])
        scheduler.load_state_dict(ckpt["scheduler_state"])
        state.update(ckpt["train_state"])
        set_rng_state(ckpt["rng"])
    else:
        if main:
            run.prepare_new(overwrite)
            atomic_write_text(run.config, dump_config(cfg))
            save_split(run.split, data.split)
    handler = _attach_log_file(run.log) if main else None
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run.tensorboard), purge_step=state["epoch"] + 1 if resume else None) if main else None
    tracker = create_tracker(cfg.tracking, cfg.output.name, state.get("mlflow_run_id")) if main else None
    if tracker is not None and not resume:
        tracker.log_config(cfg.to_dict())
    state["mlflow_run_id"] = tracker.run_id if tracker is not None else None
    n_params = count_parameters(model)
    if resume:
        log.info(f"resuming {run.path} after epoch {state['epoch']} of {cfg.train.epochs}")
    else:
        log.info(f"run {run.path}: {cfg.model.name} ({n_params:,} parameters) on {device}"
                 f"{f' x {dist.world_size} processes' if dist.enabled else ''}"
                 f"{f', {precision} autocast' if precision != 'none' else ''}, "
                 f"{len(train_set)} train / {len(val_set)} val images, {labels.num_classes} classes")
        for src in data.sources:
            log.info(f"source {src.name} ({src.config.split}): annotates "
                     f"{', '.join(labels.names[c] for c in src.annotated)}; strategy {lc.strategy}")
    better = (lambda a, b: a > b) if cfg.train.best_mode == "max" else (lambda a, b: a < b)

    def payload() -> dict[str, Any]:
        return {
            "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict(), "train_state": dict(state), "rng": rng_state(),
            "class_weights": weights, "config": cfg.to_dict(), "labels": labels.to_dict(),
            "model": model_meta,
            "normalization": {"mean": list(cfg.augment.mean), "std": list(cfg.augment.std)},
            "input_size": list(cfg.augment.resize) if cfg.augment.resize else None,
        }

    try:
        while state["epoch"] < cfg.train.epochs and not state["stopped_early"]:
            epoch = state["epoch"] + 1
            sampler.set_epoch(epoch)
            model.train()
            t0 = time.perf_counter()
            loss_sum, seen, data_seconds = 0.0, 0, 0.0
            t_data = time.perf_counter()
            bar = tqdm(train_loader, desc=f"epoch {epoch}/{cfg.train.epochs}", unit="batch", leave=False,
                       disable=not (main and sys.stderr.isatty()), dynamic_ncols=True)
            for images, masks, labelled in bar:
                data_seconds += time.perf_counter() - t_data  # time spent waiting for the loader
                images = images.to(device, non_blocking=True)
                masks = masks.to(device, non_blocking=True)
                labelled = labelled.to(device, non_blocking=True)
                if cfg.train.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    outputs = net(images, labelled) if conditional else net(images)
                    loss = total_loss(loss_fn, outputs, masks, cfg.loss.aux_weight, labelled)
                if not torch.isfinite(loss):
                    raise SeglabError(f"training diverged at epoch {epoch}, step {state['global_step']}: loss is {float(loss)}; "
                                      "lower optimizer.lr")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.train.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                state["global_step"] += 1
                loss_sum += loss.item() * images.shape[0]
                seen += images.shape[0]
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{seen / (time.perf_counter() - t0):.1f}")
                t_data = time.perf_counter()
            train_time = time.perf_counter() - t0
            local_seen = seen
            loss_sum, seen = all_reduce_sum([loss_sum, float(seen)], device)
            # loader vs model throughput: a loader slower than the model starves it
            row: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1),
                                   "lr": optimizer.param_groups[0]["lr"], "train_images_per_s": seen / train_time,
                                   "loader_images_per_s": local_seen / max(data_seconds, 1e-9),
                                   "model_images_per_s": local_seen / max(train_time - data_seconds, 1e-9)}
            improved = False
            if epoch % cfg.train.val_every == 0 or epoch == cfg.train.epochs:
                res = run_evaluation(model, val_set, labels, device=device, batch_size=cfg.eval.batch_size,
                                     dilation_ratio=cfg.eval.boundary_dilation_ratio, loss_fn=loss_fn,
                                     channels_last=cfg.train.channels_last, num_workers=cfg.train.num_workers,
                                     shard=(dist.rank, dist.world_size))
                m = res.metrics
                row.update(val_loss=m["loss"], val_miou=m["miou"], val_pixel_accuracy=m["pixel_accuracy"],
                           val_mean_boundary_iou=m["mean_boundary_iou"])
                value = m["loss"] if cfg.train.best_metric == "val_loss" else m[cfg.train.best_metric]
                if not math.isnan(value) and (state["best_value"] is None or better(value, state["best_value"])):
                    state.update(best_value=value, best_epoch=epoch, bad_validations=0)
                    improved = True
                else:
                    state["bad_validations"] += 1
                    patience = cfg.train.early_stopping_patience
                    if patience is not None and state["bad_validations"] >= patience:
                        state["stopped_early"] = True
            row["epoch_seconds"] = time.perf_counter() - t0
            state["train_seconds"] += row["epoch_seconds"]
            state["history"].append(row)
            state["epoch"] = epoch
            # last.pt is the resume point: written after the epoch is complete, atomically.
            if main:
                save_checkpoint(run.last, payload())
                if improved:
                    save_checkpoint(run.best, payload())
                run.write_metrics_csv(state["history"])
                for key, value in row.items():
                    if key != "epoch" and value is not None:
                        writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key, value, epoch)
                writer.flush()
                if tracker is not None:
                    tracker.log_epoch(row)
            barrier()  # a resumed rank must find this epoch's last.pt
            val_txt = (f" val_loss {row['val_loss']:.4f} mIoU {row['val_miou']:.4f} pixel_acc {row['val_pixel_accuracy']:.4f} "
                       f"BIoU {row['val_mean_boundary_iou']:.4f}{' *' if improved else ''}" if "val_miou" in row else "")
            log.info(f"epoch {epoch}/{cfg.train.epochs} train_loss {row['train_loss']:.4f}{val_txt} "
                     f"lr {row['lr']:.3g} {row['train_images_per_s']:.1f} img/s (loader {row['loader_images_per_s']:.0f}, "
                     f"model {row['model_images_per_s']:.1f}) {row['epoch_seconds']:.1f} s")
            if on_epoch is not None:
                on_epoch(row)
            if state["stopped_early"]:
                log.info(f"early stopping: no improvement of {cfg.train.best_metric} in {cfg.train.early_stopping_patience} validations")
        best = "none" if state["best_value"] is None else f"{state['best_value']:.4f}"
        log.info(f"training done: {state['epoch']} epochs in {state['train_seconds']:.1f} s; "
                 f"best {cfg.train.best_metric} {best} at epoch {state['best_epoch']}")
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
        "mlflow_run_id": state["mlflow_run_id"], "model": cfg.model.name, "parameters": n_params, "device": str(device),
        "precision": precision, "class_names": labels.names,
        "best_metric": cfg.train.best_metric, "best_value": state["best_value"], "best_epoch": state["best_epoch"],
        "timing": {"epochs_run": state["epoch"], "train_seconds": state["train_seconds"],
                   "mean_epoch_seconds": state["train_seconds"] / max(state["epoch"], 1),
                   "train_images_per_s": float(np.mean([r["train_images_per_s"] for r in state["history"]]))},
    })
    return run
