"""Metric time against evaluation time on CamVid test (233 images, 360x480, 11 classes).

Runs the evaluation loop of `seglab eval` (the same `run_evaluation`) with Boundary IoU on OpenCV's
erosion (the CPU default) and on max-pooling (the GPU path, the CPU default before), alternating, and
writes the marked block of docs/benchmarks.md. The model is the shipped CamVid U-Net config's, untrained
unless --checkpoint is given (inference time does not depend on the weights).

    python benchmarks/eval_metrics.py --rounds 2
"""
from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import cpu_name, replace_block  # noqa: E402

from seglab.config import changed_config, load_config  # noqa: E402
from seglab.data.datasets import EvalDataset, build_data  # noqa: E402
from seglab.evaluation.evaluate import run_evaluation  # noqa: E402
from seglab.evaluation.model_files import load_model  # noqa: E402
from seglab.models import build_model_from_meta  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs/camvid_unet.yaml"))
    ap.add_argument("--checkpoint", help="a trained checkpoint (default: the config's model, untrained)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of each backend")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "docs/benchmarks.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    # the shipped configs are relative to the project root
    cfg = changed_config(cfg, {"data.root": str(ROOT / cfg.data.root)}, args.config)
    data = build_data(cfg.data, cfg.augment)
    if args.checkpoint:
        lm = load_model(args.checkpoint)
        model = lm.model
    else:
        meta = {"name": cfg.model.name, "options": cfg.model.options(), "in_channels": cfg.data.in_channels,
                "num_classes": data.labels.num_classes, "conditional": None}
        model = build_model_from_meta(meta)
    model = model.to(memory_format=torch.channels_last).eval()
    dataset = EvalDataset(data.readers[args.split], cfg.augment)
    results: dict[str, list] = {"opencv": [], "torch": []}
    for r in range(args.rounds):
        for backend in ("opencv", "torch") if r % 2 == 0 else ("torch", "opencv"):
            res = run_evaluation(model, dataset, data.labels, device=torch.device("cpu"), batch_size=cfg.eval.batch_size,
                                 dilation_ratio=cfg.eval.boundary_dilation_ratio, channels_last=True,
                                 boundary_backend=backend)
            results[backend].append(res)
            print(f"round {r + 1} {backend}: eval {res.seconds:.1f} s, metrics {res.metric_seconds:.1f} s "
                  f"({100 * res.metric_seconds / res.seconds:.1f}%), mean Boundary IoU {res.metrics['mean_boundary_iou']:.6f}")
    same = all(a.metrics["boundary_iou"] == b.metrics["boundary_iou"] for a, b in zip(results["opencv"], results["torch"]))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    rows = []
    for backend, label in (("torch", "before: max-pooling on the CPU"), ("opencv", "after: OpenCV erosion (CPU default)")):
        eval_s = min(r.seconds for r in results[backend])
        met_s = min(r.metric_seconds for r in results[backend])
        rows.append(f"| {label} | {eval_s:.1f} | {met_s:.1f} | {100 * met_s / eval_s:.1f}% | "
                    f"{len(dataset) / met_s:.0f} |")
    block = "\n".join([
        "<!-- eval_metrics:begin -->",
        f"`python benchmarks/eval_metrics.py --rounds {args.rounds} --threads {args.threads}` "
        f"({cpu_name()}, {args.threads} threads, torch {torch.__version__}, {datetime.date.today()}, commit {commit}): "
        f"the evaluation loop of `seglab eval` on CamVid {args.split} ({len(dataset)} images at 360x480, 11 classes, "
        f"{cfg.model.name} of `{Path(args.config).name}`, batch {cfg.eval.batch_size}), best of {args.rounds} rounds each, "
        f"alternating. Boundary IoU identical on both paths: {same}.",
        "",
        "| Boundary IoU | eval s | metrics s | metrics / eval | metric images/s |",
        "|---|---|---|---|---|",
        *rows,
        "<!-- eval_metrics:end -->",
    ])
    replace_block(args.out, "<!-- eval_metrics:begin -->", "<!-- eval_metrics:end -->", block, "Benchmarks")
    print(block)


if __name__ == "__main__":
    main()
