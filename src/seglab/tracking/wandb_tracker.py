"""Weights & Biases: one W&B run per seglab run (tracking.wandb_project). `wandb_mode: offline` needs no
network: the run is written under tracking.wandb_dir (default output.dir) and `wandb sync` uploads it later."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

from ..errors import SeglabError
from .base import Tracker

# runs this process has open, by id: the final evaluation (workflows/runs.py) continues the run the training logged to
# instead of starting a second one with the same id
_OPEN: dict[str, Any] = {}

NOT_INSTALLED = "tracking.wandb_project: wandb is not installed (pip install 'seglab[wandb]')"


def check_wandb(tracking: Any) -> None:
    """Refuse tracking.wandb_project without the wandb package before any work (data decoding, the speed probe)."""
    import importlib.util

    if tracking.wandb_project and importlib.util.find_spec("wandb") is None:
        raise SeglabError(NOT_INSTALLED)

class WandbTracker(Tracker):
    """Config, per-epoch metrics (step = epoch), the final metrics as the run's summary, files as artifacts.
    A resumed run continues the same W&B run (its id is kept in the checkpoint)."""

    def __init__(self, project: str, run_name: str, run_id: Optional[str], *, mode: str, entity: Optional[str],
                 folder: Path):
        try:
            import wandb
        except ImportError:
            raise SeglabError(NOT_INSTALLED) from None
        self.wandb = wandb
        if run_id in _OPEN:
            self.run, self.run_id = _OPEN[run_id], run_id
            return
        folder.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")  # seglab's own log says what is tracked
        try:
            self.run = wandb.init(project=project, entity=entity, name=run_name, id=run_id, resume="allow",
                                  mode=mode, dir=str(folder), reinit="create_new")
        except Exception as exc:
            raise SeglabError(f"tracking.wandb_project: W&B could not start a run ({mode}): "
                              f"{str(exc).splitlines()[0]}; wandb_mode: offline needs no network") from None
        self.run_id = self.run.id
        _OPEN[self.run_id] = self.run

    def log_config(self, config: dict[str, Any]) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_epoch(self, row: dict[str, Any]) -> None:
        values = {k: float(v) for k, v in row.items()
                  if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        final = {k: v for k, v in values.items() if k.startswith("final_")}
        if final:  # the final evaluation: the run's summary, what W&B's run table shows
            self.run.summary.update(final)
        if len(final) < len(values):
            self.run.log({k: v for k, v in values.items() if k not in final}, step=int(row["epoch"]))

    def log_artifact(self, path: Path, folder: Optional[str] = None) -> None:
        if not path.is_file():
            return
        kind = "model" if path.suffix in (".pt", ".onnx") else "run-file"
        name = f"{self.run.id}-{(folder + '-') if folder else ''}{path.stem}".replace("/", "-")
        artifact = self.wandb.Artifact(name, type=kind)
        artifact.add_file(str(path), name=f"{folder}/{path.name}" if folder else path.name)
        self.run.log_artifact(artifact)

    def finish(self, status: str = "FINISHED") -> None:
        _OPEN.pop(self.run_id, None)
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


def create_wandb_tracker(tracking: Any, run_name: str, run_id: Optional[str], folder: Path) -> Optional[Tracker]:
    """A WandbTracker when tracking.wandb_project is set; its files under tracking.wandb_dir or `folder`."""
    if not tracking.wandb_project:
        return None
    where = Path(tracking.wandb_dir) if tracking.wandb_dir else folder
    return WandbTracker(tracking.wandb_project, run_name, run_id, mode=tracking.wandb_mode,
                        entity=tracking.wandb_entity, folder=where)
