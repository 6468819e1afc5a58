"""INT8 against FP32 ONNX Runtime for trained seglab runs: latency in one process, alternating, and mIoU on
the run's split (through `seglab eval --engine onnxruntime`, the same evaluation as the checkpoint's).

For each run folder: exports checkpoints/best.onnx and one INT8 model per recipe (`seglab export --int8
--calibration METHOD [--fp32-first K]`; a recipe is METHOD or METHOD+firstK), then times one (1, C, H, W) input at
the run's evaluation size, ROUNDS rounds of one inference of each model whose order reverses every round (a
shared 2-vCPU machine drifts by 20% over minutes), and scores every export.

    python benchmarks/int8.py RUN_DIR [RUN_DIR ...] --split test --rounds 40 --out runs/int8.json \
        --recipes minmax+first0 minmax percentile
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def latency(paths: dict[str, Path], x: np.ndarray, rounds: int, threads: int) -> dict[str, list[float]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    for s in sessions.values():  # warm-up
        s.run(None, {"image": x})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(rounds):
        order = list(sessions) if r % 2 == 0 else list(sessions)[::-1]
        for k in order:
            t = time.perf_counter()
            sessions[k].run(None, {"image": x})
            times[k].append(time.perf_counter() - t)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (default: its own)")
    ap.add_argument("--calibration-images", type=int, default=64)
    ap.add_argument("--recipes", nargs="+", default=["minmax"],
                    help="METHOD, or METHOD+firstK to keep the first K convolutions FP32 (default: minmax, its default K)")
    ap.add_argument("--size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"),
                    help="timed input size for a model that takes any size (default CamVid's 360 480)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import onnxruntime as ort

    from seglab.api import evaluate
    from seglab.cli import main as seglab
    from seglab.engine.hardware import cpu_name
    from seglab.evaluation.runtimes import OnnxModel

    rows = []
    for run in args.runs:
        best = run / "checkpoints" / "best.pt"
        paths = {"fp32": run / "checkpoints" / "best.onnx"}
        assert seglab(["export", str(best), "--out", str(paths["fp32"])]) == 0
        export_seconds = {}
        for recipe in args.recipes:
            method, _, first = recipe.partition("+")
            paths[recipe] = run / "checkpoints" / f"best.int8-{method}{'-' + first if first else ''}.onnx"
            t = time.perf_counter()
            assert seglab(["export", str(best), "--int8", "--calibration-images", str(args.calibration_images),
                           "--calibration", method, "--out", str(paths[recipe])]
                          + (["--fp32-first", first.removeprefix("first")] if first else [])) == 0
            export_seconds[recipe] = time.perf_counter() - t
        model = OnnxModel(paths["fp32"])
        size = model.input_size or tuple(args.size)
        x = np.random.default_rng(0).standard_normal((1, model.in_channels, *size)).astype(np.float32)
        times = latency(paths, x, args.rounds, args.threads)
        # what `seglab eval EXPORT --engine onnxruntime --split SPLIT` computes and writes
        scores = {kind: evaluate(path, split=args.split, engine="onnxruntime") for kind, path in paths.items()}
        ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
        for recipe in args.recipes:
            rows.append({"run": str(run), "recipe": recipe, "input": list(size), "fp32_ms": ms["fp32"],
                         "int8_ms": ms[recipe], "speedup": ms["fp32"] / ms[recipe],
                         "fp32_miou": scores["fp32"]["miou"], "int8_miou": scores[recipe]["miou"],
                         "miou_points_lost": 100 * (scores["fp32"]["miou"] - scores[recipe]["miou"]),
                         "fp32_biou": scores["fp32"]["mean_boundary_iou"],
                         "int8_biou": scores[recipe]["mean_boundary_iou"],
                         "fp32_mb": paths["fp32"].stat().st_size / 2**20, "int8_mb": paths[recipe].stat().st_size / 2**20,
                         "export_seconds": export_seconds[recipe], "split": args.split, "rounds": args.rounds})
            print(json.dumps(rows[-1]), flush=True)
    result = {"rows": rows, "cpu": cpu_name(), "onnxruntime": ort.__version__, "date": time.strftime("%Y-%m-%d"),
              "threads": args.threads or "onnxruntime default"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
