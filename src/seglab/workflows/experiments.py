"""Several experiments at once: `seglab compare` (train what is missing, then one comparison page)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import cv2
import numpy as np
import yaml

from ..config import Config, changed_config, config_differences, load_config
from ..config.metric_names import SCORES
from ..data.datasets import build_data
from ..data.masks import display_rgb, read_image
from ..data.splits import Sample, load_split
from ..engine.budget import Estimate
from ..engine.distributed import is_main_process
from ..errors import ConfigError, SeglabError
from ..evaluation.model_files import load_model
from ..evaluation.predict import predict_image
from ..reporting import plots
from ..reporting.compare import result_row, write_comparison
from ..artifacts.run_dir import CV_RESULTS, CV_SUMMARY, REPORT, RunDir, kept_files
from .runs import complete_run, eval_splits, evaluate as evaluate_run

log = logging.getLogger("seglab")
PathLike = Union[str, Path]


def _set_list(value: Any, where: str) -> list[str]:
    """A sweep's `set:`: a list of KEY=VALUE strings (a single string would be read letter by letter)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise ConfigError(f"{where}: expected a list of KEY=VALUE strings, e.g. [train.epochs=5], got {value!r}")
    return list(value)


def expand_experiments(inputs: Sequence[PathLike], overrides: Sequence[str] = ()) -> list[tuple[str, Config]]:
    """Config files and sweep files -> [(experiment name, config)], names made unique.

    A sweep file is YAML with `experiments: [{config: PATH, name: NAME, set: [KEY=VALUE, ...]}, ...]`
    and an optional top-level `set` applied to every experiment; paths are relative to the sweep file.
    """
    out: list[tuple[str, Config]] = []
    for raw_path in inputs:
        path = Path(raw_path)
        if not path.is_file():
            raise ConfigError(f"{path}: config or sweep file not found")
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if isinstance(doc, dict) and "experiments" in doc:
            common = _set_list(doc.get("set"), f"{path}: set")
            exps = doc["experiments"]
            if not isinstance(exps, list) or not exps:
                raise ConfigError(f"{path}: experiments: expected a non-empty list of {{config, name, set}} entries")
            for i, exp in enumerate(exps):
                if not isinstance(exp, dict) or "config" not in exp:
                    raise ConfigError(f"{path}: experiments[{i}]: expected a mapping with 'config' (and optional name, set)")
                unknown = set(exp) - {"config", "name", "set"}
                if unknown:
                    raise ConfigError(f"{path}: experiments[{i}]: unknown key {sorted(unknown)[0]!r}; allowed: config, name, set")
                cfg_path = Path(exp["config"])
                cfg_path = cfg_path if cfg_path.is_absolute() else path.parent / cfg_path
                own = _set_list(exp.get("set"), f"{path}: experiments[{i}].set")
                cfg = load_config(cfg_path, common + own + list(overrides))
                name = str(exp.get("name") or cfg.output.name)
                try:  # the name becomes the experiment's folder
                    cfg = changed_config(cfg, {"output.name": name}, f"{path}: experiments[{i}]")
                except ConfigError:
                    raise ConfigError(f"{path}: experiments[{i}].name: {name!r} is not a plain folder name") from None
                out.append((name, cfg))
        else:
            cfg = load_config(path, list(overrides))
            out.append((cfg.output.name, cfg))
    seen: dict[str, int] = {}
    named = []
    for name, cfg in out:
        seen[name] = seen.get(name, 0) + 1
        named.append((name if seen[name] == 1 else f"{name}_{seen[name]}", cfg))
    return named


def _eval_split(cfg: Config) -> str:
    return cfg.eval.split


def _placed(name: str, cfg: Config, runs_dir: Path) -> tuple[Config, RunDir]:
    """cfg with its output at runs_dir/name, and that run folder, which must hold this same experiment if it
    exists (the one config comparison, `config_differences`: a moved output folder or data root is the same)."""
    cfg = changed_config(cfg, {"output.dir": str(runs_dir), "output.name": name}, f"experiment {name}")
    run = RunDir(cfg.run_dir())
    diff = config_differences(load_config(run.config), cfg) if run.is_run() else ""
    if diff:
        raise SeglabError(f"{run.path}: holds a run of a different config for experiment '{name}' (differs at "
                          f"{diff}, folder vs experiment); remove that folder or give the experiment another name")
    return cfg, run


def _needs_training(run: RunDir) -> bool:
    """Neither trained nor started: the experiment trains from scratch."""
    return run.status() in ("absent", "started")


def run_experiment(name: str, cfg: Config, runs_dir: Path, estimate: Optional[Estimate] = None) -> RunDir:
    """Train (or resume, or reuse) one experiment in runs_dir/name; evaluate what is missing."""
    cfg, _ = _placed(name, cfg, runs_dir)
    return complete_run(cfg, label=name, eval_splits=eval_splits(cfg), estimate=estimate)


def estimate_experiments(experiments: Sequence[tuple[str, Config]], runs_dir: Path) -> dict[str, Estimate]:
    """Measure every experiment that still has to train, before the first starts, and log how long each
    will take (or what its time budget buys)."""
    from ..durations import format_duration, parse_duration
    from ..engine.budget import BudgetPlan
    from ..engine.trainer import describe_plan, estimate_training

    estimates: dict[str, Estimate] = {}
    total = 0.0
    for name, cfg in experiments:
        cfg, run = _placed(name, cfg, runs_dir)
        if not _needs_training(run) or cfg.train.estimate_steps < 1:
            continue
        est = estimates[name] = estimate_training(cfg)
        budget = parse_duration(cfg.train.time_budget) if cfg.train.time_budget is not None else None
        plan = BudgetPlan.create(budget, 0.0, est, cfg.train.val_every) if budget is not None else None
        total += budget if budget is not None else est.seconds_for(cfg.train.epochs, cfg.train.val_every)
        log.info(f"{name}: {describe_plan(cfg, est, plan)}")
    if estimates:
        log.info(f"{len(estimates)} experiment(s) to train: about {format_duration(total)} of training in all, "
                 "plus the final evaluations")
    return estimates


def _input_size(cfg: Config) -> tuple[int, int]:
    size = cfg.augment.resize or cfg.augment.crop
    return (int(size[0]), int(size[1])) if size else (512, 512)


def _gflops(run: RunDir, cfg: Config) -> Optional[float]:
    import torch

    from ..artifacts.checkpoint import Checkpoint
    from ..models import build_model_from_meta, count_flops

    ckpt = run.evaluated_checkpoint()
    try:
        info = Checkpoint.load(ckpt, tensors=False).info
        with torch.device("meta"):  # FLOPs need the shapes only: reading a weights file into meta tensors is a no-op
            model = build_model_from_meta(info.model_meta, pretrained=False)
        return count_flops(model, _input_size(cfg), info.in_channels) / 1e9
    except Exception as exc:  # a number in a table must not stop the comparison
        log.info(f"GFLOPs of {run.path} not counted: {exc}")
        return None


def _prediction_grid(runs: dict[str, RunDir], split: str, out: Path, num_images: int) -> Optional[Path]:
    """The same `num_images` images of the first run's split, predicted by every run's best checkpoint."""
    if num_images <= 0 or not runs:
        return None
    first = next(iter(runs.values()))
    cfg = load_config(first.config)
    data = build_data(cfg.data, cfg.augment, split=load_split(first.split, cfg.data.root) if first.split.is_file() else None)
    if split not in data.readers:
        return None
    loader = data.readers[split]
    picks = np.linspace(0, len(loader) - 1, min(num_images, len(loader))).astype(int)
    samples = [loader.load(int(i)) for i in picks]
    rows = [[display_rgb(img), data.labels.colorize(mask)] for img, mask in samples]
    for name, run in runs.items():
        lm = load_model(run.evaluated_checkpoint())
        own = load_config(run.config).data
        for row, i, (img, _) in zip(rows, picks, samples):
            item = loader.items[int(i)]
            differs = (own.in_channels, own.image_max, own.nodata) != (cfg.data.in_channels, cfg.data.image_max,
                                                                       cfg.data.nodata)
            if differs and isinstance(item, Sample):
                # each run sees the image as it was trained to: its own channels and intensity scale
                mine = read_image(Path(item.image), own.in_channels, own.image_max, nodata=own.nodata)
                if mine.shape[:2] != img.shape[:2]:
                    mine = cv2.resize(mine, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA)
                    mine = mine[..., None] if mine.ndim == 2 else mine
                img = mine
            row.append(lm.labels.colorize(predict_image(lm, img)))
    return plots.plot_grid(rows, ["image", "ground truth"] + list(runs), out / "predictions.png",
                           row_labels=[loader.name(int(i)) for i in picks])


def compare_runs(runs: dict[str, RunDir], out: PathLike, *, split: Optional[str] = None, num_images: int = 4,
                 extra_rows: Sequence[dict[str, Any]] = (), title: Optional[str] = None) -> Path:
    """results.csv, results.md and report.html in `out` for finished run folders; returns the report path."""
    out = Path(out)
    if not runs:
        raise SeglabError("nothing to compare: no run folders given")
    configs = {}
    for name, run in runs.items():
        run.require_run().evaluated_checkpoint()
        configs[name] = load_config(run.config)
    if split is None:  # the test split when every run has one, else validation
        split = "test" if all(r.eval_metrics("test").is_file() for r in runs.values()) else "val"
    rows = []
    for name, run in runs.items():
        if not run.eval_metrics(split).is_file():
            evaluate_run(run.path, split=split, report=False)
        size = _input_size(configs[name])
        rows.append(result_row(name, run, split, _gflops(run, configs[name]), f"{size[0]}x{size[1]}"))
    grid = _prediction_grid(runs, split, out, num_images)
    plots.plot_comparison_curves({name: run.read_history() for name, run in runs.items()}, out / "curves.png")
    report = write_comparison(out, rows, runs, grid, title=title or f"seglab comparison: {', '.join(runs)}",
                              summary_rows=extra_rows)
    log.info(f"comparison: {report}")
    return report


def compare(inputs: Sequence[PathLike], *, out: PathLike, overrides: Sequence[str] = (), num_images: int = 4) -> Path:
    """Run every experiment (skipping finished ones, resuming interrupted ones) into OUT/runs/, then compare."""
    from ..engine.distributed import process_group

    out = Path(out)
    experiments = expand_experiments(inputs, overrides)
    runs: dict[str, RunDir] = {}
    with process_group(experiments[0][1].train.device if experiments else "auto"):
        estimates = estimate_experiments(experiments, out / "runs")
        for i, (name, cfg) in enumerate(experiments, 1):
            log.info(f"experiment {i}/{len(experiments)}: {name} ({cfg.model.name})")
            runs[name] = run_experiment(name, cfg, out / "runs", estimates.get(name))
    if not is_main_process():  # torchrun: rank 0 writes the comparison
        return out / REPORT
    splits = {_eval_split(cfg) for _, cfg in experiments}
    return compare_runs(runs, out, split="test" if splits == {"test"} else "val", num_images=num_images)


# ---------------------------------------------------------------- cross-validation

def _mean_std(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = [k for k in rows[0] if k in SCORES or k.startswith("iou_")] + ["train_seconds"]
    mean: dict[str, Any] = {"experiment": "mean", "model": rows[0].get("model"), "split": rows[0]["split"],
                            "gflops_input": rows[0].get("gflops_input")}
    std: dict[str, Any] = {"experiment": "std", "model": "", "split": rows[0]["split"]}
    for key in keys:
        vals = np.array([r.get(key) for r in rows if r.get(key) is not None], dtype=float)
        vals = vals[~np.isnan(vals)]
        mean[key] = float(vals.mean()) if len(vals) else None
        std[key] = float(vals.std(ddof=1)) if len(vals) > 1 else None
    return mean, std


def cross_validate(cfg: Config, *, overwrite: bool = False) -> RunDir:
    """Train cfg.k_folds folds into RUN/fold_k (finished folds kept, an interrupted one resumed), then write
    RUN/cv_summary.json, RUN/cv_results.md and a comparison report of the folds with mean and std rows."""
    from ..config import dump_config
    from ..data.datasets import build_split
    from ..data.splits import save_split
    from ..engine.distributed import barrier, process_group
    from ..fileio import atomic_write_text
    from ..reporting.compare import results_markdown

    k = int(cfg.k_folds or 0)
    root = RunDir(cfg.run_dir())
    runs: dict[str, RunDir] = {}
    with process_group(cfg.train.device):
        # torchrun: every rank checks the folder, rank 0 alone prepares it, then all read the same split
        existing = root.path.exists() and any(root.path.iterdir())
        diff = config_differences(load_config(root.config), cfg) if existing and root.is_run() else ""
        if existing and not overwrite and (not root.is_run() or diff):
            raise SeglabError(f"{root.path}: folder exists with other contents"
                              f"{f' (a cross-validation of another config: {diff})' if diff else ''}; "
                              "pass --overwrite to replace it")
        barrier()
        if is_main_process():
            if existing and overwrite:
                root.check_new(overwrite=True)  # refuses a folder seglab did not create
                kept = root.remove_own_files()
                if kept:
                    log.info(f"{root.path}: replaced the earlier cross-validation; kept {kept_files(kept)} "
                             "that seglab did not write")
            root.path.mkdir(parents=True, exist_ok=True)
            root.mark()
            if not root.split.is_file():  # when resuming: the same pool and folds as before
                save_split(root.split, build_split(cfg.data), cfg.data.root)
            atomic_write_text(root.config, dump_config(cfg))
        barrier()
        split = load_split(root.split, cfg.data.root)
        for i, fold in enumerate(split.folds(k, cfg.seed), 1):
            fold_cfg = changed_config(cfg, {"k_folds": None, "output.dir": str(root.path), "output.name": f"fold_{i}"},
                                      f"fold {i}")
            log.info(f"fold {i}/{k}: {len(fold.train)} train / {len(fold.val)} val samples")
            runs[f"fold_{i}"] = complete_run(fold_cfg, label=f"fold {i}/{k}", eval_splits=["val"], split=fold)
    if not is_main_process():
        return root
    size = _input_size(cfg)
    rows = [result_row(name, run, "val", None, f"{size[0]}x{size[1]}") for name, run in runs.items()]
    mean, std = _mean_std(rows)
    summary = {"k_folds": k, "folds": rows, "mean": mean, "std": std}
    root.write_json(root.path / CV_SUMMARY, summary)
    atomic_write_text(root.path / CV_RESULTS, results_markdown(rows + [mean, std]))
    log.info(f"{k}-fold cross-validation: mIoU {mean['miou']:.4f} +- {std['miou'] or 0:.4f}, "
             f"mean Boundary IoU {mean['mean_boundary_iou']:.4f} +- {std['mean_boundary_iou'] or 0:.4f}")
    compare_runs(runs, root.path, split="val", num_images=2, extra_rows=[mean, std],
                 title=f"{cfg.output.name}: {k}-fold cross-validation")
    return root
