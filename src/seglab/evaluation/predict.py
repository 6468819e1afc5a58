"""Inference: logits at full resolution, models from checkpoints, and `seglab predict` over files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.labels import LabelSpace
from ..data.masks import IMAGE_EXTENSIONS, read_image
from ..data.transforms import prepare_eval_image
from ..engine.checkpoint import load_checkpoint
from ..errors import CheckpointError, DataError
from ..fileio import atomic_path
from ..models import build_model_from_meta
from .inference import InferenceSettings, logits_with


@torch.no_grad()
def logits_at(model: nn.Module, images: torch.Tensor, size: Sequence[int], channels_last: bool = False) -> torch.Tensor:
    """(N, C, h, w) normalised images -> (N, K, H, W) logits, bilinearly resized to `size` = (H, W)."""
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    out = model(images)
    if isinstance(out, dict):  # a model left in training mode
        out = out["out"]
    if tuple(out.shape[-2:]) != tuple(size):
        out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=False)
    return out


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint with everything prediction needs."""

    model: nn.Module
    labels: LabelSpace
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: Optional[tuple[int, int]]
    in_channels: int
    checkpoint: dict[str, Any]


def load_model(path: Path, device: str = "cpu") -> LoadedModel:
    """Rebuild the model of a seglab checkpoint in eval mode."""
    ckpt = load_checkpoint(path)
    meta = ckpt["model"]
    try:
        model = build_model_from_meta(meta)
        model.load_state_dict(ckpt["model_state"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: model weights do not match the stored model config ({str(exc)[:120]})") from None
    model.to(device).eval()
    norm = ckpt.get("normalization", {})
    size = ckpt.get("input_size")
    return LoadedModel(
        model=model,
        labels=LabelSpace.from_dict(ckpt["labels"]),
        mean=tuple(norm.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(norm.get("std", (0.229, 0.224, 0.225))),
        input_size=tuple(size) if size else None,
        in_channels=int(meta["in_channels"]),
        checkpoint=ckpt,
    )


def predict_image(lm: Any, image: np.ndarray, device: str = "cpu", settings: Optional[InferenceSettings] = None) -> np.ndarray:
    """(H, W, C) uint8 image -> (H, W) uint8 class map at the image's own size.

    `lm` is a LoadedModel (PyTorch) or an OnnxModel (onnxruntime); both carry the preprocessing.
    `settings`: sliding windows / test-time augmentation (None: the whole image once).
    """
    x = prepare_eval_image(image, lm.input_size, lm.mean, lm.std).unsqueeze(0)
    net = lm.model if isinstance(lm, LoadedModel) else lm
    x = x.to(device) if isinstance(lm, LoadedModel) else x
    if settings is not None and not settings.plain:
        with torch.no_grad():
            logits = logits_with(net, x, image.shape[:2], settings)
    else:
        logits = logits_at(net, x, image.shape[:2])
    return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()


def overlay(image: np.ndarray, color_mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours into the image; black (background or ignored) pixels are left untouched."""
    rgb = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image, 3, axis=-1)
    blended = rgb.astype(np.float32) * (1 - alpha) + color_mask.astype(np.float32) * alpha
    return np.where(color_mask.any(-1, keepdims=True), blended, rgb).astype(np.uint8)


def collect_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files and folders (their images, not recursive) -> sorted image paths."""
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DataError(f"{p}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return out


class _ImageFiles(torch.utils.data.Dataset):
    """Decodes input images (in DataLoader workers when asked)."""

    def __init__(self, files: list[Path], channels: int):
        self.files, self.channels = files, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return i, read_image(self.files[i], self.channels)


def _as_is(item):
    return item


def _write_outputs(path: Path, out_dir: Path, labels: np.ndarray, color: np.ndarray, image: np.ndarray) -> list[Path]:
    from PIL import Image

    written = []
    for suffix, arr in (("mask", labels), ("color", color), ("overlay", overlay(image, color))):
        target = out_dir / f"{path.stem}_{suffix}.png"
        with atomic_path(target) as tmp:
            Image.fromarray(arr).save(tmp, format="PNG")
        written.append(target)
    return written


def predict_files(checkpoint: Path, inputs: Sequence[str], out_dir: Path, device: str = "cpu", progress: bool = True,
                  engine: str = "torch", settings: Optional[InferenceSettings] = None, workers: int = 0):
    """Write `<stem>_mask.png` (indices), `<stem>_color.png` and `<stem>_overlay.png` per input image.

    engine 'torch' reads a seglab checkpoint; 'onnxruntime' an ONNX file from `seglab export`.
    workers > 0 decode images in that many processes and encode the PNGs in as many threads.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    if engine == "onnxruntime":
        from .export import OnnxModel

        lm: Any = OnnxModel(checkpoint)
        device = "cpu"
    else:
        lm = load_model(checkpoint, device)
    files = collect_inputs(inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    loader = torch.utils.data.DataLoader(_ImageFiles(files, lm.in_channels), batch_size=None, num_workers=workers,
                                         collate_fn=_as_is)
    written: list[Path] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = []
        for i, image in tqdm(loader, total=len(files), desc="predict", unit="img", disable=not progress):
            labels = predict_image(lm, image, device, settings)
            pending.append(pool.submit(_write_outputs, files[i], out_dir, labels, lm.labels.colorize(labels), image))
        for job in pending:
            written.extend(job.result())
    return written
