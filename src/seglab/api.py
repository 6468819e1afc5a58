"""Public entry points: train, evaluate, predict, inspect, demo. The CLI is a thin layer over these."""
from __future__ import annotations

import csv
import io
import logging
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from .config import Config, config_differences, config_from_dict, load_config
from .data.merge import source_summary
from .data.datasets import EvalDataset, build_data, build_split, check_split, label_problems
from .data.masks import display_rgb
from .data.splits import load_split
from .engine.budget import Estimate
from .engine.distributed import is_main_process
from .engine.trainer import fit, pick_device
from .errors import CheckpointError, DataError, SeglabError
from .evaluation.evaluate import run_evaluation
from .evaluation.inference import settings_from_config
from .evaluation.predict import load_model, model_file_kind, overlay, predict_files
from .fileio import atomic_write_text
from .reporting import plots
from .reporting.compare import read_history
from .reporting.report import PER_CLASS_HEADER, build_report
from .reporting.run_dir import RunDir, clean_json

log = logging.getLogger("seglab")
PathLike = Union[str, Path]


def train(config: Union[Config, PathLike], *, overrides: Sequence[str] = (), resume: Optional[PathLike] = None,
          overwrite: bool = False, split: Optional[dict[str, Any]] = None, estimate: Optional[Estimate] = None) -> RunDir:
    """Train from a config (or continue the run folder `resume`), then evaluate and write the report.

    `estimate`: the config's speed measured beforehand (`estimate_training`), so the run does not measure it again.
    With `k_folds` set, runs a cross-validation and returns its folder (fold_1..fold_K, cv_summary.json).
    """
    if resume is not None:
        run = RunDir(Path(resume))
        if not run.is_run():
            raise SeglabError(f"{run.path}: not a run folder (no config.yaml)")
        cfg = load_config(run.config, list(overrides))
        # The run folder is where it is now, whatever output.* said when it started.
        cfg.output.dir, cfg.output.name = str(run.path.parent), run.path.name
        if cfg.k_folds:  # a cross-validation folder: finished folds are kept, the interrupted one resumes
            from .experiments import cross_validate

            return cross_validate(cfg)
    else:
        cfg = config if isinstance(config, Config) else load_config(config, list(overrides))
        if cfg.k_folds:
            from .experiments import cross_validate

            return cross_validate(cfg, overwrite=overwrite)
        run = RunDir(cfg.run_dir())
    with _run_lock(run):
        if resume is not None and not run.last.is_file():
            if not run.started_without_checkpoint():
                raise SeglabError(f"{run.path}: nothing to resume (no checkpoints/last.pt)")
            log.info(f"{run.path}: the run stopped before its first checkpoint; starting it over")
            run = fit(cfg, overwrite=True)
        elif resume is not None:
            run = fit(cfg, resume=True)
        else:
            run = fit(cfg, overwrite=overwrite, split=split, estimate=estimate)
        if not is_main_process():  # torchrun: rank 0 evaluates and reports
            return run
        for name in ["val"] + (["test"] if cfg.eval.split == "test" else []):
            evaluate(run.path, split=name, report=False)
        finish_report(run)
    _track_final(cfg, run)
    return run


def _run_lock(run: RunDir) -> Any:
    """The run folder's lock, held by the process that writes it (torchrun: rank 0)."""
    from contextlib import nullcontext

    from .reporting.run_dir import RunLock

    return RunLock(run) if is_main_process() else nullcontext()


def _track_final(cfg: Config, run: RunDir) -> None:
    """MLflow: the evaluation metrics, the report and the evaluation tables as artefacts; closes the run."""
    from .reporting.tracking import create_tracker

    summary = run.read_json(run.summary) or {}
    tracker = create_tracker(cfg.tracking, cfg.output.name, summary.get("mlflow_run_id"))
    if tracker is None:
        return
    for split_dir in sorted((run.path / "eval").glob("*")):
        m = run.read_json(split_dir / "metrics.json") or {}
        row = {f"final_{split_dir.name}_{k}": v for k, v in m.items() if k in
               ("miou", "pixel_accuracy", "mean_boundary_iou", "mean_dice", "mean_accuracy", "fwiou")}
        tracker.log_epoch({"epoch": summary.get("timing", {}).get("epochs_run", 0), **row})
        tracker.log_artifact(split_dir / "per_class.csv", f"eval/{split_dir.name}")
    tracker.log_artifact(run.report)
    tracker.log_artifact(run.config)
    tracker.finish()


def finish_report(run: RunDir) -> Path:
    history = read_history(run)
    if history:
        plots.plot_loss_curves(history, run.plots / "loss.png")
        plots.plot_metric_curves(history, run.plots / "metrics.png")
    path = build_report(run)
    log.info(f"report: {path}")
    return path


def _resolve_target(target: PathLike) -> tuple[Path, Optional[RunDir]]:
    p = Path(target)
    if p.is_dir():
        run = RunDir(p)
        if not run.is_run():
            raise SeglabError(f"{p}: not a run folder (no config.yaml) and not a checkpoint file")
        ckpt = run.best if run.best.is_file() else run.last
        if not ckpt.is_file():
            raise SeglabError(f"{p}: run folder has no checkpoint in checkpoints/")
        return ckpt, run
    if not p.exists():
        raise SeglabError(f"{p}: no such run folder or checkpoint")
    run = RunDir(p.parent.parent)
    return p, (run if run.is_run() else None)


def evaluate(target: PathLike, *, split: str = "val", overrides: Sequence[str] = (), out: Optional[PathLike] = None,
             report: bool = True) -> dict[str, Any]:
    """Evaluate a run folder's best checkpoint (or a checkpoint file) on a split at full resolution.

    Writes metrics.json, per_class.csv, per_class.md and plots into `out` (default RUN/eval/SPLIT).
    """
    ckpt_path, run = _resolve_target(target)
    lm = load_model(ckpt_path)
    cfg = config_from_dict(lm.checkpoint["config"], str(ckpt_path), list(overrides))
    if run is not None:  # a checkpoint copied in from another run would be scored on labels it never learnt
        diff = config_differences(config_from_dict(lm.checkpoint["config"], str(ckpt_path)), load_config(run.config),
                                  sections=("data", "model"))
        if diff:
            raise CheckpointError(f"{ckpt_path}: not a checkpoint of the run in {run.path}: its settings differ at "
                                  f"{diff} (checkpoint vs config.yaml)")
    device = pick_device(cfg.train.device)
    lm.model.to(device)
    split_data = load_split(run.split) if run is not None and run.split.is_file() else None
    data = build_data(cfg, split=split_data)
    if split not in data.loaders:
        raise DataError(f"the {split} split is empty for {target}")
    if data.labels.names != lm.labels.names:
        raise SeglabError(f"{ckpt_path}: checkpoint classes {lm.labels.names} differ from the dataset's {data.labels.names}")
    dataset = EvalDataset(data.loaders[split], cfg)
    dataset.input_size = lm.input_size
    settings = settings_from_config(cfg.eval)
    res = run_evaluation(lm.model, dataset, lm.labels, device=device, batch_size=cfg.eval.batch_size,
                         dilation_ratio=cfg.eval.boundary_dilation_ratio, num_samples=cfg.eval.num_samples,
                         channels_last=cfg.train.channels_last, settings=settings)
    metrics = dict(res.metrics, split=split, num_images=len(dataset), checkpoint=str(ckpt_path), inference=settings.describe(),
                   class_names=lm.labels.names, seconds=res.seconds, metric_seconds=res.metric_seconds,
                   confusion=res.confusion.tolist())
    out_dir = Path(out) if out is not None else (run.eval_dir(split) if run else ckpt_path.parent / f"eval_{split}")
    out_dir.mkdir(parents=True, exist_ok=True)
    RunDir(out_dir).write_json(out_dir / "metrics.json", metrics)
    atomic_write_text(out_dir / "per_class.csv", per_class_csv(lm.labels.names, metrics))
    table = per_class_markdown(lm.labels.names, metrics)
    atomic_write_text(out_dir / "per_class.md", table)
    fig_dir = run.plots if run is not None and out is None else out_dir
    plots.plot_per_class(lm.labels.names, metrics["iou"], metrics["boundary_iou"], fig_dir / f"per_class_iou_{split}.png")
    plots.plot_confusion(res.confusion.numpy(), lm.labels.names, fig_dir / f"confusion_{split}.png")
    if res.samples:
        plots.plot_samples(res.samples, lm.labels, fig_dir / f"samples_{split}.png", overlay)
    log.info(f"{split}: mIoU {metrics['miou']:.4f}  pixel accuracy {metrics['pixel_accuracy']:.4f}  "
             f"mean Boundary IoU {metrics['mean_boundary_iou']:.4f}  ({len(dataset)} images, {res.seconds:.1f} s, "
             f"of which metrics {res.metric_seconds:.1f} s, "
             f"{settings.describe()})")
    log.info(table)
    if run is not None and report and out is None:
        finish_report(run)
    return metrics


def _pct(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and v != v) else f"{100 * v:.2f}"


def per_class_csv(names: list[str], m: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["class", "iou", "boundary_iou", "dice", "precision", "recall"])
    for i, n in enumerate(names):
        w.writerow([n] + [clean_json(m[k][i]) if clean_json(m[k][i]) is not None else ""
                          for k in ("iou", "boundary_iou", "dice", "precision", "recall")])
    return buf.getvalue()


def per_class_markdown(names: list[str], m: dict[str, Any]) -> str:
    keys = ("iou", "boundary_iou", "dice", "precision", "recall")
    lines = ["| " + " | ".join(PER_CLASS_HEADER) + " |", "|" + "---|" * len(PER_CLASS_HEADER)]
    lines += [f"| {n} | " + " | ".join(_pct(m[k][i]) for k in keys) + " |" for i, n in enumerate(names)]
    lines.append(f"| **mean** | {_pct(m['miou'])} | {_pct(m['mean_boundary_iou'])} | {_pct(m['mean_dice'])} | | |")
    return "\n".join(lines) + "\n"


def predict(checkpoint: PathLike, inputs: Sequence[str], out: PathLike, *, device: str = "cpu",
            progress: bool = True, engine: str = "torch", overrides: Sequence[str] = (), workers: int = 0) -> list[Path]:
    """Write index masks, colour masks and overlays for images or folders of images.

    engine: 'torch' (a seglab checkpoint or a TorchScript export) or 'onnxruntime' (an ONNX export).
    A folder's files that are masks by the checkpoint's data.mask_suffix or data.pair_stems are skipped.
    Sliding windows and test-time augmentation follow the eval section of the checkpoint's config,
    changed with `overrides` such as eval.tta_flip=true.
    """
    ckpt_cfg: dict[str, Any] = {}
    if model_file_kind(Path(checkpoint), engine) == "checkpoint":
        from .engine.checkpoint import load_checkpoint

        ckpt_cfg = load_checkpoint(Path(checkpoint)).get("config") or {}
    cfg = config_from_dict({"eval": dict(ckpt_cfg.get("eval") or {})}, str(checkpoint),
                           [o for o in overrides if o.startswith("eval.")])
    bad = [o for o in overrides if not o.startswith("eval.")]
    if bad:
        raise SeglabError(f"--set {bad[0]}: predict takes eval.* settings only (sliding window, TTA)")
    return predict_files(Path(checkpoint), inputs, Path(out), pick_device(device, "--device"), progress, engine,
                         settings_from_config(cfg.eval), workers)


def export(checkpoint: PathLike, *, fmt: str = "onnx", out: Optional[PathLike] = None,
           size: Optional[Sequence[int]] = None) -> Path:
    """Export a checkpoint's model to ONNX or TorchScript (fixed input size; see evaluation/export.py)."""
    from .evaluation.export import export_checkpoint

    return export_checkpoint(Path(checkpoint), fmt, Path(out) if out else None, size)


def inspect(config: Union[Config, PathLike], *, overrides: Sequence[str] = (), out: Optional[PathLike] = None,
            num_samples: int = 6) -> dict[str, Any]:
    """Decode and check every file; count samples, sizes and class pixels; draw a sample grid.

    Returns the summary also written to OUT/inspect.json (default runs/inspect_<output.name>); its
    `problems` are what would make `seglab train` refuse the data.
    """
    cfg = config if isinstance(config, Config) else load_config(config, list(overrides))
    problems: list[str] = []
    warnings: list[str] = []  # what train accepts but a user should know (masks without images)
    data = build_data(cfg, split=build_split(cfg.data, problems, warnings))
    labels = data.labels
    summary: dict[str, Any] = {"classes": labels.names, "ignore_index": labels.ignore_index,
                               "palette": {n: list(c) for n, c in zip(labels.names, labels.palette)}, "splits": {}}
    if data.sources:
        rows = source_summary(labels, data.sources)
        for row, k in zip(rows, range(len(data.sources))):
            row["samples"] = {name: loader.source_of.count(k) for name, loader in data.loaders.items()}
        summary["sources"] = rows
        summary["strategy"] = cfg.loss.strategy
    for name, loader in data.loaders.items():
        stats = check_split(loader, problems)
        total = int(stats.counts.sum())
        sizes: dict[str, int] = {}
        for h, w in stats.sizes:
            sizes[f"{w}x{h}"] = sizes.get(f"{w}x{h}", 0) + 1
        summary["splits"][name] = {
            "samples": len(loader), "readable": len(stats.sizes), "sizes_wxh": sizes,
            "class_pixel_fraction": {n: (int(c) / total if total else 0.0) for n, c in zip(labels.names, stats.counts)},
            "ignored_pixels": stats.ignored,
            "classes_without_pixels": [n for n, c in zip(labels.names, stats.counts) if c == 0],
            "pixels_decoded_by_rule": stats.changed,
            "image_kinds": stats.image_kinds,
        }
        problems += label_problems(loader, stats)
    summary["problems"] = problems
    summary["warnings"] = warnings
    out_dir = Path(out) if out is not None else Path(cfg.output.dir) / f"inspect_{cfg.output.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    if "train" in data.loaders and num_samples:
        loader = data.loaders["train"]
        picks = np.linspace(0, len(loader) - 1, min(num_samples, len(loader))).astype(int)
        rows = []
        for i in picks:
            try:
                image, mask = loader.load(int(i))
            except DataError:
                continue
            color = labels.colorize(mask)
            rows.append([display_rgb(image), color, overlay(image, color)])
        if rows:
            plots.plot_grid(rows, ["image", "mask", "overlay"], out_dir / "samples.png")
            summary["sample_grid"] = str(out_dir / "samples.png")
    RunDir(out_dir).write_json(out_dir / "inspect.json", summary)
    summary["out_dir"] = str(out_dir)
    return summary


def demo(*, out_dir: PathLike = "runs", overrides: Sequence[str] = (), overwrite: bool = False) -> RunDir:
    """Train a small U-Net on the built-in synthetic dataset, evaluate it and write runs/demo/report.html
    (an earlier demo's folder is replaced only with `overwrite`)."""
    text = resources.files("seglab").joinpath("resources/demo.yaml").read_text()
    import yaml

    raw = yaml.safe_load(text)
    raw.setdefault("output", {})["dir"] = str(out_dir)
    cfg = config_from_dict(raw, "demo.yaml", list(overrides))
    return train(cfg, overwrite=overwrite)

