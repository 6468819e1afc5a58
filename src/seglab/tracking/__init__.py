"""Experiment tracking beyond the run folder's CSV and TensorBoard: one small interface (`base.Tracker`) and
one file per service (MLflow, W&B, Neptune), registered in TRACKERS by the name its run id is kept under. Adding a
service (ClearML, Comet) is one file with a Tracker and its `create_*` function, one entry here and its config keys."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from .base import Tracker, TrackerGroup
from .mlflow_tracker import MlflowTracker, check_mlflow, create_mlflow_tracker
from .neptune_tracker import NeptuneTracker, check_neptune, create_neptune_tracker
from .wandb_tracker import WandbTracker, check_wandb, create_wandb_tracker

# name -> create(tracking config, run name, run id to continue or None, default folder) -> Tracker or None
TRACKERS: dict[str, Callable[[Any, str, Optional[str], Path], Optional[Tracker]]] = {
    "mlflow": create_mlflow_tracker,
    "wandb": create_wandb_tracker,
    "neptune": create_neptune_tracker,
}
# each refuses, before any work, a tracker the config turns on whose package is not installed
CHECKS: list[Callable[[Any], None]] = [check_mlflow, check_wandb, check_neptune]


def check_trackers(tracking: Any) -> None:
    """The config's trackers can be created here (their packages are installed)."""
    for check in CHECKS:
        check(tracking)


def create_tracker(tracking: Any, run_name: str, run_ids: Optional[dict[str, str]] = None,
                   folder: Path = Path("runs")) -> Optional[TrackerGroup]:
    """The trackers the config's `tracking` section turns on, as one group (None when it turns none on);
    `run_ids` (tracker name -> id, from the checkpoint) continues their runs."""
    ids = run_ids or {}
    found = {}
    for name, create in TRACKERS.items():
        tracker = create(tracking, run_name, ids.get(name), folder)
        if tracker is not None:
            found[name] = tracker
    return TrackerGroup(found) if found else None


__all__ = ["CHECKS", "TRACKERS", "MlflowTracker", "NeptuneTracker", "check_trackers", "Tracker", "TrackerGroup",
           "WandbTracker", "create_tracker"]
