"""Checkpoints: tensors plus plain metadata, written atomically, read with weights_only=True."""
from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..fileio import atomic_path

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
        torch.save(data, tmp)


def load_checkpoint(path: Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load and check a seglab checkpoint; anything else fails with one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a seglab checkpoint ({first[:120]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a seglab checkpoint (no '{FORMAT}' marker)")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {data.get('version')} is not supported (expected {VERSION})")
    for key in ("model_state", "model", "labels", "config"):
        if key not in data:
            raise CheckpointError(f"{path}: seglab checkpoint lacks '{key}'")
    return data
