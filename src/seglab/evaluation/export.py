"""Export a checkpoint to ONNX or TorchScript, and run exported ONNX models with onnxruntime."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..data.labels import LabelSpace
from ..errors import SeglabError
from ..fileio import atomic_path
from .predict import LoadedModel, load_model

META_KEY = "seglab"


def _metadata(lm: LoadedModel, size: Sequence[int]) -> dict[str, Any]:
    return {"labels": lm.labels.to_dict(), "mean": list(lm.mean), "std": list(lm.std), "input_size": list(size),
            "in_channels": lm.in_channels, "model": lm.checkpoint["model"]}


def export_checkpoint(checkpoint: Path, fmt: str, out: Optional[Path] = None,
                      size: Optional[Sequence[int]] = None, opset: int = 17) -> Path:
    """Write the checkpoint's model as `fmt` ('onnx' or 'torchscript') for (1, C, H, W) inputs.

    H, W default to the checkpoint's input size; the exported graph is fixed to that size, and
    `seglab predict` resizes images to it and the logits back, as it does in PyTorch.
    """
    if fmt not in ("onnx", "torchscript"):
        raise SeglabError(f"--format: expected onnx or torchscript, got {fmt!r}")
    lm = load_model(checkpoint)
    size = tuple(size) if size else lm.input_size
    if not size:
        raise SeglabError(f"{checkpoint}: the model was trained at native resolution; give --size H W for the export")
    out = Path(out) if out else Path(checkpoint).with_suffix(".onnx" if fmt == "onnx" else ".torchscript.pt")
    example = torch.randn(1, lm.in_channels, *size)
    model = lm.model.eval()
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            traced = torch.jit.trace(model, example, check_trace=False)
            extra = {"seglab.json": json.dumps(_metadata(lm, size))}
            torch.jit.save(traced, str(tmp), _extra_files=extra)
        else:
            torch.onnx.export(model, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                              opset_version=opset, dynamo=False, dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
            import onnx

            proto = onnx.load(str(tmp))
            entry = proto.metadata_props.add()
            entry.key, entry.value = META_KEY, json.dumps(_metadata(lm, size))
            onnx.save(proto, str(tmp))
    return out


class OnnxModel:
    """An exported ONNX model run by onnxruntime on the CPU, with the metadata predict needs."""

    def __init__(self, path: Path, threads: Optional[int] = None):
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - a dependency of seglab
            raise SeglabError("--engine onnxruntime needs the onnxruntime package") from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise SeglabError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0][:120]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if meta is None:
            raise SeglabError(f"{path}: ONNX model was not exported by seglab (no '{META_KEY}' metadata)")
        info = json.loads(meta)
        self.labels = LabelSpace.from_dict(info["labels"])
        self.mean, self.std = tuple(info["mean"]), tuple(info["std"])
        self.input_size = tuple(info["input_size"])
        self.in_channels = int(info["in_channels"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) normalised images at the export size -> (N, K, H, W) logits."""
        out = self.session.run(None, {"image": np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out)
