"""TorchScript export: a trace, fixed to the traced size, with the ModelInfo as an extra file (seglab.json;
evaluation/runtimes.TorchScriptModel reads it). Loading one runs code: predict opens it only when asked."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

SUFFIX = ".torchscript.pt"


def fixed_size(model: torch.nn.Module) -> str:
    """A trace always keeps the traced size."""
    return "TorchScript traces keep the traced size"


def write(model: torch.nn.Module, example: torch.Tensor, path: Path, metadata: Callable[[int], dict[str, Any]],
          fixed: str, divisor: int, opset: int) -> None:
    """Trace `model` at `example` into `path`, with `metadata(1)` as seglab.json."""
    traced = torch.jit.trace(model, example, check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={"seglab.json": json.dumps(metadata(1))})
