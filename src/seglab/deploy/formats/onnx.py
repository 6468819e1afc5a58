"""ONNX export: any batch, height and width unless the model declares a fixed size (PSPNet's pyramid pooling);
the ModelInfo travels in the graph's metadata (evaluation/runtimes.OnnxModel reads it)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from ...evaluation.runtimes import META_KEY
from ...models import fixed_export_size

SUFFIX = ".onnx"


def fixed_size(model: torch.nn.Module) -> str:
    """Why the graph is fixed to the traced size ('' when it takes any size)."""
    return fixed_export_size(model)


def write(model: torch.nn.Module, example: torch.Tensor, path: Path, metadata: Callable[[int], dict[str, Any]],
          fixed: str, divisor: int, opset: int) -> None:
    """Trace `model` at `example` into `path`, with `metadata(divisor)` (1 for a fixed graph) in the graph."""
    axes = {0: "batch"} if fixed else {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"],
                      opset_version=opset, dynamo=False, dynamic_axes={"image": axes, "logits": axes})
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(metadata(1 if fixed else divisor))
    onnx.save(proto, str(path))
