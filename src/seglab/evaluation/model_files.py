"""Opening a model file, the one home for it: a seglab checkpoint, a model folder (`--format hf`), an
ONNX export or a TorchScript export becomes a `Predictor` (normalised images -> logits, with the classes and
preprocessing that go with them). `seglab predict`, `seglab eval`, the notebook predictor (`seglab.load_model`),
export and the reports open models here; what a kind of file is and how it opens is the `MODEL_FILES` table."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import torch
from torch import nn

from ..artifacts.checkpoint import Checkpoint
from ..artifacts.model_folder import ModelFolder, is_model_folder
from ..artifacts.model_info import ModelInfo
from ..data.labels import LabelSpace
from ..errors import CheckpointError, SeglabError, brief
from ..models import build_model_from_meta
from .inference import size_divisor_of
from .runtimes import HasModelInfo, OnnxModel, TorchScriptModel, is_torchscript


class Predictor(Protocol):
    """What prediction runs: normalised images (N, C, h, w) on `device` -> logits (N, K, h, w), with the
    preprocessing and classes that go with them. A LoadedModel (PyTorch checkpoint), an OnnxModel and a
    TorchScriptModel are each one."""

    info: ModelInfo  # labels, mean / std, input_size, in_channels, image_max and nodata below are its fields
    labels: LabelSpace
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: Optional[tuple[int, int]]
    in_channels: int
    image_max: Optional[float]
    nodata: Optional[float]
    device: str
    data_settings: dict[str, Any]  # the data section of the training config ({} when not stored)

    def __call__(self, x: torch.Tensor) -> Any: ...


@dataclass
class LoadedModel(HasModelInfo):
    """A model rebuilt from a checkpoint with everything prediction needs (a Predictor)."""

    model: nn.Module
    info: ModelInfo
    checkpoint: Checkpoint
    device: str = "cpu"

    @property
    def data_settings(self) -> dict[str, Any]:
        return self.checkpoint.section("data")

    def to(self, device: Any) -> "LoadedModel":
        self.model.to(device)
        self.device = str(device)
        return self

    @property
    def size_divisor(self) -> int:
        return size_divisor_of(self.model)

    def __call__(self, x: torch.Tensor) -> Any:
        return self.model(x)


def build_checkpoint_model(path: Path, ckpt: Checkpoint) -> torch.nn.Module:
    """The model a loaded checkpoint describes, with its weights; errors name the checkpoint."""
    try:
        model = build_model_from_meta(ckpt.info.model_meta, pretrained=False)
    except SeglabError as exc:
        raise CheckpointError(f"{path}: {brief(exc, 200)}") from None
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: checkpoint's model settings are not usable ({brief(exc)})") from None
    try:
        model.load_state_dict(ckpt.model_state)
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: model weights do not match the stored model config ({brief(exc)})") from None
    return model


def read_weights_record(path: Path, tensors: bool = True) -> Checkpoint:
    """The Checkpoint record of a checkpoint file or of a model folder (weights only); `tensors=False` for
    the metadata alone."""
    if Path(path).is_dir():
        return ModelFolder.load(Path(path), tensors=tensors).as_checkpoint()
    return Checkpoint.load(Path(path), tensors=tensors)


def load_model(path: Path, device: str = "cpu") -> LoadedModel:
    """Rebuild the model of a seglab checkpoint (or model folder) in eval mode."""
    ckpt = read_weights_record(path)  # its ModelInfo checked once, then used to build the model and to predict
    model = build_checkpoint_model(path, ckpt)
    model.to(device).eval()
    return LoadedModel(model=model, info=ckpt.info, checkpoint=ckpt, device=str(device))


@dataclass(frozen=True)
class ModelFileKind:
    """One kind of model file: the engine that runs it (`--engine`), how it opens, and the one-line answer
    for a file of this kind given without its engine (None: the default kind, opened without asking)."""

    name: str
    engine: str
    open: Callable[[Path, str], "Predictor"]
    ask: Optional[Callable[[Path], Optional[str]]] = None
    is_kind: Optional[Callable[[Path], bool]] = None  # recognises its files for the default engine


def _ask_onnx(path: Path) -> Optional[str]:
    return f"{path}: an ONNX model; predict runs it with --engine onnxruntime" if path.suffix.lower() == ".onnx" else None


def _ask_torchscript(path: Path) -> Optional[str]:
    if path.is_file() and is_torchscript(path):  # reading the archive's file names runs nothing
        return (f"{path}: a TorchScript export; loading one runs the code inside it, so predict does it only when "
                "asked: --engine torchscript (for files you trust)")
    return None


# every kind of model file seglab opens; an export format adds its row (its writer is in deploy/formats/)
MODEL_FILES = {
    "checkpoint": ModelFileKind("checkpoint", "torch", lambda path, device: load_model(path, device)),
    "hf": ModelFileKind("hf", "torch", lambda path, device: load_model(path, device), is_kind=is_model_folder),
    "onnx": ModelFileKind("onnx", "onnxruntime", lambda path, device: OnnxModel(path), _ask_onnx),
    "torchscript": ModelFileKind("torchscript", "torchscript", lambda path, device: TorchScriptModel(path),
                                 _ask_torchscript),
}
ENGINES = tuple(dict.fromkeys(k.engine for k in MODEL_FILES.values()))


def model_file_kind(path: Path, engine: str) -> str:
    """'checkpoint', 'hf', 'torchscript' or 'onnx': what `path` is opened as, by the engine asked for. A
    TorchScript archive runs code when it is loaded (torch.jit.load), so it is loaded only on an explicit
    engine 'torchscript', never because a file looks like one; an ONNX file needs its engine too."""
    path = Path(path)
    for kind in MODEL_FILES.values():
        if engine == kind.engine and kind.engine != "torch":
            return kind.name
    for kind in MODEL_FILES.values():
        if engine == kind.engine and kind.is_kind is not None and kind.is_kind(path):
            return kind.name
    for kind in MODEL_FILES.values():
        message = kind.ask(path) if kind.ask is not None else None
        if message:
            raise CheckpointError(message)
    return "checkpoint"


def open_model(path: Path, engine: str = "torch", device: str = "cpu") -> Predictor:
    """The Predictor of a model file, by the engine asked for (see `model_file_kind`)."""
    return MODEL_FILES[model_file_kind(path, engine)].open(Path(path), device)
