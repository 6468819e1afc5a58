"""What one evaluation leaves for people to read: metrics.json, the per-class and per-image tables, the
plots (per-class IoU, confusion, samples, per-image mIoU, worst images) and its lines in the log."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..artifacts.run_dir import EVAL_METRICS, PER_CLASS_CSV, PER_CLASS_MD, PER_IMAGE_CSV, RunDir
from ..data.labels import LabelSpace
from ..evaluation.evaluate import EvalResult
from ..evaluation.predict import overlay
from ..fileio import atomic_write_text
from . import plots
from .tables import per_class_csv, per_class_markdown, per_image_csv

log = logging.getLogger("seglab")


def write_evaluation(out_dir: Path, fig_dir: Path, labels: LabelSpace, metrics: dict[str, Any], res: EvalResult,
                     split: str) -> None:
    """Write an evaluation's files into `out_dir` and its plots into `fig_dir`, and log its scores and table;
    `metrics` is what metrics.json holds: res.metrics plus where they came from."""
    out_dir.mkdir(parents=True, exist_ok=True)
    RunDir(out_dir).write_json(out_dir / EVAL_METRICS, metrics)
    atomic_write_text(out_dir / PER_CLASS_CSV, per_class_csv(labels.names, metrics))
    atomic_write_text(out_dir / PER_IMAGE_CSV, per_image_csv(labels.names, res.per_image))
    table = per_class_markdown(labels.names, metrics)
    atomic_write_text(out_dir / PER_CLASS_MD, table)
    plots.plot_per_class(labels.names, metrics["iou"], metrics["boundary_iou"], fig_dir / f"per_class_iou_{split}.png")
    plots.plot_confusion(res.confusion.numpy(), labels.names, fig_dir / f"confusion_{split}.png")
    if res.samples:
        plots.plot_samples(res.samples, labels, fig_dir / f"samples_{split}.png", overlay)
    plots.plot_histogram([r["miou"] for r in res.per_image], fig_dir / f"per_image_miou_{split}.png")
    if res.worst:
        plots.plot_worst(res.worst, labels, fig_dir / f"worst_{split}.png")
    log.info(f"{split}: mIoU {metrics['miou']:.4f}  pixel accuracy {metrics['pixel_accuracy']:.4f}  "
             f"mean Boundary IoU {metrics['mean_boundary_iou']:.4f}  ({metrics['num_images']} images, "
             f"{res.seconds:.1f} s, of which metrics {res.metric_seconds:.1f} s, {metrics['inference']})")
    log.info(table)
