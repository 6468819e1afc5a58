"""Time estimates and time-budgeted training plans.

A run's cost is measured on its own pipeline before epoch 1 (`Estimate`: seconds per training step,
data loading included, and seconds per validation pass). With `train.time_budget`, a `BudgetPlan`
turns the budget into a number of optimizer steps such that the whole learning-rate schedule (warm-up,
then decay to its end value) fits into the budget, validations included, as in budget-aware training
(Li, Yumer & Ramanan, ICLR 2020). The plan is re-checked after every step against the measured speed;
when the projected finish drifts from the budget, the remaining steps are re-planned and the schedule
is stretched or compressed from the current point on, so the learning rate stays continuous and still
reaches its end value on the last step. The plan is plain data, saved in every checkpoint, so `--resume`
continues it; the budget counts training time (the measurement, steps, validations and checkpoint
writes), not time since the first start.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

from ..durations import format_duration

def validations_between(step: int, end_step: int, steps_per_epoch: int, val_every: int) -> int:
    """Validations at epoch ends after optimizer step `step` up to `end_step`: every val_every-th epoch,
    and always the last (possibly partial) epoch."""
    if end_step <= step:
        return 0
    first = step // steps_per_epoch + 1  # the first epoch that ends after `step`
    last = math.ceil(end_step / steps_per_epoch)
    count = last // val_every - (first - 1) // val_every
    return count + (0 if last % val_every == 0 else 1)


def epoch_ends_between(step: int, end_step: int, steps_per_epoch: int) -> int:
    """How many epoch ends lie between step `step` and `end_step` (0 when none remain)."""
    return max(0, math.ceil(end_step / steps_per_epoch) - step // steps_per_epoch) if end_step > step else 0


@dataclass
class Estimate:
    """A run's speed measured on its own pipeline before training."""

    step_seconds: float  # one optimizer step, data loading included (global batch)
    val_seconds: float  # one validation pass over the whole validation split
    batch_size: int  # global batch
    steps_per_epoch: int
    probe_seconds: float  # what the measurement itself took (its warm-up aside)
    warmup_seconds: float = 0.0  # the uncounted first step(s): torch.compile's compilation, cuDNN autotuning

    @property
    def train_images_per_s(self) -> float:
        return self.batch_size / self.step_seconds if self.step_seconds > 0 else float("inf")

    def seconds_for(self, epochs: int, val_every: int) -> float:
        steps = epochs * self.steps_per_epoch
        return steps * self.step_seconds + validations_between(0, steps, self.steps_per_epoch, val_every) * self.val_seconds

    def describe(self, epochs: int, val_every: int) -> str:
        n_val = validations_between(0, epochs * self.steps_per_epoch, self.steps_per_epoch, val_every)
        return (f"about {format_duration(self.seconds_for(epochs, val_every))} for {epochs} epochs "
                f"({self.train_images_per_s:.1f} train img/s, {format_duration(self.val_seconds)} per validation x {n_val})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BudgetPlan:
    """How many optimizer steps fit into a time budget, and where in its schedule each step is.

    The learning-rate schedule is written for `schedule_steps` steps (the first plan). Step `step` of
    the run is at schedule position `position(step)`: the identity until the first re-plan, then linear
    from (anchor_step, anchor_position) to (end_step, schedule_steps).
    """

    budget_seconds: float
    steps_per_epoch: int
    val_every: int
    end_step: int
    schedule_steps: int
    step_seconds: float
    val_seconds: float
    epoch_overhead_seconds: float = 0.0  # checkpoint and log writes at each epoch end
    anchor_step: int = 0
    anchor_position: float = 0.0
    replans: int = 0
    # the margin a plan leaves for noise in the measured speeds
    safety: float = 0.01
    # train.max_epochs in steps: the plan never goes past it, however much the budget would buy (None: no cap)
    max_steps: Optional[int] = None

    @classmethod
    def create(cls, budget_seconds: float, used_seconds: float, estimate: Estimate, val_every: int,
               max_epochs: Optional[int] = None) -> "BudgetPlan":
        plan = cls(budget_seconds=budget_seconds, steps_per_epoch=estimate.steps_per_epoch, val_every=val_every,
                   end_step=1, schedule_steps=1, step_seconds=estimate.step_seconds, val_seconds=estimate.val_seconds,
                   max_steps=max_epochs * estimate.steps_per_epoch if max_epochs is not None else None)
        plan.end_step = plan.schedule_steps = plan.steps_fitting(0, used_seconds)
        return plan

    @property
    def epoch_bound(self) -> bool:
        """Whether train.max_epochs, not the time budget, ends the plan."""
        return self.max_steps is not None and self.end_step >= self.max_steps

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BudgetPlan":
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def planned_epochs(self) -> int:
        return math.ceil(self.end_step / self.steps_per_epoch)

    def position(self, step: float) -> float:
        """Schedule position (in schedule steps) of the run's optimizer step `step`."""
        if self.end_step <= self.anchor_step:
            return float(self.schedule_steps)
        t = (step - self.anchor_step) / (self.end_step - self.anchor_step)
        return self.anchor_position + t * (self.schedule_steps - self.anchor_position)

    def cost(self, step: int, end_step: int) -> float:
        """Projected seconds from optimizer step `step` to `end_step`, validations and epoch ends included."""
        return ((end_step - step) * self.step_seconds
                + validations_between(step, end_step, self.steps_per_epoch, self.val_every) * self.val_seconds
                + epoch_ends_between(step, end_step, self.steps_per_epoch) * self.epoch_overhead_seconds)

    def steps_fitting(self, step: int, used_seconds: float, capped: bool = True) -> int:
        """The most remaining steps (at least 1) whose projected cost fits into what is left of the budget,
        and (`capped`) that stay within max_steps."""
        fitting = self._steps_in_budget(step, used_seconds)
        if capped and self.max_steps is not None:
            return max(1, min(fitting, self.max_steps - step))
        return fitting

    def _steps_in_budget(self, step: int, used_seconds: float) -> int:
        left = self.budget_seconds * (1 - self.safety) - used_seconds
        if self.cost(step, step + 1) >= left:
            return 1
        lo, hi = 1, max(2, int(left / max(self.step_seconds, 1e-9)) + 2)
        while lo < hi:  # the cost grows with the step count: bisect for the largest that fits
            mid = (lo + hi + 1) // 2
            if self.cost(step, step + mid) <= left:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def recheck(self, step: int, used_seconds: float, *, step_seconds: float, val_seconds: float | None = None,
                epoch_overhead_seconds: float | None = None, tolerance: float = 0.02) -> bool:
        """Update the measured speeds and re-plan the remaining steps when the projected finish would
        overrun the budget by more than tolerance / 4, or when more than `tolerance` x the planned steps more
        would fit. A plan fits the budget less `safety`; the band between keeps measurement noise from
        flipping a plan between two lengths. Returns True when the plan changed."""
        self.step_seconds = step_seconds
        if val_seconds is not None:
            self.val_seconds = val_seconds
        if epoch_overhead_seconds is not None:
            self.epoch_overhead_seconds = epoch_overhead_seconds
        if step >= self.end_step:
            return False
        remaining = self.steps_fitting(step, used_seconds)
        if self.max_steps is not None and step >= self.max_steps:
            return False
        overrun = used_seconds + self.cost(step, self.end_step) > self.budget_seconds * (1 + tolerance / 4)
        room = step + remaining - self.end_step >= max(2.0, tolerance * self.end_step)
        if not (overrun or room) or step + remaining == self.end_step:
            return False
        self.anchor_position = self.position(step)
        self.anchor_step = step
        self.end_step = step + remaining
        self.replans += 1
        return True
