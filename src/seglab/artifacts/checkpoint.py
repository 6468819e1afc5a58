"""Checkpoints: tensors plus plain metadata, written atomically, read with weights_only=True."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..errors import CheckpointError, brief
from ..fileio import atomic_path, write_error
from .model_info import ModelInfo

FORMAT = "seglab-checkpoint"
VERSION = 1


def rng_state() -> dict[str, Any]:
    """Every random state a training epoch reads, in weights_only-safe types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the torch, numpy and Python random states that `rng_state` saved."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    *internal, version = state["python"]
    random.setstate((version, tuple(internal), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write {format, version, **payload} atomically; payload holds tensors and plain values only."""
    data = {"format": FORMAT, "version": VERSION, **payload}
    with atomic_path(Path(path)) as tmp:
        try:
            torch.save(data, tmp)
        except RuntimeError as exc:  # torch's writer reports a full disk as "enforce fail ... unexpected pos"
            raise write_error(Path(path), exc, needed=_tensor_bytes(data)) from None


def _tensor_bytes(obj: Any) -> int:
    """About how many bytes torch.save writes for `obj`: its tensors' sizes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def load_checkpoint(path: Path, map_location: str = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Load and check a seglab checkpoint; anything else fails with one line naming the file. `mmap`: map
    the tensors instead of reading them (for the metadata alone)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # any file: pickle, zip, text... whatever fails, it is not a checkpoint
        first = brief(exc) or type(exc).__name__
        raise CheckpointError(f"{path}: not a seglab checkpoint ({first})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a seglab checkpoint (no '{FORMAT}' marker)")
    version = data.get("version")
    if type(version) is not int:  # "1" or 1.0 is a file written by something else, not an old seglab
        raise CheckpointError(f"{path}: checkpoint version is {version!r} ({type(version).__name__}), not a whole "
                              f"number (seglab writes {VERSION}); the file was not written by seglab's save_checkpoint")
    if version != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version} is not supported (expected {VERSION})")
    for key in ("model_state", "model", "labels", "config"):
        if key not in data:
            raise CheckpointError(f"{path}: seglab checkpoint lacks '{key}'")
    if not isinstance(data["config"], dict) or not isinstance(data["model_state"], dict):
        raise CheckpointError(f"{path}: checkpoint metadata 'config' or 'model_state' is not a mapping; the file "
                              "was not written by seglab or was altered")
    read_model_info(path, data)  # the metadata is checked here, so no reader meets a half-valid file
    return data


def read_model_info(path: Path, data: Optional[dict[str, Any]] = None) -> ModelInfo:
    """The ModelInfo of a seglab checkpoint (`data`: the checkpoint when already loaded; else its metadata
    is read without loading its tensors)."""
    data = data if data is not None else load_checkpoint(path, mmap=True)
    return ModelInfo.from_dict(data, f"{path}: checkpoint", data.get("config"))
