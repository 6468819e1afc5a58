"""The epochs of one run: train, validate when due, commit to the run folder, keep a budget's plan true."""
from __future__ import annotations

import logging
import math
import sys
from collections import deque
from dataclasses import asdict
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..artifacts.checkpoint import Checkpoint, ResumeState, rng_state
from ..config.metric_names import SCORES, validation_column
from ..collectives import all_reduce_sum
from ..durations import format_duration
from ..artifacts.run_dir import RunDir
from . import clock
from .budget import BudgetPlan
from .distributed import barrier
from .parts import Training, check_finite, rank_mean, train_step, validate
from .state import TrainState

log = logging.getLogger("seglab")

# the epoch loop reads its summed loss from the device (a host-device wait) once per this many steps
LOSS_READ_STEPS = 25


class EpochLoop:
    """The epochs of one run: `run_epoch` trains one epoch (`train_one_epoch`), validates when due
    (`validate_epoch`), commits it to the run folder (`commit_epoch`) and keeps a time budget's plan true.
    Holds what the epochs share; the run's progress is `state`, a TrainState that every checkpoint carries."""

    def __init__(self, t: Training, run: RunDir, state: TrainState, plan: Optional[BudgetPlan], scheduler: Any,
                 writer: Any, tracker: Any) -> None:
        self.t, self.cfg, self.run, self.state, self.plan = t, t.cfg, run, state, plan
        self.scheduler, self.writer, self.tracker = scheduler, writer, tracker
        self.spe = len(t.train_loader)
        # the recent speed a budget re-plans from: long enough to average out step-to-step noise, short
        # enough to notice a machine that slows down within an epoch or two
        self.step_times: deque[float] = deque(maxlen=max(50, 2 * self.spe))
        self.bn_held = False  # whether hold_encoder keeps the encoder's BatchNorm statistics now
        self.mark = clock.now()  # training time is counted from here, in state.train_seconds at every epoch end
        self.better: Callable[[float, float], bool] = self.cfg.train.best.better  # the metric's own direction
        # rank 0: best.pt's model_state as this process wrote it, so the evaluation after fit need not read it back
        self.best_state: Optional[dict[str, torch.Tensor]] = None

    def encoder_frozen(self) -> bool:
        """Whether train.freeze_encoder_for holds the encoder at this step (plans may move its end)."""
        total = self.plan.end_step if self.plan is not None else self.spe * self.cfg.train.epochs
        return self.state.global_step < self.cfg.train.encoder_frozen_steps(self.spe, total)

    def hold_encoder(self, frozen: bool) -> None:
        """Before an optimizer step: a frozen encoder's group gets lr 0 (every optimizer then leaves it as it
        is; set each step, as the schedule sets the rates each step) and its BatchNorm statistics stay; with
        train.freeze_encoder_bn they stay all run."""
        t = self.t
        if frozen:
            for g in t.optimizer.param_groups:
                if g.get("encoder"):
                    g["lr"] = 0.0
        keep = frozen or self.cfg.train.freeze_encoder_bn
        encoder = getattr(t.model, "encoder", None)
        if keep == self.bn_held or not isinstance(encoder, nn.Module):
            return  # unchanged since the last step (model.train() at each epoch start resets bn_held)
        for m in encoder.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not getattr(m, "frozen", False):
                m.train(not keep)
        self.bn_held = keep

    def planned_epochs(self) -> int:
        return self.plan.planned_epochs if self.plan is not None else self.cfg.train.epochs

    def finished(self) -> bool:
        s = self.state
        done = s.global_step >= self.plan.end_step if self.plan is not None else s.epoch >= self.cfg.train.epochs
        return done or s.stopped_early

    def checkpoint(self) -> Checkpoint:
        """This epoch's checkpoint: weights, the resolved config, the model's ModelInfo and the resume state."""
        t, cfg = self.t, self.cfg
        if self.plan is not None:
            self.state.plan = self.plan.to_dict()
        resume = ResumeState(optimizer=t.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                             train_state=asdict(self.state), rng=rng_state(), scaler=t.scaler.state_dict(),
                             class_weights=t.class_weights)
        # model_state is what evaluation and prediction load: the moving average when there is one; the
        # trained weights go beside it so --resume continues them
        return Checkpoint(info=t.model_info, config=cfg.to_dict(), model_state=t.eval_model.state_dict(),
                          trained_state=t.model.state_dict() if t.ema is not None else None,
                          ema_updates=t.ema.updates if t.ema is not None else 0, resume=resume)

    def replan(self, used: float, seen_per_s: float) -> None:
        """Re-check the budget plan from the time used and the recent step speed (all ranks alike)."""
        plan = self.plan
        assert plan is not None
        used, speed = rank_mean([used, float(np.mean(self.step_times))], self.t.device)
        old_end = plan.end_step
        if (plan.recheck(self.state.global_step, used, step_seconds=speed)
                and abs(plan.end_step - old_end) >= 0.05 * old_end):  # small corrections are not news
            log.info(f"re-planned at step {self.state.global_step}: {old_end} -> {plan.end_step} steps "
                     f"({seen_per_s:.1f} train img/s now; {format_duration(used)} of "
                     f"{format_duration(plan.budget_seconds)} used)", extra={"console": False})  # train.log only

    def train_one_epoch(self, epoch: int, t0: float) -> tuple[dict[str, Any], float]:
        """The epoch's optimizer steps (fewer when a time budget's plan ends inside it), begun at clock
        reading `t0`; returns its metrics row and the seconds its steps took.

        The steps never wait for the device: the batch losses are summed on it and read every
        LOSS_READ_STEPS steps (the progress bar, the divergence check) and at the epoch's end."""
        t, state, plan = self.t, self.state, self.plan
        t.sampler.set_epoch(epoch)
        t.model.train()
        self.bn_held = False  # train() put every BatchNorm back in training mode (frozen stages aside)
        loss_sum, seen, step_sum = torch.zeros((), device=t.device), 0, 0.0
        waited_before, checked = t.train_batches.waited, state.global_step
        t_step = clock.now()
        bar = tqdm(t.train_batches, desc=f"epoch {epoch}/{self.planned_epochs()}", unit="batch", leave=False,
                   disable=not (t.dist.is_main and sys.stderr.isatty()), dynamic_ncols=True)
        k, group = self.cfg.train.accumulate_steps, 1
        for i, (images, masks, labelled) in enumerate(bar):
            if i % k == 0:  # an optimizer step's batches: k, fewer at the epoch's (or the plan's) end
                group = min(k, self.spe - i, plan.end_step - state.global_step if plan is not None else k)
            first, last = i % k == 0, i % k == group - 1
            if first:
                self.hold_encoder(self.encoder_frozen())
            loss = train_step(t, images, masks, labelled, where="", first=first, last=last, group=group, check=False)
            if last:
                self.scheduler.step()  # the schedule counts optimizer steps
            state.global_step += 1
            loss_sum += loss.float() * images.shape[0]
            seen += images.shape[0]
            now = clock.now()
            self.step_times.append(now - t_step)
            step_sum += now - t_step
            t_step = now
            if (i + 1) % LOSS_READ_STEPS == 0:
                self._read_loss(loss_sum, seen, epoch, checked, bar, now - t0)
                checked = state.global_step
            if plan is not None:
                used = state.train_seconds + (now - self.mark)
                if state.global_step % self.spe == 0:  # this epoch's validation and writes are still to come
                    used += plan.epoch_overhead_seconds + (plan.val_seconds if epoch % self.cfg.train.val_every == 0 else 0)
                if len(self.step_times) >= 3:
                    self.replan(used, seen / max(now - t0, 1e-9))
                if state.global_step >= plan.end_step:
                    break  # the plan ends inside this epoch: validate and stop
        self._read_loss(loss_sum, seen, epoch, checked, None, 0.0)
        train_time = clock.now() - t0
        data_seconds = t.train_batches.waited - waited_before
        local_seen = seen
        loss_total, seen = all_reduce_sum([float(loss_sum), float(seen)])
        row = {"epoch": epoch, "step": state.global_step, "train_loss": loss_total / max(seen, 1),
               "lr": t.optimizer.param_groups[0]["lr"], "train_images_per_s": seen / max(train_time, 1e-9),
               # the time the loop waited inside the loader's next() (engine/prefetch.py), and the rest
               "loader_images_per_s": local_seen / max(data_seconds, 1e-9),
               "model_images_per_s": local_seen / max(train_time - data_seconds, 1e-9)}
        return row, step_sum

    def _read_loss(self, loss_sum: torch.Tensor, seen: int, epoch: int, checked: int, bar: Any, seconds: float) -> None:
        """Read the epoch's summed loss from the device (a wait for its queued steps): refuse a diverged run
        naming the steps since the last read, and show the mean on the progress bar."""
        value = float(loss_sum)
        check_finite(value, f"in epoch {epoch} between steps {checked + 1} and {self.state.global_step}")
        if bar is not None and not bar.disable:
            bar.set_postfix(loss=f"{value / max(seen, 1):.4f}", img_s=f"{seen / max(seconds, 1e-9):.1f}")

    def validate_epoch(self, epoch: int, row: dict[str, Any]) -> tuple[bool, float]:
        """Validate `epoch` into `row`, keep the best value and early stopping's count; returns whether the
        epoch improved on the best and the seconds the validation took."""
        cfg, state = self.cfg, self.state
        t_val = clock.now()
        m = validate(self.t, self.t.val_set)
        val_seconds = clock.now() - t_val
        if self.plan is not None:
            self.plan.val_seconds = rank_mean([val_seconds], self.t.device)[0]
        row.update(val_loss=m["loss"], **{validation_column(name): m[name] for name in SCORES})
        value = row[cfg.train.best.column]
        if not math.isnan(value) and (state.best_value is None or self.better(value, state.best_value)):
            state.best_value, state.best_epoch, state.bad_validations = value, epoch, 0
            return True, val_seconds
        state.bad_validations += 1
        patience = cfg.train.early_stopping_patience
        if patience is not None and state.bad_validations >= patience:
            state.stopped_early = True
        return False, val_seconds

    def commit_epoch(self, epoch: int, row: dict[str, Any], improved: bool) -> None:
        """Rank 0 writes the finished epoch: last.pt (the resume point), then best.pt when it improved (a
        stop between the two is repaired on resume), metrics.csv, TensorBoard and MLflow."""
        run = self.run
        if self.t.dist.is_main:
            ckpt = self.checkpoint()
            ckpt.save(run.last)
            if improved:
                ckpt.save(run.best)
                self.best_state = {k: v.detach().clone() for k, v in ckpt.model_state.items()}
            run.write_metrics_csv(self.state.history)
            for key, value in row.items():
                if key != "epoch" and value is not None:
                    self.writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key,
                                           value, epoch)
            self.writer.flush()
            if self.tracker is not None:
                self.tracker.log_epoch(row)
        barrier()  # a resumed rank must find this epoch's last.pt

    def run_epoch(self, on_epoch: Optional[Callable[[dict[str, Any]], None]] = None) -> None:
        """Train, validate when due, commit and log the next epoch; `on_epoch(row)` sees its metrics row."""
        cfg, state, plan = self.cfg, self.state, self.plan
        epoch = state.epoch + 1
        t0 = clock.now()
        row, step_sum = self.train_one_epoch(epoch, t0)
        last_epoch = (state.global_step >= plan.end_step) if plan is not None else epoch >= cfg.train.epochs
        improved, val_seconds = False, 0.0
        if epoch % cfg.train.val_every == 0 or last_epoch:
            improved, val_seconds = self.validate_epoch(epoch, row)
        now = clock.now()
        row["epoch_seconds"] = now - t0
        state.train_seconds += now - self.mark  # the previous epoch's checkpoint writes count here too
        self.mark = now
        row["elapsed_seconds"] = state.train_seconds
        state.history.append(row)
        state.epoch = epoch
        self.commit_epoch(epoch, row, improved)
        if plan is not None:  # what an epoch costs beyond its steps and validation: loader start, writes, logs
            plan.epoch_overhead_seconds = max(0.0, rank_mean([clock.now() - t0 - step_sum - val_seconds], self.t.device)[0])
            if not last_epoch and self.step_times:
                # the validation just measured may have freed (or taken) time that the next step's re-check
                # would see too late: a plan whose next step is its last could not use it
                self.replan(state.train_seconds + (clock.now() - self.mark), row["train_images_per_s"])
        val_txt = (f" val_loss {row['val_loss']:.4f} mIoU {row['val_miou']:.4f} pixel_acc {row['val_pixel_accuracy']:.4f} "
                   f"BIoU {row['val_mean_boundary_iou']:.4f}{' *' if improved else ''}" if "val_miou" in row else "")
        log.info(f"epoch {epoch}/{self.planned_epochs()} train_loss {row['train_loss']:.4f}{val_txt} "
                 f"lr {row['lr']:.3g} {row['train_images_per_s']:.1f} img/s (loader {row['loader_images_per_s']:.0f}, "
                 f"model {row['model_images_per_s']:.1f}) {row['epoch_seconds']:.1f} s")
        if on_epoch is not None:
            on_epoch(row)
        if state.stopped_early:
            log.info(f"early stopping: no improvement of {cfg.train.best_metric} in "
                     f"{cfg.train.early_stopping_patience} validations")
