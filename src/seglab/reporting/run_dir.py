"""The fixed layout of a run folder."""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any, Optional

from ..errors import SeglabError
from ..fileio import atomic_write_text

METRICS_COLUMNS = [
    "epoch", "train_loss", "val_loss", "val_miou", "val_pixel_accuracy", "val_mean_boundary_iou",
    "lr", "epoch_seconds", "train_images_per_s", "loader_images_per_s", "model_images_per_s", "step", "elapsed_seconds",
]


class RunDir:
    """config.yaml, split.json, metrics.csv, train.log, tb/, checkpoints/, plots/, eval/<split>/, report.html."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    split = property(lambda self: self.path / "split.json")
    metrics_csv = property(lambda self: self.path / "metrics.csv")
    log = property(lambda self: self.path / "train.log")
    tensorboard = property(lambda self: self.path / "tb")
    checkpoints = property(lambda self: self.path / "checkpoints")
    best = property(lambda self: self.path / "checkpoints" / "best.pt")
    last = property(lambda self: self.path / "checkpoints" / "last.pt")
    plots = property(lambda self: self.path / "plots")
    report = property(lambda self: self.path / "report.html")
    summary = property(lambda self: self.path / "summary.json")

    def eval_dir(self, split: str) -> Path:
        return self.path / "eval" / split

    def is_run(self) -> bool:
        return self.config.is_file()

    def prepare_new(self, overwrite: bool) -> None:
        """Create an empty run folder; an existing one needs overwrite (or resume elsewhere)."""
        if self.path.exists() and any(self.path.iterdir()):
            if not overwrite:
                raise SeglabError(f"{self.path}: run folder exists; pass --resume to continue it or --overwrite to replace it")
            shutil.rmtree(self.path)
        for p in (self.path, self.checkpoints, self.plots, self.tensorboard):
            p.mkdir(parents=True, exist_ok=True)

    def write_metrics_csv(self, history: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: _fmt(row.get(k)) for k in METRICS_COLUMNS})
        atomic_write_text(self.metrics_csv, buf.getvalue())

    def write_json(self, path: Path, data: Any) -> None:
        atomic_write_text(path, json.dumps(clean_json(data), indent=1))

    def read_json(self, path: Path) -> Optional[Any]:
        return json.loads(path.read_text()) if path.is_file() else None


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def clean_json(obj: Any) -> Any:
    """NaN -> None so the files are strict JSON."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj
