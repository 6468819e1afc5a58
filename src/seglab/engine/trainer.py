"""The training loop, read top to bottom; every knob comes from the config.

`build_training` sets everything up (data, model, loss, loader, optimizer), `train_step` is one
optimizer step, `measure_speed` times a few steps and a validation before epoch 1 (the time estimate
and a time budget's plan come from it), and `fit` runs the epochs into the run folder.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
import logging
import random
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from ..artifacts.checkpoint import Checkpoint, rng_state, set_rng_state
from ..collectives import group_is_initialized
from ..config import Config, config_differences, dump_config, load_config
from ..artifacts.model_info import ModelInfo
from ..data.datasets import DataBundle
from ..data.splits import Split, load_split, save_split
from ..durations import format_duration, parse_duration
from ..errors import CheckpointError, SeglabError, brief
from ..models.weights import WeightsRecord
from ..fileio import atomic_write_text
from ..artifacts.run_dir import RunDir, RunLock, kept_files, lock_for_writer
from ..tracking import create_tracker
from . import clock
from .budget import BudgetPlan, Estimate
from .distributed import barrier, cleanup_distributed, init_distributed
from .hardware import describe_hardware
from .loop import EpochLoop
from .optim import build_scheduler, count_parameters
from .parts import Training, build_training, rank_mean, synchronize, train_step, validate
from ..rank import is_main_process
from .state import TrainState, budget_note, estimate_vs_actual, timing_summary

__all__ = ["Training", "TrainState", "build_training", "train_step", "validate", "measure_speed", "rank_mean",
           "estimate_training", "describe_plan", "fit", "Fitted", "seed_everything"]

log = logging.getLogger("seglab")



def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (each rank the same: the sampler splits the data)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _attach_log_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)  # the run's log file gets every line even when the console shows none
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    return handler




def measure_speed(t: Training, steps: int) -> Estimate:
    """Time `steps` training steps of epoch 1 (data loading included) after a warm-up that is not counted:
    the first step, or with train.compile the first two (compilation; cuDNN autotuning too), whose time is
    set-up (Estimate.warmup_seconds), not probe; and a validation of a few images scaled to the whole split.
    Then put the model, optimizer and random states back: the run trains exactly as without the measurement."""
    start = clock.now()
    saved_model = copy.deepcopy(t.model.state_dict())
    saved_opt = copy.deepcopy(t.optimizer.state_dict())
    saved_scaler = copy.deepcopy(t.scaler.state_dict())
    saved_ema = (copy.deepcopy(t.ema.model.state_dict()), t.ema.updates) if t.ema is not None else None
    saved_rng = rng_state()
    t.model.train()
    t.sampler.set_epoch(1)
    warm = 2 if t.cfg.train.compile else 1
    steps = max(warm, min(steps + warm - 1, len(t.train_loader)))
    times: list[float] = []
    mark = clock.now()
    for i, (images, masks, labelled) in enumerate(t.train_batches):
        train_step(t, images, masks, labelled, where="in the speed measurement")
        synchronize(t.device)  # a step's time is the device's, not only the host's launches
        now = clock.now()
        times.append(now - mark)
        mark = now
        if i + 1 >= steps:
            break
    warm = min(warm, len(times) - 1) if len(times) > 1 else 0
    step_seconds = float(np.mean(times[warm:]))
    warmup_seconds = float(sum(times[:warm]))
    # validation: one batch to warm up, then two timed batches scaled to the split
    n_val, bs = len(t.val_set), t.cfg.eval.batch_size * t.dist.world_size
    warm = min(n_val, bs)
    timed = list(range(warm, min(n_val, warm + 2 * bs))) or list(range(warm))
    validate(t, Subset(t.val_set, range(warm)))
    mark = clock.now()
    validate(t, Subset(t.val_set, timed))
    val_seconds = (clock.now() - mark) * n_val / len(timed)
    t.model.load_state_dict(saved_model)
    t.optimizer.load_state_dict(saved_opt)
    t.scaler.load_state_dict(saved_scaler)
    if t.ema is not None and saved_ema is not None:
        t.ema.model.load_state_dict(saved_ema[0])
        t.ema.updates = saved_ema[1]
    set_rng_state(saved_rng)
    step_seconds, val_seconds, probe_seconds, warmup_seconds = rank_mean(
        [step_seconds, val_seconds, clock.now() - start - warmup_seconds, warmup_seconds], t.device)
    return Estimate(step_seconds=step_seconds, val_seconds=val_seconds, batch_size=t.cfg.train.batch_size,
                    steps_per_epoch=len(t.train_loader), probe_seconds=probe_seconds, warmup_seconds=warmup_seconds)


def estimate_training(cfg: Config) -> Estimate:
    """Measure a config's training speed on its own pipeline without training or writing anything
    (what `seglab compare` prints for every experiment before the first starts)."""
    dist, device = init_distributed(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.seed)
    t = build_training(cfg, split=None, dist=dist, device=device, check_files=False, timing_only=True,
                       load_pretrained=False)  # speed only: the weights do not matter
    return measure_speed(t, max(1, cfg.train.estimate_steps))


def describe_plan(cfg: Config, est: Estimate, plan: Optional[BudgetPlan], final_eval_seconds: Optional[float] = None,
                  setup_seconds: Optional[float] = None) -> str:
    """The line printed before epoch 1: how long the run will take, or what its budget buys and what comes on
    top of it (the set-up before it, the final evaluation after it; None: not measured yet, as in a
    comparison's plans before its first run)."""
    if plan is None:
        return (f"estimate: {est.describe(cfg.train.epochs, cfg.train.val_every)}; "
                "set train.time_budget (or --budget 30m) to fit a budget")
    splits = " + ".join(cfg.eval.final_splits())
    if final_eval_seconds is None or setup_seconds is None:
        on_top = (f"on top of it come the set-up before it and the final evaluation of {splits} with the report "
                  "after it (each run's start line gives their estimates)")
    else:
        on_top = (f"on top of it come the set-up before it (data checks, model: {format_duration(setup_seconds)}) "
                  f"and the final evaluation of {splits} with the report after it "
                  f"(about {format_duration(final_eval_seconds)})")
    if plan.epoch_bound:
        bound = (f"bound by train.max_epochs {cfg.train.max_epochs}: the budget would buy about "
                 f"{plan.steps_fitting(0, est.probe_seconds, capped=False) / plan.steps_per_epoch:.1f}")
    else:
        bound = "bound by the time budget" + (f" (train.max_epochs {cfg.train.max_epochs} not reached)"
                                              if cfg.train.max_epochs is not None else "")
    return (f"time budget {format_duration(plan.budget_seconds)}: planned {plan.end_step} steps = "
            f"{plan.end_step / plan.steps_per_epoch:.1f} epochs ({bound}), the whole {cfg.schedule.name} schedule "
            f"({est.train_images_per_s:.1f} train img/s, {format_duration(est.val_seconds)} per validation, "
            f"measured in {est.probe_seconds:.1f} s). The budget covers that measurement, the training steps, "
            f"validations and checkpoint writes; {on_top}")


def final_eval_seconds(t: Training, est: Estimate) -> float:
    """The final evaluation's expected length: one validation pass per final split, scaled by its size
    (sliding windows and test-time augmentation make it longer)."""
    n_val = max(1, len(t.val_set))
    return sum(est.val_seconds * len(t.data.split.items(s)) / n_val
               for s in t.cfg.eval.final_splits() if s in t.data.readers)


@dataclass
class Fitted:
    """A finished fit as this process holds it: its run folder and, for the evaluation that follows (rank 0),
    the model in eval mode with the weights the run is evaluated with (RunDir.evaluated_checkpoint's), the
    data it was trained on and what its checkpoints carry."""

    run: RunDir
    cfg: Config
    data: DataBundle
    model: nn.Module
    model_info: ModelInfo
    device: torch.device


def fit(cfg: Config, *, resume: bool = False, overwrite: bool = False, split: Optional[Split] = None,
        on_epoch: Optional[Callable[[dict[str, Any]], None]] = None, estimate: Optional[Estimate] = None) -> Fitted:
    """Train `cfg` into its run folder (or continue the run there); returns the run folder and the model.

    `split` replaces resolving the config's sources, e.g. one cross-validation fold.
    `on_epoch(row)` sees every finished epoch's metrics row (e.g. to prune a tuning trial by raising).
    `estimate`: the speed measured beforehand (`estimate_training`), instead of measuring it here.
    Writes config.yaml, split.json, metrics.csv, train.log, tb/, checkpoints/{last,best}.pt, summary.json,
    holding the run folder's lock throughout (torchrun: rank 0).
    """
    run = RunDir(cfg.run_dir())
    with lock_for_writer(run):
        return fit_locked(run, cfg, resume=resume, overwrite=overwrite, split=split, on_epoch=on_epoch,
                          estimate=estimate)


def _resume_point(run: RunDir, cfg: Config, main: bool) -> Checkpoint:
    """last.pt, checked against the run's config.yaml, with the run folder put in the state that last.pt
    describes: temporaries of interrupted writes removed, best.pt completed when a stop came between
    writing last.pt and best.pt of an improving epoch, metrics.csv as of last.pt."""
    ckpt = Checkpoint.load(run.last)
    if ckpt.resume is None:
        raise CheckpointError(f"{run.last}: holds weights only, no training state to resume; train a new run")
    if not main:  # torchrun: rank 0 checks (and may rewrite config.yaml); a refusal there stops every rank
        return ckpt
    stored = load_config(run.config)  # the file alone, without this resume's --set / --budget
    diff = config_differences(ckpt.resolved_config(), stored)
    if diff:
        raise SeglabError(f"{run.config}: differs from the run's checkpoints/last.pt at {diff} (checkpoint vs file); "
                          "restore the run's config.yaml, or train a new run (--resume continues the run that was started)")
    run.clean_temporaries()
    state = ckpt.train_state
    if state.get("best_epoch") is not None and state["best_epoch"] == state.get("epoch"):
        # last.pt of an improving epoch holds exactly what best.pt must: the stop came before best.pt's write
        best = Checkpoint.load(run.best, tensors=False).train_state.get("epoch") if run.best.is_file() else None
        if best != state["best_epoch"]:
            ckpt.save(run.best)
            log.info(f"{run.best}: completed from last.pt (the run stopped between the two writes)")
    run.write_metrics_csv(TrainState.from_dict(state).history)
    return ckpt


def _record_resume_settings(run: RunDir, cfg: Config) -> None:
    """A resume with other settings (--budget, --set) writes them into config.yaml, once every check of the
    resume has passed (a refused resume leaves the file as it was, so the documented fix still matches)."""
    if dump_config(cfg) != dump_config(load_config(run.config)):
        atomic_write_text(run.config, dump_config(cfg))


def fit_locked(run: RunDir, cfg: Config, *, resume: bool = False, overwrite: bool = False,
               split: Optional[Split] = None, on_epoch: Optional[Callable[[dict[str, Any]], None]] = None,
               estimate: Optional[Estimate] = None) -> Fitted:
    """`fit` into `run` (cfg.run_dir()), whose lock the caller already holds (`lock_for_writer`), as one run's
    workflow does over training, evaluation and report: the lock is taken once."""
    if is_main_process() and not RunLock.held(run):
        raise SeglabError(f"{run.path}: fit_locked needs the run folder's lock held (lock_for_writer); use fit")
    started = clock.now()
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

    t = build_training(cfg, split=load_split(run.split, cfg.data.root) if resume else split, dist=dist, device=device,
                       class_weights=ckpt.resume.class_weights if ckpt is not None else None, check_files=not resume,
                       load_pretrained=ckpt is None)  # a resume's weights come from last.pt
    cfg, model = t.cfg, t.model  # t.cfg: with the pretrained encoder's mean / std (engine/parts.resolve_normalization)
    state = TrainState.from_dict(ckpt.train_state) if ckpt is not None else TrainState()
    handler = _open_folder(run, cfg, t, overwrite, first=ckpt is None) if main else None
    n_params = count_parameters(model)
    _log_start(t, run, state, resume, n_params)

    plan = _plan(t, state, estimate, first=ckpt is None, setup_seconds=clock.now() - started)
    scheduler = _build_schedule(t, plan)
    if ckpt is not None:  # after building the schedule, which sets the optimizer's first learning rate
        _restore(t, scheduler, ckpt, run.last)
        t.model_info = t.model_info.with_pretrained(ckpt.info.pretrained)  # what it started from
        if main:
            _record_resume_settings(run, cfg)

    writer, tracker = _open_logs(cfg, run, state, resume) if main else (None, None)
    loop = EpochLoop(t, run, state, plan, scheduler, writer, tracker)
    try:
        while not loop.finished():
            loop.run_epoch(on_epoch)
        _log_done(state, cfg, plan)
    finally:
        if writer is not None:
            writer.close()
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
        if owns_group:
            cleanup_distributed()
        log.setLevel(log_level)
    if main:
        if tracker is not None:
            tracker.log_artifact(run.best, "checkpoints")
        _write_summary(t, run, state, plan, n_params)
    model = _evaluated_model(t, loop, run) if main else t.eval_model
    return Fitted(run, cfg, t.data, model, t.model_info, device)


def _build_schedule(t: Training, plan: Optional[BudgetPlan]) -> Any:
    """The learning-rate schedule, placed where the budget plan (if any) says the run stands."""
    cfg = t.cfg
    return build_scheduler(t.optimizer, cfg.schedule, len(t.train_loader), cfg.train.epochs,
                           position=plan.position if plan is not None else None,
                           total_steps=plan.schedule_steps if plan is not None else None,
                           accumulate_steps=cfg.train.accumulate_steps)


def _log_done(state: TrainState, cfg: Config, plan: Optional[BudgetPlan]) -> None:
    best = "none" if state.best_value is None else f"{state.best_value:.4f}"
    log.info(f"training done: {state.epoch} epochs ({state.global_step} steps) in {format_duration(state.train_seconds)}"
             f"{budget_note(plan)}"
             f"{estimate_vs_actual(state, cfg, plan)}; best {cfg.train.best_metric} {best} at epoch {state.best_epoch}")


def _evaluated_model(t: Training, loop: EpochLoop, run: RunDir) -> nn.Module:
    """The trained model with the weights of the checkpoint the run is evaluated with: best.pt's as this
    process saved them, read back only when an earlier process did (a resume after the best epoch); last.pt's
    are the model's own."""
    model = t.eval_model
    if run.evaluated_checkpoint() == run.best:
        best = loop.best_state if loop.best_state is not None else Checkpoint.load(run.best).model_state
        model.load_state_dict(best)
    return model.eval()


def _open_folder(run: RunDir, cfg: Config, t: Training, overwrite: bool, first: bool) -> logging.Handler:
    """Rank 0: a new run writes its folder's config.yaml and split.json (replacing an earlier run's files
    with --overwrite); every run appends to train.log through the returned handler."""
    kept: list[str] = []
    if first:
        kept = run.prepare_new(overwrite)
        atomic_write_text(run.config, dump_config(cfg))
        save_split(run.split, t.data.split, cfg.data.root)
    handler = _attach_log_file(run.log)
    if kept:
        log.info(f"{run.path}: replaced the earlier run; kept {kept_files(kept)} that seglab did not write")
    return handler


def _open_logs(cfg: Config, run: RunDir, state: TrainState, resume: bool) -> tuple[Any, Any]:
    """Rank 0's TensorBoard writer (a resume drops events after its epoch) and the configured trackers (a
    resume continues their runs; their ids go into `state`)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run.tensorboard), purge_step=state.epoch + 1 if resume else None)
    tracker = create_tracker(cfg.tracking, cfg.output.name, state.tracker_runs, Path(cfg.output.dir))
    if tracker is not None and not resume:
        tracker.log_config(cfg.to_dict())
    state.tracker_runs = tracker.run_ids if tracker is not None else {}
    return writer, tracker


def _write_summary(t: Training, run: RunDir, state: TrainState, plan: Optional[BudgetPlan], n_params: int) -> None:
    cfg = t.cfg
    run.write_json(run.summary, {
        "tracker_runs": state.tracker_runs, "model": cfg.model.name, "parameters": n_params, "device": str(t.device),
        "hardware": describe_hardware(t.device), "torch": torch.__version__, "precision": t.precision,
        "runtime": t.runtime.to_dict(), "batch_scaling": t.scaling.to_dict(),
        "pretrained": t.model_info.pretrained,
        "fine_tuning": fine_tuning_summary(cfg, len(t.train_loader), plan),
        "class_names": t.data.labels.names, "best_metric": cfg.train.best_metric, "best_value": state.best_value,
        "best_epoch": state.best_epoch, "timing": timing_summary(state, cfg, plan, len(t.train_loader)),
        "command": _command_line(),
    })


def _command_line() -> Optional[str]:
    """The seglab command that ran this training (a model card quotes it); None when called from Python."""
    if Path(sys.argv[0]).name not in ("seglab", "__main__.py"):
        return None
    return shlex.join(["seglab", *sys.argv[1:]])


def _say_frozen_throughout(cfg: Config, steps_per_epoch: int, plan: Optional[BudgetPlan]) -> None:
    """Say up front when train.freeze_encoder_for covers the whole run: the encoder would never train."""
    total = plan.end_step if plan is not None else steps_per_epoch * cfg.train.epochs
    v = cfg.train.freeze_encoder_for
    if v is not None and cfg.train.encoder_frozen_steps(steps_per_epoch, total) >= total:
        log.warning(f"train.freeze_encoder_for {v if isinstance(v, str) else f'{v:g}'} keeps the encoder frozen for the whole "
                    f"run ({total} steps planned): it never trains; give fewer epochs or a share such as '20%'")


def fine_tuning_summary(cfg: Config, steps_per_epoch: int, plan: Optional[BudgetPlan]) -> dict[str, Any]:
    """How the encoder was trained: frozen stages, frozen start, its learning-rate share, its BatchNorm."""
    total = plan.end_step if plan is not None else steps_per_epoch * cfg.train.epochs
    return {"freeze_backbone": cfg.model.options().get("freeze_backbone", False),
            "freeze_encoder_for": cfg.train.freeze_encoder_for,
            "encoder_frozen_steps": cfg.train.encoder_frozen_steps(steps_per_epoch, total),
            "backbone_lr_mult": cfg.optimizer.backbone_lr_mult, "freeze_encoder_bn": cfg.train.freeze_encoder_bn}


def _log_start(t: Training, run: RunDir, state: TrainState, resume: bool, n_params: int) -> None:
    cfg, labels = t.cfg, t.data.labels
    if resume:
        log.info(f"resuming {run.path} after epoch {state.epoch} ({format_duration(state.train_seconds)} of training so far)"
                 f"{f' on {t.dist.world_size} processes' if t.dist.enabled else ''}")
        return
    log.info(f"run {run.path}: {cfg.model.name} ({n_params:,} parameters) on {t.device}"
             f"{f' x {t.dist.world_size} processes' if t.dist.enabled else ''}, "
             f"{len(t.train_set)} train / {len(t.val_set)} val images, {labels.num_classes} classes")
    log.info(f"runtime: {t.runtime.describe()}")
    scaling = t.scaling.describe(cfg.schedule.warmup_epochs)
    if scaling is not None:
        log.info(scaling)
    for record in t.model_info.pretrained:  # logged here so train.log has it too
        log.info(WeightsRecord(**record).describe())
    for src in t.data.sources:
        log.info(f"source {src.name} ({src.config.split}): annotates "
                 f"{', '.join(labels.names[c] for c in src.annotated)}; strategy {cfg.loss.strategy}")


def _plan(t: Training, state: TrainState, estimate: Optional[Estimate], first: bool,
          setup_seconds: float = 0.0) -> Optional[BudgetPlan]:
    """How long the run will take, measured on its own pipeline before its first epoch (`first`), and a
    time budget's plan made from it (or the plan a checkpoint carries, with a budget changed on resume)."""
    cfg = t.cfg
    budget = parse_duration(cfg.train.time_budget) if cfg.train.time_budget is not None else None
    if first and (cfg.train.estimate_steps > 0 or budget is not None):
        if estimate is None:
            estimate = measure_speed(t, max(1, cfg.train.estimate_steps))
            state.train_seconds += estimate.probe_seconds
        state.estimate = estimate.to_dict()
        _check_warmup(cfg, estimate, budget)
        if budget is not None:
            state.plan = BudgetPlan.create(budget, state.train_seconds, estimate, cfg.train.val_every,
                                           cfg.train.max_epochs).to_dict()
            _check_budget_holds_a_step(budget, state.train_seconds, BudgetPlan.from_dict(state.plan))
    plan = BudgetPlan.from_dict(state.plan) if state.plan is not None else None
    if plan is not None and budget is not None and budget != plan.budget_seconds:  # resumed with a new budget
        log.info(f"time budget changed from {format_duration(plan.budget_seconds)} to {format_duration(budget)}")
        plan.budget_seconds = budget
    if first and state.estimate is not None:
        est = Estimate(**state.estimate)
        log.info(describe_plan(cfg, est, plan, final_eval_seconds(t, est), setup_seconds))
    if first:
        _say_frozen_throughout(cfg, len(t.train_loader), plan)
    return plan


def _check_budget_holds_a_step(budget: float, used: float, plan: BudgetPlan) -> None:
    """Refuse a budget that the measured speed shows cannot hold even the plan's least (one step and a
    validation): the run would overrun it, not fit it."""
    needed = used + plan.cost(0, plan.end_step)  # the step, the validation after it, the epoch's end
    if plan.end_step == 1 and needed > budget:
        raise SeglabError(
            f"train.time_budget: {format_duration(budget)} cannot hold one training step and one validation on this "
            f"machine (measuring the speed took {format_duration(used)}, a step takes {format_duration(plan.step_seconds)}, "
            f"a validation {format_duration(plan.val_seconds)}: about {format_duration(needed)} in all); give a budget of "
            "several times that, or make steps and validations cheaper (augment.resize, a smaller val split)")


def _check_warmup(cfg: Config, est: Estimate, budget: Optional[float]) -> None:
    """torch.compile's compilation (the probe's warm-up steps) is set-up: logged, outside the budget; a budget
    that the compilation alone exceeds is refused."""
    if not cfg.train.compile:
        return
    log.info(f"torch.compile: the first 2 steps compiled the model in {format_duration(est.warmup_seconds)} "
             "(set-up: outside the speed measurement and the time budget)")
    if budget is not None and est.warmup_seconds > budget:
        raise SeglabError(f"train.time_budget: {format_duration(budget)} is less than compiling the model took "
                          f"({format_duration(est.warmup_seconds)}); give a budget several times longer, or set "
                          "train.compile false")


def _restore(t: Training, scheduler: Any, ckpt: Checkpoint, path: Path) -> None:
    """Model, optimizer, schedule and random states from a resumed run's last.pt."""
    labels, stored, resume = t.data.labels, ckpt.info.labels, ckpt.resume
    if stored.names != labels.names:
        raise CheckpointError(f"{path}: trained for {stored.num_classes} classes "
                              f"({', '.join(stored.names[:5])}...), but the data now gives "
                              f"{labels.num_classes} ({', '.join(labels.names[:5])}...); the palette or class "
                              "settings changed since the run started")
    try:
        t.model.load_state_dict(ckpt.trained_weights)
        if t.ema is not None:  # a run that starts averaging on resume starts from the trained weights
            t.ema.model.load_state_dict(ckpt.model_state if ckpt.trained_state is not None else t.model.state_dict())
            t.ema.updates = ckpt.ema_updates
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the run's model ({brief(exc)})") from None
    assert resume is not None  # _resume_point refuses a weights-only last.pt
    t.optimizer.load_state_dict(resume.optimizer)
    scheduler.load_state_dict(resume.scheduler)
    if resume.scaler is not None:  # fp16: the loss scale carries on where it was
        t.scaler.load_state_dict(resume.scaler)
    set_rng_state(resume.rng)


