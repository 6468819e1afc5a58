"""Export a checkpoint to ONNX or TorchScript (`seglab export`); evaluation/runtimes.py runs the exports."""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..errors import SeglabError
from ..fileio import atomic_path
from ..models import fixed_export_size
from .predict import LoadedModel, load_model

from .runtimes import META_KEY


log = logging.getLogger("seglab")


def _metadata(lm: LoadedModel, size: Sequence[int], fixed: str = "") -> dict[str, Any]:
    return {"labels": lm.labels.to_dict(), "mean": list(lm.mean), "std": list(lm.std), "input_size": list(size),
            "in_channels": lm.in_channels, "image_max": lm.image_max, "model": lm.checkpoint["model"],
            "dynamic_size": not fixed, "fixed_size_reason": fixed}


def export_checkpoint(checkpoint: Path, fmt: str, out: Optional[Path] = None,
                      size: Optional[Sequence[int]] = None, opset: int = 17) -> Path:
    """Write the checkpoint's model as `fmt` ('onnx' or 'torchscript') for (N, C, H, W) inputs.

    H, W default to the checkpoint's input size. ONNX graphs take any batch, height and width, except for
    models that say they cannot (`models.fixed_export_size`: PSPNet's pyramid pooling); TorchScript traces
    are fixed to that size. `seglab predict` resizes images to the input size and the logits back, as it
    does in PyTorch; the metadata says whether other sizes work (`dynamic_size`, `fixed_size_reason`).
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
            fixed = fixed_export_size(model)
            axes = {0: "batch"} if fixed else {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(model, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                              opset_version=opset, dynamo=False, dynamic_axes={"image": axes, "logits": axes})
            import onnx

            proto = onnx.load(str(tmp))
            entry = proto.metadata_props.add()
            entry.key, entry.value = META_KEY, json.dumps(_metadata(lm, size, fixed))
            onnx.save(proto, str(tmp))
            log.info(f"{out}: fixed {size[0]}x{size[1]} input ({fixed})" if fixed
                     else f"{out}: any batch, height and width (exported at {size[0]}x{size[1]})")
    return out
