"""Checkpoints: tensors plus plain metadata, written atomically, read with weights_only=True."""
from __future__ import annotations

import random
from dataclasses import dataclass
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


@dataclass
class ResumeState:
    """What --resume needs besides the weights: optimizer, schedule and loss-scaler states, the training's
    progress (`TrainState.to_dict`), every random state and the loss's class weights."""

    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    train_state: dict[str, Any]
    rng: dict[str, Any]
    scaler: Optional[dict[str, Any]] = None  # fp16's loss scale (absent in files before it was saved)
    class_weights: Optional[torch.Tensor] = None


@dataclass
class Checkpoint:
    """One seglab checkpoint, the one record every reader and the trainer use (read and written here only).

    info: what rebuilding and running the model needs (ModelInfo); config: the resolved config the run trained
    with, as plain values (`resolved_config()` validates it); model_state: the weights evaluation, prediction
    and export load (the moving average when the run kept one); trained_state: the trained weights beside an
    average (None without one: they are model_state), with ema_updates, its count; resume: what --resume
    needs (None in a checkpoint that holds weights only). `path`: where it was read from (errors name it).
    The file is torch.save of {format, version, **to_payload()}; its layout is that of every seglab since
    version 1, so older files load."""

    info: ModelInfo
    config: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    trained_state: Optional[dict[str, torch.Tensor]] = None
    ema_updates: int = 0
    resume: Optional[ResumeState] = None
    path: Optional[Path] = None

    @property
    def trained_weights(self) -> dict[str, torch.Tensor]:
        """The weights training continues from: the trained ones beside an average, else model_state."""
        return self.trained_state if self.trained_state is not None else self.model_state

    @property
    def train_state(self) -> dict[str, Any]:
        """The training's progress as saved ({} in a weights-only checkpoint)."""
        return self.resume.train_state if self.resume is not None else {}

    def section(self, name: str) -> dict[str, Any]:
        """One section of the stored config as plain values ({} when absent): data, augment, eval, ..."""
        value = self.config.get(name)
        return value if isinstance(value, dict) else {}

    def resolved_config(self) -> Any:
        """The stored config validated as a `Config` (one line naming the file when it is not valid)."""
        from ..config import config_from_dict
        from ..errors import ConfigError

        try:
            return config_from_dict(self.config, str(self.path or "checkpoint"))
        except ConfigError as exc:
            raise CheckpointError(f"{self.path}: its config is not valid ({exc})") from None

    def to_payload(self) -> dict[str, Any]:
        """The file's entries: tensors and plain values only."""
        out: dict[str, Any] = {"model_state": self.model_state}
        if self.trained_state is not None:
            out.update(trained_model_state=self.trained_state, ema_updates=self.ema_updates)
        if self.resume is not None:
            r = self.resume
            out.update(optimizer_state=r.optimizer, scheduler_state=r.scheduler, train_state=r.train_state, rng=r.rng,
                       class_weights=r.class_weights)
            if r.scaler is not None:
                out["scaler_state"] = r.scaler
        return {**out, "config": self.config, **self.info.to_dict()}

    def save(self, path: Path) -> None:
        """Write atomically (temporary file, fsync, rename)."""
        save_checkpoint(path, self.to_payload())

    @classmethod
    def load(cls, path: Path, *, tensors: bool = True, map_location: str = "cpu") -> "Checkpoint":
        """Read and check a seglab checkpoint (one line naming the file otherwise); `tensors=False` maps the
        tensors instead of reading them, for the metadata alone."""
        data = load_checkpoint(Path(path), map_location=map_location, mmap=not tensors)
        return cls.from_payload(Path(path), data)

    @classmethod
    def from_payload(cls, path: Path, data: dict[str, Any]) -> "Checkpoint":
        """The record of a loaded file's entries (`load_checkpoint` has checked them)."""
        resume = None
        if "optimizer_state" in data:
            try:
                resume = ResumeState(optimizer=data["optimizer_state"], scheduler=data["scheduler_state"],
                                     train_state=data["train_state"], rng=data["rng"], scaler=data.get("scaler_state"),
                                     class_weights=data.get("class_weights"))
            except KeyError as exc:
                raise CheckpointError(f"{path}: a training checkpoint without '{exc.args[0]}'; the file was altered "
                                      "or not written by seglab") from None
        trained = data.get("trained_model_state")
        return cls(info=read_model_info(path, data), config=data["config"], model_state=data["model_state"],
                   trained_state=trained if isinstance(trained, dict) else None,
                   ema_updates=int(data.get("ema_updates", 0)), resume=resume, path=Path(path))
