"""The model card of a model folder (README.md): the Hub's YAML metadata (library_name, tags, datasets, metrics,
model-index) and what a reader needs, each figure read from the run folder's files (eval/SPLIT/metrics.json,
summary.json, split.json); what the run folder does not hold is said to be unknown, never guessed."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import yaml

from ..artifacts.checkpoint import Checkpoint
from ..artifacts.run_dir import RunDir
from ..config.metric_names import HEADLINE, MEAN_BOUNDARY_IOU, MIOU, PIXEL_ACCURACY

# the Hub's metric ids (the `evaluate` library's names) for the headline metrics that have one
HUB_METRIC_IDS = {MIOU.name: "mean_iou", PIXEL_ACCURACY.name: "accuracy", MEAN_BOUNDARY_IOU.name: "boundary_iou"}
SPLITS = ("val", "test")


def _num(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.4f}"


def _dataset_name(config: dict[str, Any]) -> str:
    if (config.get("data") or {}).get("kind") == "synthetic":
        return "synthetic-shapes"
    root = str((config.get("data") or {}).get("root") or "")
    return Path(root).name or "unknown"


def _evaluations(run: Optional[RunDir]) -> dict[str, dict[str, Any]]:
    if run is None:
        return {}
    found = {s: run.read_json(run.eval_metrics(s)) for s in SPLITS}
    return {s: m for s, m in found.items() if m}


def _split_sizes(run: Optional[RunDir]) -> dict[str, int]:
    data = run.read_json(run.split) if run is not None else None
    if not isinstance(data, dict):
        return {}
    return {s: len(data[s]) for s in ("train", "val", "test") if isinstance(data.get(s), list) and data[s]}


def _front_matter(name: str, ckpt: Checkpoint, evals: dict[str, dict[str, Any]]) -> str:
    dataset = _dataset_name(ckpt.config)
    encoder = ckpt.info.options.get("encoder")
    tags = ["seglab", "image-segmentation", "semantic-segmentation", ckpt.info.name,
            *([str(encoder).replace("/", "-")] if encoder else [])]
    meta: dict[str, Any] = {"library_name": "seglab", "pipeline_tag": "image-segmentation", "tags": tags,
                            "datasets": [dataset], "metrics": sorted(set(HUB_METRIC_IDS.values()))}
    results = []
    for split, m in evals.items():
        values = [{"type": HUB_METRIC_IDS[k.name], "name": k.label, "value": round(float(m[k.name]), 4)}
                  for k in HEADLINE if k.name in HUB_METRIC_IDS and isinstance(m.get(k.name), (int, float))]
        results.append({"task": {"type": "image-segmentation", "name": "Semantic segmentation"},
                        "dataset": {"name": dataset, "type": dataset, "split": split}, "metrics": values})
    if results:
        meta["model-index"] = [{"name": name, "results": results}]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _results(evals: dict[str, dict[str, Any]], names: list[str]) -> list[str]:
    if not evals:
        return ["No evaluation was found in the run folder (eval/SPLIT/metrics.json): this model is unscored. "
                "Score it with `seglab eval DIR --split val`.", ""]
    lines = ["| split | images | " + " | ".join(m.label for m in HEADLINE) + " | inference |",
             "|---|---|" + "---|" * len(HEADLINE) + "---|"]
    for split, m in evals.items():
        lines.append(f"| {split} | {m.get('num_images', 'n/a')} | " + " | ".join(_num(m.get(k.name)) for k in HEADLINE)
                     + f" | {m.get('inference', 'n/a')} |")
    lines += ["", "Per class (IoU / Boundary IoU):", "",
              "| class | " + " | ".join(f"{s} IoU | {s} Boundary IoU" for s in evals) + " |",
              "|---|" + "---|---|" * len(evals)]
    for k, name in enumerate(names):
        cells = []
        for m in evals.values():
            iou, biou = m.get("iou") or [], m.get("boundary_iou") or []
            cells += [_num(iou[k] if k < len(iou) else None), _num(biou[k] if k < len(biou) else None)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _training(ckpt: Checkpoint, run: Optional[RunDir]) -> list[str]:
    summary = (run.read_json(run.summary) if run is not None else None) or {}
    timing = summary.get("timing") or {}
    lines = []
    seconds = timing.get("train_seconds")
    if seconds is not None:
        lines.append(f"- Training: {timing.get('epochs_run', '?')} epochs, {timing.get('steps_run', '?')} steps, "
                     f"{seconds / 60:.1f} min of training on {summary.get('hardware', 'unknown hardware')} "
                     f"(torch {summary.get('torch', '?')}, precision {summary.get('precision', '?')}); best epoch "
                     f"{summary.get('best_epoch', '?')} by {summary.get('best_metric', '?')}.")
    else:
        lines.append("- Training time and hardware: not recorded (no summary.json beside the checkpoint).")
    command = summary.get("command")
    lines.append(f"- Command: `{command}`" if command else
                 "- Command: not recorded; the resolved training config is `training_config` in config.json "
                 "(`seglab train` on it repeats the run).")
    return lines


def model_card(ckpt: Checkpoint, run: Optional[RunDir], name: str, repo: Optional[str] = None) -> str:
    """README.md of a model folder for the checkpoint `ckpt` of the run folder `run` (None: a checkpoint
    outside a run folder: no scores, time or data split are known). `name`: the model's title; `repo`: the
    Hub id its examples load (default: a placeholder, OWNER/NAME)."""
    ref = f"hf://{repo or 'OWNER/NAME'}"
    info, cfg = ckpt.info, ckpt.config
    data = cfg.get("data") or {}
    evals = _evaluations(run)
    sizes = _split_sizes(run)
    encoder = info.options.get("encoder")
    pretrained = "; ".join(f"{r.get('source')} ({Path(str(r.get('file'))).name}, sha256 {str(r.get('sha256', ''))[:16]}..., "
                           f"{r.get('tensors_loaded')} tensors matched by {r.get('matched_by')})"
                           for r in info.pretrained) or "none (trained from random initialisation)"
    size = f"{info.input_size[0]} x {info.input_size[1]}" if info.input_size else "each image's own size"
    split_text = ", ".join(f"{n} {s}" for s, n in sizes.items()) or "unknown (no split.json beside the checkpoint)"
    lines = [
        _front_matter(name, ckpt, evals), f"# {name}", "",
        f"A semantic-segmentation model trained with [seglab](https://pypi.org/project/seglab/): {info.name}"
        + (f" on a {encoder} encoder" if encoder else "") + f", {info.num_classes} classes, {info.in_channels} input "
        "channels.", "",
        "## Use", "", "```python", "import seglab", "", f'model = seglab.load_model("{ref}")  # or the folder\'s path',
        'mask = model.predict("image.png")  # (H, W) uint8 class ids at the image\'s size', "```", "",
        "```bash", f"seglab predict {ref} images/ --out predictions/", "```", "",
        "## Classes", "", "| id | class | colour (RGB) |", "|---|---|---|",
        *(f"| {k} | {n} | {tuple(c)} |" for k, (n, c) in enumerate(zip(info.labels.names, info.labels.palette))), "",
        "## Data", "",
        f"- Dataset: `{_dataset_name(cfg)}` ({data.get('mask_encoding', '?')} masks); images per split: {split_text}.",
        f"- Preprocessing (travels in config.json): images resized to {size}, normalised with mean "
        f"{[round(v, 4) for v in info.mean]} and std {[round(v, 4) for v in info.std]}"
        + (f", intensities divided by {info.image_max:g}" if info.image_max else "") + ".",
        f"- Encoder weights at the start: {pretrained}.", "",
        "## Results", "", "Measured by seglab's evaluation at full resolution (eval/SPLIT/metrics.json of the run):", "",
        *_results(evals, list(info.labels.names)),
        "## Training", "", *_training(ckpt, run), "",
        "## Limitations", "",
        f"- Scores hold for the data above ({split_text}); other cameras, scenes or label conventions were not measured.",
        "- The model knows only the classes listed; every pixel gets one of them"
        + (" (pixels may carry several: multi-label)" if info.multilabel else "") + ".",
        "- Inputs are resized to the training size and predictions back: small structures may be lost." if info.input_size
        else "- Images are predicted at their own size; very different sizes from training were not measured.", "",
    ]
    return "\n".join(lines)
