"""One run end to end: fit (fresh, or continued from last.pt) -> evaluate its splits -> report -> tracking.

The decisions of a single run live here: start fresh, resume or start over; which checkpoint a run folder is
evaluated with; what is evaluated after training. `experiments.py` (compare, k-fold) and `api.py` build on it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
import logging
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..config import Config, changed_config, config_differences, config_from_dict, load_config
from ..config.metric_names import SCORES
from ..data.datasets import DataBundle, EvalDataset, build_data
from ..data.splits import Split, load_split
from ..engine.budget import Estimate
from ..engine.distributed import is_main_process, pick_device
from ..engine.trainer import Fitted, fit_locked
from ..errors import CheckpointError, DataError, SeglabError
from ..evaluation.evaluate import run_evaluation
from ..evaluation.inference import settings_from_config
from ..evaluation.model_files import load_model
from ..reporting import plots
from ..reporting.evaluation_files import write_evaluation
from ..reporting.report import build_report
from ..artifacts.hub import hub_id, resolve_model
from ..artifacts.model_folder import is_model_folder
from ..artifacts.run_dir import EVAL_METRICS, PER_CLASS_CSV, RunDir, lock_for_writer

log = logging.getLogger("seglab")
PathLike = Union[str, Path]


def train_run(cfg: Config, *, resume: bool = False, overwrite: bool = False, split: Optional[Split] = None,
              estimate: Optional[Estimate] = None) -> RunDir:
    """Train `cfg` into its run folder (or continue it from last.pt with `resume`), then evaluate val (and
    test when eval.split is test), write the report and close the trackers' runs. A run that stopped before its
    first checkpoint starts over. `split`: the samples of each split (a cross-validation fold); `estimate`: the speed
    measured beforehand."""
    run = RunDir(cfg.run_dir())
    with lock_for_writer(run):  # over fit, evaluation and report: taken once
        status = run.status() if resume else None
        if status == "started":
            log.info(f"{run.path}: the run stopped before its first checkpoint; starting it over")
            fitted = fit_locked(run, cfg, overwrite=True)
        elif status == "absent":
            raise SeglabError(f"{run.path}: nothing to resume (no checkpoints/last.pt)")
        elif resume:
            fitted = fit_locked(run, cfg, resume=True)
        else:
            fitted = fit_locked(run, cfg, overwrite=overwrite, split=split, estimate=estimate)
        run = fitted.run
        if not is_main_process():  # torchrun: rank 0 evaluates and reports
            return run
        evaluate_and_report(run, eval_splits(cfg), fitted)
        del fitted  # the model and data: freed before the trackers upload
    _track_final(cfg, run)
    return run


def eval_splits(cfg: Config) -> list[str]:
    """The splits a finished run is evaluated on (EvalConfig.final_splits)."""
    return cfg.eval.final_splits()


def evaluate_and_report(run: RunDir, splits: Sequence[str], fitted: Optional[Fitted] = None) -> None:
    """Evaluate the run's checkpoint on each split (the `fitted` model and data in memory, when the fit that
    wrote the run is still at hand), then rebuild its report once."""
    for name in splits:
        if fitted is not None:
            evaluate_fitted(fitted, name)
        else:
            evaluate(run.path, split=name, report=False)
    finish_report(run)


def complete_run(cfg: Config, *, label: str, eval_splits: Sequence[str], split: Optional[dict[str, Any]] = None,
                 estimate: Optional[Estimate] = None) -> RunDir:
    """Bring a run that a comparison or a cross-validation owns to its end, doing only what is missing:
    reuse it when trained and evaluated on `eval_splits`, evaluate it when only trained, resume it from
    last.pt, or train it (replacing a folder of its own that holds nothing to keep). `label` names it in the log."""
    run = RunDir(cfg.run_dir())
    status = run.status(eval_splits)
    if status == "finished":
        log.info(f"{label}: finished, reusing {run.path}")
    elif status == "trained":
        log.info(f"{label}: trained, evaluating")
        if is_main_process():  # torchrun: rank 0 evaluates, as after a training
            evaluate_and_report(run, eval_splits)
    elif status == "resumable":
        log.info(f"{label}: resuming {run.path}")
        train_run(cfg, resume=True)
    else:
        log.info(f"{label}: training into {run.path}")
        train_run(cfg, overwrite=True, split=split, estimate=estimate)
    return run


def _track_final(cfg: Config, run: RunDir) -> None:
    """The trackers (MLflow, W&B): the final metrics, the report and the evaluation tables as artefacts; closes their runs."""
    from ..tracking import create_tracker

    summary = run.read_json(run.summary) or {}
    runs = summary.get("tracker_runs") or ({"mlflow": summary["mlflow_run_id"]} if summary.get("mlflow_run_id") else {})
    tracker = create_tracker(cfg.tracking, cfg.output.name, runs, Path(cfg.output.dir))
    if tracker is None:
        return
    for split_dir in sorted((run.path / "eval").glob("*")):
        m = run.read_json(split_dir / EVAL_METRICS) or {}
        row = {f"final_{split_dir.name}_{k}": v for k, v in m.items() if k in SCORES}
        tracker.log_epoch({"epoch": summary.get("timing", {}).get("epochs_run", 0), **row})
        tracker.log_artifact(split_dir / PER_CLASS_CSV, f"eval/{split_dir.name}")
    tracker.log_artifact(run.report)
    tracker.log_artifact(run.config)
    tracker.finish()


def finish_report(run: RunDir) -> Path:
    """Draw the run's curves and rebuild report.html from what the folder holds."""
    history = run.read_history()
    if history:
        plots.plot_loss_curves(history, run.plots / "loss.png")
        plots.plot_metric_curves(history, run.plots / "metrics.png")
    path = build_report(run)
    log.info(f"report: {path}")
    return path


def _resolve_target(target: PathLike) -> tuple[Path, Optional[RunDir]]:
    p = resolve_model(target)
    if is_model_folder(p):  # a model folder (--format hf) carries its training config; no run folder
        return p, None
    if p.is_dir():
        run = RunDir(p)
        if not run.is_run():
            raise SeglabError(f"{p}: not a run folder (no config.yaml), not a model folder (config.json + "
                              "model.safetensors) and not a checkpoint file")
        return run.evaluated_checkpoint(), run
    if not p.exists():
        raise SeglabError(f"{p}: no such run folder or checkpoint")
    run = RunDir(p.parent.parent)
    return p, (run if run.is_run() else None)


@dataclass
class _Scored:
    """What `evaluate` scores: a model and the data of its run, from a checkpoint or an export."""

    path: Path
    run: Optional[RunDir]
    cfg: Config
    model: Any  # an nn.Module (a checkpoint's) or an export's runtime
    labels: Any
    input_size: Optional[tuple[int, int]]
    device: Any
    default_out: Path


def _open_checkpoint(target: PathLike, split: str, overrides: Sequence[str]) -> _Scored:
    ckpt_path, run = _resolve_target(target)
    lm = load_model(ckpt_path)
    run_cfg = load_config(run.config) if run is not None else None
    # where the data is now is the run folder's to say (a resume may have moved it), a --set's above both
    raw = copy.deepcopy(lm.checkpoint.config)
    if run_cfg is not None and isinstance(raw.get("data"), dict):
        raw["data"]["root"] = run_cfg.data.root
    cfg = config_from_dict(raw, str(ckpt_path), list(overrides))
    if run_cfg is not None:  # a checkpoint copied in from another run would be scored on labels it never learnt
        diff = config_differences(lm.checkpoint.resolved_config(), run_cfg,
                                  sections=("data", "model"))
        if diff:
            raise CheckpointError(f"{ckpt_path}: not a checkpoint of the run in {run.path}: its settings differ at "
                                  f"{diff} (checkpoint vs config.yaml)")
    device = pick_device(cfg.train.device)
    lm.to(device)
    out = run.eval_dir(split) if run else _default_eval_dir(target, ckpt_path, split)
    return _Scored(ckpt_path, run, cfg, lm.model, lm.labels, lm.input_size, device, out)


def _default_eval_dir(target: PathLike, path: Path, split: str) -> Path:
    """Where `seglab eval` writes for a model outside a run folder: beside a checkpoint (eval_SPLIT) or a model
    folder (NAME_eval_SPLIT), never inside one; a Hub model's in the working folder."""
    named = hub_id(target)
    if named is not None:
        return Path(f"{named[0].split('/')[1]}_eval_{split}")
    return path.parent / (f"{path.name}_eval_{split}" if path.is_dir() else f"eval_{split}")


def _open_export(target: PathLike, split: str, overrides: Sequence[str], engine: str) -> _Scored:
    """An ONNX or TorchScript export kept in its run's checkpoints/ folder, scored on that run's data with the
    normalisation and input size stored in the export."""
    from torch import nn

    from ..evaluation.model_files import open_model

    path = Path(target)
    if not path.is_file():
        raise SeglabError(f"{path}: --engine {engine} scores an exported model file; no such file")
    run = RunDir(path.parent.parent)
    if not run.is_run():
        raise SeglabError(f"{path}: an export is scored on its run's data split; keep it in RUN/checkpoints/ "
                          f"(no run folder at {run.path})")
    runtime = open_model(path, engine)
    cfg = changed_config(load_config(run.config, list(overrides)),  # the export's own normalisation
                         {"augment.mean": list(runtime.mean), "augment.std": list(runtime.std)}, str(path))

    class Exported(nn.Module):  # run_evaluation's model interface over the runtime
        def forward(self, x):
            return runtime(x.cpu())

    stem = path.name.split(".")[0] + "".join(f"_{part}" for part in path.name.split(".")[1:-1])
    return _Scored(path, run, cfg, Exported(), runtime.labels, runtime.input_size, pick_device("cpu"),
                   path.parent / f"eval_{stem}_{path.suffix[1:]}_{split}")


def evaluate(target: PathLike, *, split: str = "val", overrides: Sequence[str] = (), out: Optional[PathLike] = None,
             report: bool = True, engine: str = "torch") -> dict[str, Any]:
    """Evaluate a run folder's best checkpoint (or a checkpoint file, a model folder or a Hub id
    `hf://OWNER/NAME`, on the data its training config names) on a split at full resolution; with
    `engine` 'onnxruntime' or 'torchscript', an export in a run's checkpoints/ folder on that run's split.

    Writes metrics.json, per_class.csv, per_class.md and plots into `out` (default RUN/eval/SPLIT; for an
    export RUN/checkpoints/eval_NAME_SPLIT, so the checkpoint's own scores stay).
    """
    exported = engine != "torch"
    s = _open_export(target, split, overrides, engine) if exported else _open_checkpoint(target, split, overrides)
    split_data = load_split(s.run.split, s.cfg.data.root) if s.run is not None and s.run.split.is_file() else None
    data = build_data(s.cfg.data, s.cfg.augment, split=split_data)
    if data.labels.names != s.labels.names:
        raise SeglabError(f"{s.path}: model classes {s.labels.names} differ from the dataset's {data.labels.names}")
    metrics = _score(s, data, split, out, engine)
    if s.run is not None and report and out is None and not exported:
        finish_report(s.run)
    return metrics


def evaluate_fitted(fitted: Fitted, split: str) -> dict[str, Any]:
    """What `evaluate(fitted.run.path, split=split, report=False)` gives, from the model and data that the fit
    holds in memory instead of from the run folder's files."""
    info = fitted.model_info
    s = _Scored(fitted.run.evaluated_checkpoint(), fitted.run, fitted.cfg, fitted.model, info.labels, info.input_size,
                fitted.device, fitted.run.eval_dir(split))
    return _score(s, fitted.data, split, None, "torch")


def _score(s: _Scored, data: DataBundle, split: str, out: Optional[PathLike], engine: str) -> dict[str, Any]:
    """Run the evaluation of `s` on `data`'s `split` and write its files (reporting.evaluation_files)."""
    if split not in data.readers:
        raise DataError(f"the {split} split is empty for {s.run.path if s.run is not None else s.path}")
    exported = engine != "torch"
    cfg = s.cfg
    dataset = EvalDataset(data.readers[split], cfg.augment, input_size=s.input_size)
    settings = settings_from_config(cfg.eval)
    res = run_evaluation(s.model, dataset, s.labels, device=s.device, batch_size=cfg.eval.batch_size,
                         dilation_ratio=cfg.eval.boundary_dilation_ratio, num_samples=cfg.eval.num_samples,
                         channels_last=cfg.train.channels_last and not exported, settings=settings, per_image=True,
                         worst=cfg.eval.worst_images)
    metrics = dict(res.metrics, split=split, num_images=len(dataset), checkpoint=str(s.path), inference=settings.describe(),
                   class_names=s.labels.names, seconds=res.seconds, metric_seconds=res.metric_seconds,
                   confusion=res.confusion.tolist(), engine=engine)
    out_dir = Path(out) if out is not None else s.default_out
    fig_dir = s.run.plots if s.run is not None and out is None and not exported else out_dir
    write_evaluation(out_dir, fig_dir, s.labels, metrics, res, split)
    return metrics
