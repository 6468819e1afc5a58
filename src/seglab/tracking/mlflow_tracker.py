"""MLflow: one MLflow run per seglab run (tracking.mlflow_uri: a folder, file://, sqlite:/// or http(s)://)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

from ..errors import SeglabError
from .base import Tracker, flatten


NOT_INSTALLED = "tracking.mlflow_uri: MLflow is not installed (pip install mlflow-skinny)"


def check_mlflow(tracking: Any) -> None:
    """Refuse tracking.mlflow_uri without the mlflow package before any work (data decoding, the speed probe)."""
    import importlib.util

    if tracking.mlflow_uri and importlib.util.find_spec("mlflow") is None:
        raise SeglabError(NOT_INSTALLED)

class MlflowTracker(Tracker):
    """One MLflow run per seglab run: params (the flattened config), per-epoch metrics, artefacts.

    A resumed run continues the same MLflow run (its id is kept in the checkpoint)."""

    def __init__(self, uri: str, experiment: str, run_name: str, run_id: Optional[str] = None):
        try:
            import mlflow
        except ImportError:
            raise SeglabError(NOT_INSTALLED) from None
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 keeps the plain-folder store behind an opt-in; a local folder is what was asked for
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.mlflow = mlflow
        self.client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        try:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
            self.run_id = run_id or self.client.create_run(exp_id, run_name=run_name).info.run_id
        except Exception as exc:
            raise SeglabError(f"tracking.mlflow_uri: cannot use {uri}: {str(exc).splitlines()[0]}") from None

    def log_config(self, config: dict[str, Any]) -> None:
        params = flatten(config)
        items = list(params.items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            from mlflow.entities import Param

            self.client.log_batch(self.run_id, params=[Param(k, str(v)[:500]) for k, v in items[i:i + 100]])

    def log_epoch(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(row["epoch"])) for k, v in row.items()
                   if k != "epoch" and isinstance(v, (int, float)) and v == v]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_artifact(self, path: Path, folder: Optional[str] = None) -> None:
        if path.is_file():
            self.client.log_artifact(self.run_id, str(path), folder)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def create_mlflow_tracker(tracking: Any, run_name: str, run_id: Optional[str], folder: Path) -> Optional[Tracker]:
    """An MlflowTracker when tracking.mlflow_uri is set."""
    if not tracking.mlflow_uri:
        return None
    return MlflowTracker(tracking.mlflow_uri, tracking.mlflow_experiment or "seglab", run_name, run_id)
