"""Public entry points: train, evaluate, predict, inspect, demo. The CLI is a thin layer over these."""
from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np

from .config import Config, changed_config, config_from_dict, load_config
from .data.merge import source_summary
from .data.datasets import build_data, build_split, check_split, input_notes, label_problems
from .data.masks import display_rgb
from .data.splits import Split
from .engine.budget import Estimate
from .deploy.int8_recipe import DEFAULT_CALIBRATION, DEFAULT_CALIBRATION_IMAGES, DEFAULT_FP32_FIRST
from .engine.distributed import pick_device
from .errors import DataError, SeglabError
from .evaluation.inference import settings_from_config
from .evaluation.model_files import model_file_kind
from .evaluation.predict import overlay, predict_files
from .reporting import plots
from .artifacts.hub import resolve_model
from .artifacts.run_dir import RunDir
from .reporting.tables import per_class_csv, per_class_markdown
from .workflows.runs import evaluate, finish_report, train_run

if TYPE_CHECKING:  # the predictor module loads torch; imported on use
    from .evaluation.predictor import SegmentationPredictor

__all__ = ["train", "evaluate", "predict", "load_model", "export", "save_pretrained", "inspect", "demo",
           "finish_report", "per_class_csv", "per_class_markdown"]

log = logging.getLogger("seglab")
PathLike = Union[str, Path]


def train(config: Union[Config, PathLike], *, overrides: Sequence[str] = (), resume: Optional[PathLike] = None,
          overwrite: bool = False, split: Optional[Split] = None, estimate: Optional[Estimate] = None) -> RunDir:
    """Train from a config (or continue the run folder `resume`), then evaluate and write the report. A
    `Config` is used as it is (`overrides` apply to a path: the CLI hands over the config it has parsed).

    `estimate`: the config's speed measured beforehand (`estimate_training`), so the run does not measure it again.
    With `k_folds` set, runs a cross-validation and returns its folder (fold_1..fold_K, cv_summary.json).
    """
    if resume is not None:
        run = RunDir(Path(resume)).require_run()
        cfg = config if isinstance(config, Config) else load_config(run.config, list(overrides))
        # The run folder is where it is now, whatever output.* said when it started.
        cfg = changed_config(cfg, {"output.dir": str(run.path.parent), "output.name": run.path.name}, str(run.config))
        if cfg.k_folds:  # a cross-validation folder: finished folds are kept, the interrupted one resumes
            from .workflows.experiments import cross_validate

            return cross_validate(cfg)
    else:
        cfg = config if isinstance(config, Config) else load_config(config, list(overrides))
        if cfg.k_folds:
            from .workflows.experiments import cross_validate

            return cross_validate(cfg, overwrite=overwrite)
    return train_run(cfg, resume=resume is not None, overwrite=overwrite, split=split, estimate=estimate)


def predict(checkpoint: PathLike, inputs: Sequence[str], out: PathLike, *, device: str = "cpu",
            progress: bool = True, engine: str = "torch", overrides: Sequence[str] = (), workers: int = 0,
            save_probabilities: bool = False, threshold: Optional[float] = None) -> list[Path]:
    """Write index masks, colour masks and overlays for images or folders of images (and with
    `save_probabilities` each image's (K, H, W) float16 probabilities as NAME_prob.npy; `threshold` is a
    two-class model's foreground threshold).

    engine: 'torch' (a seglab checkpoint, a model folder or a Hub id `hf://OWNER/NAME`), 'torchscript' (a
    TorchScript export: loading it runs its code, so only on this explicit choice) or 'onnxruntime' (an ONNX export).
    A folder's files that are masks by the checkpoint's data.mask_suffix or data.pair_stems are skipped.
    Sliding windows and test-time augmentation follow the eval section of the checkpoint's config,
    changed with `overrides` such as eval.tta_flip=true.
    """
    checkpoint = resolve_model(checkpoint)
    return predict_files(checkpoint, inputs, Path(out), pick_device(device, "--device"), progress, engine,
                         _predict_settings(checkpoint, engine, overrides), workers, save_probabilities, threshold)


def _predict_settings(checkpoint: PathLike, engine: str, overrides: Sequence[str]) -> Any:
    """Sliding window / TTA of a prediction: the checkpoint's eval section, changed by eval.* overrides."""
    ckpt_cfg: dict[str, Any] = {}
    if model_file_kind(Path(checkpoint), engine) in ("checkpoint", "hf"):
        from .evaluation.model_files import read_weights_record

        ckpt_cfg = read_weights_record(Path(checkpoint), tensors=False).config
    cfg = config_from_dict({"eval": dict(ckpt_cfg.get("eval") or {})}, str(checkpoint),
                           [o for o in overrides if o.startswith("eval.")])
    bad = [o for o in overrides if not o.startswith("eval.")]
    if bad:
        raise SeglabError(f"--set {bad[0]}: predict takes eval.* settings only (sliding window, TTA)")
    return settings_from_config(cfg.eval)


def load_model(path: PathLike, *, device: str = "cpu", engine: Optional[str] = None, overrides: Sequence[str] = (),
               threshold: Optional[float] = None) -> "SegmentationPredictor":
    """A model file in memory for notebooks: `.predict(image)` -> (H, W) class ids, `.probabilities(image)`
    -> (K, H, W) float32, as `seglab predict` computes them (one code path).

    path: a seglab checkpoint, a model folder (`seglab export --format hf`), a Hub id `hf://OWNER/NAME[@REV]`
    (through the Hub's cache; HF_HUB_OFFLINE=1 reads the cache alone), an ONNX export (engine inferred from
    .onnx) or a TorchScript export (only with engine='torchscript': loading one runs its code). device: 'cpu',
    'cuda[:N]' or 'auto'.
    """
    from .evaluation.model_files import open_model
    from .evaluation.predictor import SegmentationPredictor

    path = resolve_model(path)

    engine = engine or ("onnxruntime" if str(path).lower().endswith(".onnx") else "torch")
    model = open_model(Path(path), engine, pick_device(device, "device"))
    return SegmentationPredictor(model, _predict_settings(path, engine, overrides), threshold)


def export(checkpoint: PathLike, *, fmt: str = "onnx", out: Optional[PathLike] = None,
           size: Optional[Sequence[int]] = None, int8: bool = False,
           calibration_images: int = DEFAULT_CALIBRATION_IMAGES, calibration: str = DEFAULT_CALIBRATION,
           fp32_first: int = DEFAULT_FP32_FIRST, overwrite: bool = False, push_to_hub: Optional[str] = None) -> Path:
    """Export a checkpoint's model (a run folder: its evaluated checkpoint) to ONNX (INT8 with `int8`:
    `calibration` minmax|percentile on `calibration_images` training images, the first `fp32_first`
    convolutions kept FP32), TorchScript, or with fmt='hf' a model folder in the Hugging Face Hub's layout
    (uploaded to `push_to_hub` OWNER/NAME when given); an existing `out` is replaced only with `overwrite`; see
    deploy/export.py and deploy/quantize.py."""
    from .deploy.export import export_checkpoint
    from .deploy.int8_recipe import Int8Recipe

    recipe = Int8Recipe(calibration_images, calibration, fp32_first) if int8 else None
    return export_checkpoint(Path(checkpoint), fmt, Path(out) if out else None, size, int8=recipe, overwrite=overwrite,
                             push_to_hub=push_to_hub)


def save_pretrained(run_or_checkpoint: PathLike, out: PathLike, *, overwrite: bool = False,
                    push_to_hub: Optional[str] = None) -> Path:
    """Write a run's (or a checkpoint's) model as a Hugging Face-style folder: model.safetensors, config.json
    and a model card with the run's measured scores (`export(..., fmt='hf')`); `seglab.load_model(out)` reads it."""
    return export(run_or_checkpoint, fmt="hf", out=out, overwrite=overwrite, push_to_hub=push_to_hub)


def inspect(config: Union[Config, PathLike], *, overrides: Sequence[str] = (), out: Optional[PathLike] = None,
            num_samples: int = 6) -> dict[str, Any]:
    """Decode and check every file; count samples, sizes and class pixels; draw a sample grid.

    Returns the summary also written to OUT/inspect.json (default runs/inspect_<output.name>); its
    `problems` are what would make `seglab train` refuse the data.
    """
    cfg = config if isinstance(config, Config) else load_config(config, list(overrides))
    problems: list[str] = []
    warnings: list[str] = []  # what train accepts but a user should know (masks without images)
    data = build_data(cfg.data, cfg.augment, split=build_split(cfg.data, problems, warnings))
    labels = data.labels
    summary: dict[str, Any] = {"classes": labels.names, "ignore_index": labels.ignore_index,
                               "palette": {n: list(c) for n, c in zip(labels.names, labels.palette)}, "splits": {}}
    if data.sources:
        rows = source_summary(labels, data.sources)
        for row, k in zip(rows, range(len(data.sources))):
            row["samples"] = {name: loader.source_of.count(k) for name, loader in data.readers.items()}
        summary["sources"] = rows
        summary["strategy"] = cfg.loss.strategy
    for name, loader in data.readers.items():
        stats = check_split(loader, problems)
        # overlapping classes: each class's share of the labelled pixels (the shares may sum past 1)
        total = (sum(h * w for h, w in stats.sizes) - stats.ignored if labels.multilabel else int(stats.counts.sum()))
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
        warnings += input_notes(loader, stats, cfg.augment.mean, cfg.augment.std)
    summary["problems"] = problems
    summary["warnings"] = warnings
    out_dir = Path(out) if out is not None else Path(cfg.output.dir) / f"inspect_{cfg.output.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    if "train" in data.readers and num_samples:
        loader = data.readers["train"]
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

