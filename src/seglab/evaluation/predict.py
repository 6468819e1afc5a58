"""Prediction: images -> logits at full resolution -> class maps, and `seglab predict` over files (its outputs,
names and markers). Models are opened in model_files.py."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.datasets import collate_eval
from ..data.folder import marked_mask_key
from ..data.labels import LabelSpace
from ..data.masks import IMAGE_EXTENSIONS, display_rgb, read_image
from ..data.transforms import prepare_eval_image
from ..errors import DataError, SeglabError
from ..fileio import atomic_path, atomic_write_text
from ..artifacts.run_dir import RunDir, RunLock
from .inference import InferenceSettings, class_probabilities, label_maps, logits_with, net_logits
from .model_files import Predictor, open_model

log = logging.getLogger("seglab")


@torch.no_grad()
def logits_at(model: nn.Module, images: torch.Tensor, size: Sequence[int], channels_last: bool = False) -> torch.Tensor:
    """(N, C, h, w) normalised images -> (N, K, H, W) logits, bilinearly resized to `size` = (H, W)."""
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    out = net_logits(model, images)
    if tuple(out.shape[-2:]) != tuple(size):
        out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=False)
    return out


def image_logits(predictor: Predictor, image: np.ndarray, settings: Optional[InferenceSettings] = None) -> torch.Tensor:
    """(H, W, C) image -> (1, K, H, W) logits at the image's own size.

    `settings`: sliding windows / test-time augmentation (None: the whole image once).
    """
    x = prepare_eval_image(image, predictor.input_size, predictor.mean, predictor.std).unsqueeze(0).to(predictor.device)
    if settings is not None and not settings.plain:
        with torch.no_grad():
            return logits_with(predictor, x, image.shape[:2], settings, predictor.labels.multilabel)
    return logits_at(predictor, x, image.shape[:2])


def sized_image_logits(predictor: Predictor, image: np.ndarray, settings: Optional[InferenceSettings],
                       where: str) -> torch.Tensor:
    """`image_logits`, with an image too small (or empty) for the model refused in one line naming `where`."""
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise DataError(f"{where}: {h}x{w} pixels, an empty image; leave it out")
    try:
        return image_logits(predictor, image, settings)
    except RuntimeError as exc:
        if not is_size_error(exc):
            raise
        raise DataError(f"{where}: {h}x{w} pixels is too small for this model (the smallest square input it takes "
                        f"is {smallest_input(predictor)} pixels a side); resize or pad the image, or leave it out") from None


def class_map(logits: torch.Tensor, labels: LabelSpace, threshold: Optional[float] = None) -> np.ndarray:
    """(1, K, H, W) logits -> (H, W) uint8 label map (`inference.label_maps`: class ids, or for overlapping
    classes one bit per class)."""
    return label_maps(logits, labels.multilabel, threshold)[0].cpu().numpy()


def predict_image(predictor: Predictor, image: np.ndarray, settings: Optional[InferenceSettings] = None,
                  threshold: Optional[float] = None) -> np.ndarray:
    """(H, W, C) image -> (H, W) uint8 label map at the image's own size (see `class_map`)."""
    return class_map(image_logits(predictor, image, settings), predictor.labels, threshold)


def check_threshold(threshold: Optional[float], labels: LabelSpace) -> None:
    """A foreground threshold is for two-class (background / foreground) models and multi-label models (every
    class's sigmoid), strictly inside (0, 1)."""
    if threshold is None:
        return
    if labels.num_classes != 2 and not labels.multilabel:
        raise SeglabError(f"--threshold: for two-class (binary) models; this one has {labels.num_classes} classes "
                          f"({', '.join(labels.names[:4])}{' ...' if labels.num_classes > 4 else ''}), so each pixel "
                          "takes its most probable class")
    if not 0.0 < threshold < 1.0:
        raise SeglabError(f"--threshold: a probability strictly between 0 and 1 (got {threshold})")


def overlay(image: np.ndarray, color_mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours into the image; black (background or ignored) pixels are left untouched."""
    rgb = display_rgb(image)
    blended = rgb.astype(np.float32) * (1 - alpha) + color_mask.astype(np.float32) * alpha
    return np.where(color_mask.any(-1, keepdims=True), blended, rgb).astype(np.uint8)


def mask_rule(data: dict[str, Any]) -> Callable[[str], bool]:
    """Whether a file stem is a mask by a dataset config's pairing rule (`data.mask_suffix` or the mask
    regex of `data.pair_stems`), or a region mask (`data.region_suffix` where splits have `regions`), so
    predict on a folder of images and masks side by side skips the masks."""
    suffix, pair = data.get("mask_suffix") or "", data.get("pair_stems")
    stems = (pair["image"], pair["mask"]) if pair else None
    has_regions = any(isinstance(data.get(k), dict) and data[k].get("regions") for k in ("train", "val", "test"))
    region_suffix = (data.get("region_suffix") or "") if has_regions else ""

    def is_mask(stem: str) -> bool:
        if region_suffix and stem.endswith(region_suffix) and len(stem) > len(region_suffix):
            return True
        return marked_mask_key(stem, suffix, stems) is not None

    return is_mask


# what predict writes for an image NAME: NAME_mask.png (NAME_mask_CLASS.png), NAME_color.png, NAME_overlay.png
OUTPUT_STEM = re.compile(r"(.+)_(mask(_.+)?|color|overlay)")
# the file in an output folder that lists what predict wrote there, one name a line
OUTPUT_MARKER = ".seglab-predict"
# what an interrupted write of one of those files leaves (fileio.atomic_path: ".NAME.<8 random>.tmp")
OUTPUT_TEMPORARY = re.compile(r"\.(.+_(mask(_.+)?|color|overlay)\.png|.+_prob\.npy|\.seglab-predict)\.[A-Za-z0-9_]{8}\.tmp")


def predict_outputs(folder: Path, files: Sequence[Path]) -> set[Path]:
    """The files of `folder` that an earlier predict wrote: listed in its marker, or named NAME_mask / _color /
    _overlay beside an image NAME of the same folder (so a second predict into its input folder skips them)."""
    marker = folder / OUTPUT_MARKER
    listed = set(marker.read_text(errors="replace").splitlines()) if marker.is_file() else set()
    stems = {q.stem for q in files}
    out = set()
    for q in files:
        m = OUTPUT_STEM.fullmatch(q.stem)
        if q.name in listed or (m is not None and m.group(1) in stems - {q.stem}):
            out.add(q)
    return out


def collect_inputs(inputs: Sequence[str], is_mask: Optional[Callable[[str], bool]] = None,
                   skipped: Optional[list[Path]] = None) -> list[Path]:
    """Files and folders (their images, not recursive; without files that `is_mask` and without predict's own
    outputs, which are added to `skipped`) -> sorted image paths. Files named one by one are kept."""
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS
                           and not (is_mask is not None and is_mask(q.stem)))
            own = predict_outputs(p, found)
            if skipped is not None:
                skipped.extend(sorted(own))
            found = [q for q in found if q not in own]
            if not found:
                raise DataError(f"{p}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    return [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]  # a file given twice: once


class _ImageFiles(torch.utils.data.Dataset):
    """Decodes input images (in DataLoader workers when asked)."""

    def __init__(self, files: list[Path], channels: int, image_max: Optional[float], nodata: Optional[float]):
        self.files, self.channels, self.image_max, self.nodata = files, channels, image_max, nodata

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return i, read_image(self.files[i], self.channels, self.image_max, nodata=self.nodata)


def output_names(files: Sequence[Path]) -> list[str]:
    """The base name of each input's outputs: its stem, or, where stems repeat (1.jpg and 1.png, or a/1.png
    and b/1.png), its file name, then its folder and file name, so no output overwrites another."""
    def counts(keys: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in keys:
            out[k] = out.get(k, 0) + 1
        return out

    stems = counts([f.stem for f in files])
    names = counts([f.name for f in files])
    out = []
    for f in files:
        if stems[f.stem] == 1:
            out.append(f.stem)
        elif names[f.name] == 1:
            out.append(f.name)
        else:
            out.append(f"{f.parent.name}_{f.name}" if f.parent.name else f.name)
    dup = counts(out)
    return [f"{b}_{i}" if dup[b] > 1 else b for i, b in enumerate(out)]


def _write_outputs(base: str, out_dir: Path, masks: list[tuple[str, np.ndarray]], color: np.ndarray, image: np.ndarray,
                   probabilities: Optional[np.ndarray] = None) -> list[Path]:
    from PIL import Image

    written = []
    for suffix, arr in masks + [("color", color), ("overlay", overlay(image, color))]:
        target = out_dir / f"{base}_{suffix}.png"
        with atomic_path(target) as tmp:
            Image.fromarray(arr).save(tmp, format="PNG")
        written.append(target)
    if probabilities is not None:
        target = out_dir / f"{base}_prob.npy"
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            np.save(f, probabilities)
        written.append(target)
    return written


def mask_files(label_map: np.ndarray, labels: LabelSpace) -> list[tuple[str, np.ndarray]]:
    """The mask files of one prediction, as (file suffix, array): `mask` (class ids), or for overlapping
    classes one 0/255 mask per class, suffixed with the class name (`mask_<name>`)."""
    if not labels.multilabel:
        return [("mask", label_map)]
    return [(f"mask_{safe_name(name)}", ((label_map >> k) & 1) * np.uint8(255)) for k, name in enumerate(labels.names)]


def safe_name(name: str) -> str:
    """A class name as part of a file name: characters other than letters, digits, '-' and '.' become '_'."""
    import re

    return re.sub(r"[^\w.-]", "_", name) or "class"


# What PyTorch says when an input is smaller than a network's pooling, kernels or padding allow.
_SIZE_ERRORS = ("Output size is too small", "Kernel size can't be greater than actual input size",
                "Padding size should be less than the corresponding input dimension")


def is_size_error(exc: BaseException) -> bool:
    """Whether `exc` is PyTorch's error for an input too small for the model."""
    return any(m in str(exc) for m in _SIZE_ERRORS)


@torch.no_grad()
def smallest_input(predictor: "Predictor", limit: int = 1024) -> int:
    """The smallest side of a square input the model runs on (probed, 1..`limit`)."""
    side = 1
    while side <= limit:
        try:
            predictor(torch.zeros(1, predictor.in_channels, side, side, device=predictor.device))
            return side
        except RuntimeError as exc:
            if not is_size_error(exc):
                raise
        side = side + 1 if side < 64 else side * 2
    return limit


def predict_files(checkpoint: Path, inputs: Sequence[str], out_dir: Path, device: str = "cpu", progress: bool = True,
                  engine: str = "torch", settings: Optional[InferenceSettings] = None, workers: int = 0,
                  save_probabilities: bool = False, threshold: Optional[float] = None):
    """Write `<stem>_mask.png` (indices; a multi-label model: `<stem>_mask_<class>.png`, 0/255, per class),
    `<stem>_color.png` and `<stem>_overlay.png` per input image (overlapping classes in the mean of their
    colours; inputs sharing a stem keep their extension, `1.jpg_mask.png`: see `output_names`); with
    `save_probabilities`, `<stem>_prob.npy`, the (K, H, W) float16 probabilities (softmax, or each class's
    sigmoid) at the image's size. `threshold`: a two-class model's foreground threshold (default: the more
    probable class), or a multi-label model's threshold on every class's sigmoid (default 0.5).

    engine 'torch' reads a seglab checkpoint, 'torchscript' a TorchScript export (its code runs when loaded:
    trusted files only), 'onnxruntime' an ONNX export.
    workers > 0 decode images in that many processes and encode the PNGs in as many threads. Files an earlier
    predict wrote into an input folder are skipped (said in the log); the output folder is locked while
    predict writes it, and its `.seglab-predict` lists what was written there.
    """
    lm = open_model(checkpoint, engine, device)
    check_threshold(threshold, lm.labels)
    skipped: list[Path] = []
    files = collect_inputs(inputs, mask_rule(lm.data_settings), skipped)
    if skipped:
        log.info(f"skipped {len(skipped)} files that an earlier seglab predict wrote (e.g. {skipped[0].name})")
    bases = output_names(files)
    out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(RunDir(out_dir), "predict output folder"):  # two predicts into one folder would mix outputs
        _remove_interrupted_writes(out_dir)
        written = _predict_into(lm, files, bases, out_dir, progress, settings, workers, save_probabilities, threshold)
        marker = out_dir / OUTPUT_MARKER
        before = marker.read_text(errors="replace").splitlines() if marker.is_file() else []
        atomic_write_text(marker, "\n".join(sorted(set(before) | {w.name for w in written})) + "\n")
    return written


def _remove_interrupted_writes(out_dir: Path) -> None:
    """Delete the temporaries of an earlier predict killed while writing into `out_dir` (only names predict
    writes; the folder's lock is held, so no predict is writing them now)."""
    stale = [p for p in out_dir.iterdir() if OUTPUT_TEMPORARY.fullmatch(p.name) and p.is_file() and not p.is_symlink()]
    for p in stale:
        p.unlink()
    if stale:
        log.info(f"{out_dir}: removed {len(stale)} temporary file{'s' if len(stale) > 1 else ''} that an interrupted "
                 f"predict left (e.g. {stale[0].name})")


def _predict_into(lm: "Predictor", files: list[Path], bases: list[str], out_dir: Path, progress: bool,
                  settings: Optional[InferenceSettings], workers: int, save_probabilities: bool,
                  threshold: Optional[float]) -> list[Path]:
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    images = _ImageFiles(files, lm.in_channels, lm.image_max, lm.nodata)
    loader = torch.utils.data.DataLoader(images, batch_size=None, num_workers=workers,
                                         collate_fn=collate_eval)  # items as they are
    written: list[Path] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = []
        # a bar on a terminal only (disable=None), so logs and captured output stay clean
        for i, image in tqdm(loader, total=len(files), desc="predict", unit="img", disable=None if progress else True):
            logits = sized_image_logits(lm, image, settings, str(files[i]))
            labels = class_map(logits, lm.labels, threshold)
            probs = (class_probabilities(logits, lm.labels.multilabel)[0].to(torch.float16).cpu().numpy()
                     if save_probabilities else None)
            pending.append(pool.submit(_write_outputs, bases[i], out_dir, mask_files(labels, lm.labels),
                                       lm.labels.colorize(labels), image, probs))
        for job in pending:
            written.extend(job.result())
    return written
