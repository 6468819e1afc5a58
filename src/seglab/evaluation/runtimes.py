"""Running exported models: ONNX with onnxruntime, TorchScript with torch.jit, each with the metadata
(`seglab export` stores classes, palette, normalisation and input size inside) that predict needs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..artifacts.model_info import ModelInfo
from ..data.labels import LabelSpace
from ..errors import CheckpointError, SeglabError, brief

META_KEY = "seglab"


class HasModelInfo:
    """The fields prediction reads, taken from the model file's one record (`self.info`)."""

    info: ModelInfo

    @property
    def labels(self) -> LabelSpace:
        return self.info.labels

    @property
    def mean(self) -> tuple[float, ...]:
        return self.info.mean

    @property
    def size_divisor(self) -> int:
        return self.info.size_divisor

    @property
    def std(self) -> tuple[float, ...]:
        return self.info.std

    @property
    def input_size(self) -> Optional[tuple[int, int]]:
        return self.info.input_size  # None: any size

    @property
    def in_channels(self) -> int:
        return self.info.in_channels

    @property
    def image_max(self) -> Optional[float]:
        return self.info.image_max

    @property
    def nodata(self) -> Optional[float]:
        return self.info.nodata


def export_info(text: str, path: Path, kind: str) -> ModelInfo:
    """The ModelInfo an export's JSON metadata carries; a one-line error naming the file otherwise."""
    try:
        return ModelInfo.from_dict(json.loads(text), f"{path}: {kind}")
    except json.JSONDecodeError as exc:
        raise SeglabError(f"{path}: {kind} metadata is not JSON ({brief(exc)}); re-export it with seglab export") from None
    except CheckpointError as exc:
        raise SeglabError(str(exc)) from None


def onnx_providers(available: list[str]) -> list[str]:
    """onnxruntime's execution providers to ask for: CUDA first when onnxruntime-gpu offers it, then the CPU."""
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


class OnnxModel(HasModelInfo):
    """An exported ONNX model run by onnxruntime (on a GPU with onnxruntime-gpu, else the CPU), with the
    metadata predict needs (a Predictor)."""

    device = "cpu"  # where its inputs go: onnxruntime takes numpy arrays

    @property
    def data_settings(self) -> dict:
        return {}  # an export keeps no training config

    def __init__(self, path: Path, threads: Optional[int] = None):
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - a dependency of seglab
            raise SeglabError("--engine onnxruntime needs the onnxruntime package") from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=onnx_providers(ort.get_available_providers()))
        except Exception as exc:
            raise SeglabError(f"{path}: not a loadable ONNX model ({brief(exc)})") from None
        meta = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if meta is None:
            raise SeglabError(f"{path}: ONNX model was not exported by seglab (no '{META_KEY}' metadata)")
        self.info = export_info(meta, path, "ONNX model")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) normalised images at the export size -> (N, K, H, W) logits."""
        out = self.session.run(None, {"image": np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out)


def is_torchscript(path: Path) -> bool:
    """Whether `path` is a TorchScript archive (what `seglab export --format torchscript` writes)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


class TorchScriptModel(HasModelInfo):
    """A TorchScript export run by torch.jit on the CPU, with the metadata predict needs (a Predictor)."""

    device = "cpu"

    @property
    def data_settings(self) -> dict:
        return {}  # an export keeps no training config

    def __init__(self, path: Path):
        extra = {"seglab.json": ""}
        try:
            self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:
            raise SeglabError(f"{path}: not a loadable TorchScript model ({brief(exc)})") from None
        if not extra["seglab.json"]:
            raise SeglabError(f"{path}: TorchScript model was not exported by seglab (no 'seglab.json' inside)")
        self.info = export_info(extra["seglab.json"], path, "TorchScript model")
        self.module.eval()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) normalised images at the export size -> (N, K, H, W) logits."""
        return self.module(x)
