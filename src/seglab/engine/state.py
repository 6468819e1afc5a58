"""A run's progress as a checkpoint carries it (TrainState), and what summary.json says about its time."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Optional

import numpy as np

from ..config import Config
from ..durations import format_duration
from .budget import BudgetPlan, Estimate


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
    tracker_runs: dict[str, str] = field(default_factory=dict)  # tracker name -> its run id, continued on resume
    estimate: Optional[dict[str, Any]] = None  # Estimate.to_dict() measured before epoch 1
    plan: Optional[dict[str, Any]] = None  # BudgetPlan.to_dict() of a time-budgeted run

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainState":
        names = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in d.items() if k in names})
        if d.get("mlflow_run_id") and not state.tracker_runs:  # checkpoints before tracker_runs
            state.tracker_runs = {"mlflow": d["mlflow_run_id"]}
        return state


def budget_note(plan: Optional[BudgetPlan]) -> str:
    """' of a 10 min budget, re-planned N times' for the closing line; '' without a budget."""
    return "" if plan is None else f" of a {format_duration(plan.budget_seconds)} budget, re-planned {plan.replans} times"


def estimated_seconds(state: TrainState, cfg: Config, plan: Optional[BudgetPlan]) -> Optional[float]:
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


def estimate_vs_actual(state: TrainState, cfg: Config, plan: Optional[BudgetPlan]) -> str:
    """' (estimated 9 min 50 s)' for the closing line: what the measurement before epoch 1 predicted."""
    expected = estimated_seconds(state, cfg, plan)
    if expected is None or state.stopped_early:
        return ""
    return f" (estimated {format_duration(expected)}{' at the first plan' if plan is not None else ''})"


def timing_summary(state: TrainState, cfg: Config, plan: Optional[BudgetPlan], steps_per_epoch: int) -> dict[str, Any]:
    """summary.json's `timing`: epochs and steps run, training time, speeds, the budget's plan."""
    hist = state.history
    out: dict[str, Any] = {
        "epochs_run": state.epoch, "steps_run": state.global_step, "train_seconds": state.train_seconds,
        "mean_epoch_seconds": state.train_seconds / max(state.epoch, 1),
        "train_images_per_s": float(np.mean([r["train_images_per_s"] for r in hist])) if hist else None,
        "steps_per_epoch": steps_per_epoch,
        "estimate": state.estimate, "estimated_seconds": estimated_seconds(state, cfg, plan),
    }
    if plan is not None:
        out.update(budget_seconds=plan.budget_seconds, planned_steps=plan.end_step,
                   planned_epochs=round(plan.end_step / steps_per_epoch, 2), replans=plan.replans,
                   budget_used=state.train_seconds / plan.budget_seconds)
    return out
