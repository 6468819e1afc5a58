"""Export a checkpoint (`seglab export`) in a registered format (deploy/formats/: ONNX, TorchScript, a Hub
model folder), with its ModelInfo inside; evaluation/model_files.py opens the exports."""
from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..artifacts.run_dir import RunDir
from ..errors import SeglabError
from ..fileio import atomic_path
from ..evaluation.model_files import LoadedModel, load_model
from .formats import EXPORT_FORMATS, export_format
from .int8_recipe import Int8Recipe

log = logging.getLogger("seglab")


def _metadata(lm: LoadedModel, size: Optional[Sequence[int]], fixed: str = "", divisor: int = 1) -> dict[str, Any]:
    """The export's JSON: the checkpoint's ModelInfo at the size predict resizes to (`divisor`: what inputs
    are padded to a multiple of; 1 for a graph fixed to one size), and whether other sizes work."""
    info = replace(lm.info, input_size=tuple(size) if size else None, size_divisor=divisor)
    return {**info.to_dict(), "dynamic_size": not fixed, "fixed_size_reason": fixed}


def check_export_target(out: Path, checkpoint: Path, overwrite: bool) -> None:
    """Refuse an export over its own checkpoint or a run's checkpoint (best.pt / last.pt, or any .pt in a
    checkpoints/ folder other than an export), and over an existing file unless `overwrite`."""
    own = out.exists() and checkpoint.exists() and out.resolve() == checkpoint.resolve()
    run_checkpoint = out.suffix == ".pt" and not out.name.endswith(".torchscript.pt") and (
        out.name in ("best.pt", "last.pt") or out.parent.name == "checkpoints")
    if own or (run_checkpoint and out.exists()):
        what = "the checkpoint being exported" if own else "a run's checkpoint"
        raise SeglabError(f"--out {out}: is {what}; an export never replaces it (resume and evaluation read it): "
                          "give another file, e.g. NAME.onnx")
    if out.exists() and not overwrite:
        raise SeglabError(f"--out {out}: exists; pass --overwrite to replace it, or give another file")


def export_checkpoint(checkpoint: Path, fmt: str, out: Optional[Path] = None,
                      size: Optional[Sequence[int]] = None, opset: int = 17,
                      int8: Optional[Int8Recipe] = None, overwrite: bool = False,
                      push_to_hub: Optional[str] = None) -> Path:
    """Write the checkpoint's model (a run folder: its evaluated checkpoint) as `fmt` (a registered export
    format: deploy/formats/) for (N, C, H, W) inputs.

    'hf' writes a folder in the Hugging Face Hub's layout (model.safetensors, config.json, a model card from
    the run folder's scores; default NAME.hf/ beside the checkpoint) and with `push_to_hub` OWNER/NAME
    uploads it (artifacts/hub.py).

    H, W default to the checkpoint's input size. ONNX graphs take any batch, height and width, except for
    models that say they cannot (`models.fixed_export_size`: PSPNet's pyramid pooling); TorchScript traces
    are fixed to that size. `seglab predict` resizes images to the input size and the logits back, as it
    does in PyTorch; the metadata says whether other sizes work (`dynamic_size`, `fixed_size_reason`). A model
    trained at native resolution needs no size for ONNX: it is traced at its training crop (else 256 x 256)
    and predicts every image at its own size; only a fixed-size graph asks for --size.
    `int8`: an INT8 ONNX model (deploy/quantize.py) made as that recipe says (`Int8Recipe()`: MinMax
    calibration on up to 64 images of the run's training split); default file NAME.int8.onnx.
    An existing `out` is replaced only with `overwrite`; a run's checkpoint never (`check_export_target`).
    """
    if fmt not in EXPORT_FORMATS:
        raise SeglabError(f"--format: expected {' or '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if int8 and fmt != "onnx":
        raise SeglabError("--int8: INT8 export is for --format onnx (onnxruntime's quantization)")
    if push_to_hub and fmt != "hf":
        raise SeglabError("--push-to-hub: uploads a model folder; give --format hf")
    if Path(checkpoint).is_dir():
        checkpoint = RunDir(Path(checkpoint)).require_run().evaluated_checkpoint()
    writer = export_format(fmt)
    out = Path(out) if out else Path(checkpoint).with_suffix(".int8.onnx" if int8 else writer.SUFFIX)
    if getattr(writer, "FOLDER", False):
        return _export_folder(writer, Path(checkpoint), out, overwrite, push_to_hub, size)
    check_export_target(out, Path(checkpoint), overwrite)
    lm = load_model(checkpoint)
    model = lm.model.eval()
    fixed = writer.fixed_size(model)
    # the size predict resizes images to: the one asked for, else the training input size; None for a model
    # trained at native resolution whose graph takes any size (images are then predicted at their own size)
    size = tuple(size) if size else lm.input_size
    trace = size or _native_trace_size(lm)
    if size is None and fixed:
        if fmt == "onnx":
            raise SeglabError(f"{checkpoint}: the model was trained at native resolution and its ONNX graph has a "
                              f"fixed size ({fixed}); give --size H W")
        size = trace  # a TorchScript trace of a native-size model: predicted at the training crop it saw
    example = torch.randn(1, lm.in_channels, *trace)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        writer.write(model, example, tmp, lambda divisor: _metadata(lm, size, fixed, divisor), fixed,
                     lm.size_divisor, opset)
        if int8:
            log.info(f"{out}: INT8 ({_quantize_in_place(tmp, Path(checkpoint), lm, int8)})")
        if fmt == "onnx":
            log.info(f"{out}: fixed {trace[0]}x{trace[1]} input ({fixed})" if fixed
                     else f"{out}: any batch, height and width (traced at {trace[0]}x{trace[1]}"
                          f"{'; images are predicted at their own size' if size is None else ''})")
    return out


def _export_folder(writer: Any, checkpoint: Path, out: Path, overwrite: bool, push_to_hub: Optional[str],
                   size: Optional[Sequence[int]]) -> Path:
    """A format that writes a folder (hf): written whole, then uploaded when `push_to_hub` names a repo."""
    if size:
        raise SeglabError("--size: the hf format keeps the model as trained (its input size travels in config.json); "
                          "leave --size out")
    check_export_target(out, checkpoint, overwrite=True)  # never a run's checkpoint; the folder's own rule in its writer
    folder = writer.write_folder(checkpoint, out, overwrite, push_to_hub)
    log.info(f"{folder}: model folder ({', '.join(p.name for p in sorted(folder.iterdir()))})")
    if push_to_hub:
        from ..artifacts.hub import push_folder

        log.info(f"pushed to the Hub: {push_folder(folder, push_to_hub)}")
    return folder


def _quantize_in_place(path: Path, checkpoint: Path, lm: LoadedModel, recipe: Int8Recipe) -> str:
    """Replace the FP32 ONNX file `path` by its INT8 version (deploy/quantize.py); how it was quantized."""
    from .quantize import calibration_inputs, quantize_onnx

    fp32 = path.with_name(f".fp32{path.name}")  # ends as the temporary name does: cleaned up if left
    path.rename(fp32)
    try:
        return quantize_onnx(fp32, path, calibration_inputs(checkpoint, lm, recipe.calibration_images), recipe)
    finally:
        fp32.unlink(missing_ok=True)


def _native_trace_size(lm: LoadedModel) -> tuple[int, int]:
    """A size to trace a model trained at native resolution with: the training crop it saw, else 256 x 256."""
    crop = lm.checkpoint.section("augment").get("crop")
    return (int(crop[0]), int(crop[1])) if crop else (256, 256)
