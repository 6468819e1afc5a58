"""INT8 ONNX models (`seglab export --format onnx --int8`): onnxruntime's static quantization (QDQ, weights
per channel, activations calibrated on images of the run's training split, preprocessed as prediction does),
or dynamic quantization (weights only) when no training image can be read.

Calibration (how activation ranges are chosen): `minmax` (the observed range) or `percentile` (99.999th
percentile of |x|, clipping rare outliers); `fp32_first` keeps the first convolutions in FP32 (the stem and
first block, where quantization error cost the most: int8_recipe.DEFAULT_FP32_FIRST)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..artifacts.run_dir import RunDir
from ..config import config_from_dict
from ..data.datasets import build_data
from ..data.splits import load_split
from ..data.transforms import prepare_eval_image
from ..errors import SeglabError, brief
from ..fileio import TMP_SUFFIX
from ..evaluation.model_files import LoadedModel
from .int8_recipe import Int8Recipe

log = logging.getLogger("seglab")

# Only the layers that carry the compute. Left to its default, onnxruntime also quantizes the Sub / Mul / Add
# of timm's TF "same" padding, whose outputs are pad sizes computed from the input shape: rounded to an 8-bit
# grid they pad by the wrong amount (Weizmann Horse U-Net Lite0: 8.8 mIoU points lost, docs/benchmarks.md).
_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]


def calibration_inputs(checkpoint: Path, lm: LoadedModel, count: int) -> list[np.ndarray]:
    """Up to `count` (1, C, H, W) float32 inputs from the run's training split, evenly spaced over it, as
    prediction prepares them (the model's input size, or the image's own for a native-resolution model).
    Empty when the data cannot be read here (the export then quantizes weights only)."""
    raw = lm.checkpoint.config
    if not raw or count <= 0:
        return []
    run = checkpoint.parent.parent
    try:
        cfg = config_from_dict(raw, str(checkpoint))
        split = load_split(RunDir(run).split, cfg.data.root) if RunDir(run).split.is_file() else None
        reader = build_data(cfg.data, cfg.augment, split=split).readers.get("train")
        if reader is None or len(reader) == 0:
            return []
        picks = np.unique(np.linspace(0, len(reader) - 1, min(count, len(reader))).round().astype(int))
        return [prepare_eval_image(reader.load(int(i))[0], lm.input_size, lm.mean, lm.std)[None].numpy()
                for i in picks]
    except (SeglabError, OSError, ValueError) as exc:
        log.info(f"{checkpoint}: no calibration images from the run's training data ({brief(exc)})")
        return []


class _Inputs:
    """onnxruntime's CalibrationDataReader over prepared inputs."""

    def __init__(self, inputs: list[np.ndarray]):
        self.items = iter(inputs)

    def get_next(self) -> Optional[dict[str, Any]]:
        x = next(self.items, None)
        return None if x is None else {"image": x}


def _first_convolutions(path: Path, count: int) -> list[str]:
    """Names of the first `count` Conv nodes of the ONNX graph at `path` (graph order is topological)."""
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"][:count]


def quantize_onnx(fp32: Path, out: Path, inputs: list[np.ndarray], recipe: Int8Recipe = Int8Recipe()) -> str:
    """Write an INT8 version of the ONNX model `fp32` to `out`, keeping its metadata; returns how it was
    quantized ('static, N calibration images, ...' or 'dynamic, weights only')."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_name(f".{out.name}.pre{TMP_SUFFIX}")  # removed below, or by a later run's clean-up
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        exclude = _first_convolutions(prepared, recipe.fp32_first)
        if inputs:
            method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[recipe.calibration]
            quantize_static(str(prepared), str(out), _Inputs(inputs), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=method, nodes_to_exclude=exclude, op_types_to_quantize=_OPS,
                            extra_options={"CalibPercentile": 99.999})
            how = f"static, {len(inputs)} calibration images, {recipe.describe()}"
        else:
            if recipe.calibration != Int8Recipe.calibration:
                log.warning(f"{fp32}: no calibration image could be read, so --calibration {recipe.calibration} is "
                            "not used: the activations are quantized at run time (dynamic quantization)")
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                             op_types_to_quantize=_OPS)
            how = "dynamic, weights only" + recipe.describe_fp32()
    except Exception as exc:
        raise SeglabError(f"{fp32}: INT8 quantization failed ({brief(exc)})") from None
    finally:
        prepared.unlink(missing_ok=True)
    source, proto = onnx.load(str(fp32)), onnx.load(str(out))
    del proto.metadata_props[:]
    for entry in source.metadata_props:
        proto.metadata_props.add(key=entry.key, value=entry.value)
    proto.metadata_props.add(key="seglab.quantization", value=f"int8 ({how})")
    onnx.save(proto, str(out))
    return how
