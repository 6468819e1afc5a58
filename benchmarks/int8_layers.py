"""Where static INT8 loses accuracy: quantize a run's best.onnx with one part of the graph kept FP32 at a time
and score each on the run's split (`seglab eval EXPORT --engine onnxruntime`), then time them against FP32.

A variant is `first:K` (the first K convolutions FP32), `only:I,J` (convolutions number I, J FP32), `last:K`,
`encoder`, `decoder`, `depthwise` (those convolutions FP32), `calibration:N` (N calibration images) or
`ops:first=K,+OP,OP` (also quantize OP, e.g. Clip and Relu, with the first K convolutions FP32).

    python benchmarks/int8_layers.py RUN_DIR --split val --size 192 256 first:0 first:1 first:3 decoder ops:first=3,+Clip,Relu
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def exclusions(variant: str, convs: list, default_images: int) -> tuple[list[str], list[str], int]:
    """(FP32 convolution names, extra op types to quantize, calibration images) of one variant."""
    kind, _, arg = variant.partition(":")
    names = [c.name for c in convs]
    group = {c.name: next((a.i for a in c.attribute if a.name == "group"), 1) for c in convs}
    if kind == "first":
        return names[:int(arg)], [], default_images
    if kind == "last":
        return names[-int(arg):], [], default_images
    if kind == "only":
        return [names[int(i)] for i in arg.split(",")], [], default_images
    if kind in ("encoder", "decoder"):
        return [n for n in names if ("encoder" in n) == (kind == "encoder")], [], default_images
    if kind == "depthwise":
        return [n for n in names if group[n] > 1], [], default_images
    if kind == "calibration":
        return [], [], int(arg)
    if kind == "ops":
        first, _, ops = arg.partition(",+")
        return names[:int(first.removeprefix("first="))], ops.split(","), default_images
    raise SystemExit(f"unknown variant {variant!r}; see --help")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--split", default="val")
    ap.add_argument("--calibration-images", type=int, default=64)
    ap.add_argument("--size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"), help="timed input size")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from seglab.api import evaluate, export
    from seglab.deploy.quantize import _OPS, _Inputs, calibration_inputs
    from seglab.evaluation.model_files import load_model

    ck = args.run / "checkpoints"
    fp32 = export(ck / "best.pt", out=ck / "best.onnx")
    lm = load_model(ck / "best.pt")
    prepared = ck / ".layers.pre.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    convs = [n for n in onnx.load(str(prepared)).graph.node if n.op_type in ("Conv", "ConvTranspose")]
    inputs: dict[int, list[np.ndarray]] = {}
    paths, rows = {"fp32": fp32}, {}
    for v in args.variants:
        exclude, extra_ops, images = exclusions(v, convs, args.calibration_images)
        if images not in inputs:
            inputs[images] = calibration_inputs(ck / "best.pt", lm, images)
        out = ck / f"layers_{''.join(c if c.isalnum() else '_' for c in v)}.onnx"
        quantize_static(str(prepared), str(out), _Inputs(inputs[images]), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
                        op_types_to_quantize=_OPS + extra_ops)
        source, proto = onnx.load(str(fp32)), onnx.load(str(out))  # the export's metadata, which eval reads
        del proto.metadata_props[:]
        for e in source.metadata_props:
            proto.metadata_props.add(key=e.key, value=e.value)
        onnx.save(proto, str(out))
        paths[v] = out
        rows[v] = {"fp32_convolutions": len(exclude), "extra_ops": extra_ops, "calibration_images": images}
    prepared.unlink()
    for k, p in paths.items():
        m = evaluate(p, split=args.split, engine="onnxruntime")
        rows.setdefault(k, {}).update(miou=100 * m["miou"], mean_boundary_iou=100 * m["mean_boundary_iou"])
    x = np.random.default_rng(0).standard_normal((1, lm.info.in_channels, *args.size)).astype(np.float32)
    sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, {"image": x})
    for r in range(args.rounds):  # alternating, order reversed every round: a shared machine drifts
        for k in (list(sessions) if r % 2 == 0 else list(sessions)[::-1]):
            t = time.perf_counter()
            sessions[k].run(None, {"image": x})
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["fp32"])
    for k in paths:
        rows[k].update(ms=1000 * statistics.median(times[k]), speedup=base / statistics.median(times[k]))
        print(json.dumps({"variant": k, **rows[k]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
