"""Where one seglab config's training time goes on a device (a GPU; a CPU runs it too): each part alone, then
together, then the recipe to its published score.

Needs only `PYTHONPATH=src` and seglab's dependencies (on an offline CUDA image: the wheels that
../shared/gpu/prepare.sh puts in .gpu/whl). segmentation_models_pytorch is used where installed.

  PYTHONPATH=src python3 benchmarks/gpu.py configs/weizmann_horse_unet_lite0_pretrained.yaml \
      --set data.root=.gpu/data/weizmann_horse --batches 8 32 --target 0.95 --out gpu.json

Sections (`--skip` leaves any out), each printed as one JSON line as it finishes and as a table at the end:
  loader     the training DataLoader alone (decode, augment, collate, pin): img/s with 0 and 1 workers (what one
             worker feeds) and with the workers `num_workers: auto` picks, at each batch
  model      seglab's training step alone (train_step: forward, loss, backward, optimizer, EMA) on a batch that
             stays on the device, at each batch, in the run's precision
  peer       the same architecture in segmentation_models_pytorch, one forward/cross-entropy/backward/AdamW step
             against seglab's model doing the same, alternating rounds in one process (U-Net, DeepLabV3+ only)
  precision  the model step in bf16, fp16 (CUDA) and fp32 at the config's batch
  compile    the model step eager vs torch.compile (default mode and reduce-overhead), compilation time apart
  e2e        the training loop as a run does it (loader workers, prefetch to the device, train_step), img/s, its
             ratio to min(loader alone, model alone) at the same batch, and mean GPU use (nvidia-smi)
  target     the config trained as is (`seglab train`), and when its validation `train.best_metric` first
             reached --target, in seconds of training (metrics.csv's elapsed_seconds)
"""
from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from seglab.config import load_config
from seglab.data.datasets import EpochSampler, init_loader_worker
from seglab.engine.distributed import DistInfo
from seglab.engine.parts import Training, build_training, synchronize, train_step
from seglab.engine.precision import amp_dtype
from seglab.engine.trainer import fit

SECTIONS = ("loader", "model", "peer", "precision", "compile", "e2e", "target")
RECORDS: list[dict[str, Any]] = []


def precision_name(precision: str) -> str:
    return "fp32" if precision == "none" else precision


def report(section: str, **values: Any) -> dict[str, Any]:
    record = {"section": section, **values}
    RECORDS.append(record)
    print(json.dumps(record), flush=True)
    return record


class Epochs(Sampler):
    """`epochs` epochs of a run's EpochSampler, one after the other (so a short split still gives many batches)."""

    def __init__(self, sampler: EpochSampler, epochs: int):
        self.sampler, self.epochs = sampler, epochs

    def __iter__(self) -> Iterator:
        for e in range(1, self.epochs + 1):
            self.sampler.set_epoch(e)
            yield from self.sampler

    def __len__(self) -> int:
        return len(self.sampler) * self.epochs  # type: ignore[arg-type]


def loader_speed(t: Training, batch: int, workers: int, batches: int) -> float:
    """img/s of the training DataLoader alone over `batches` batches after its first (worker start-up)."""
    per_epoch = max(1, len(t.train_set) // batch)
    sampler = Epochs(EpochSampler(len(t.train_set), seed=0), -(-(batches + 1) // per_epoch))
    loader = DataLoader(t.train_set, batch_size=batch, sampler=sampler, drop_last=True, num_workers=workers,
                        pin_memory=t.device.type == "cuda", worker_init_fn=init_loader_worker if workers else None,
                        prefetch_factor=4 if workers else None)
    it = iter(loader)
    next(it)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        images = next(it)[0]
        n += images.shape[0]
    seconds = time.perf_counter() - start
    del it
    return n / seconds


def device_batch(t: Training, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One real augmented batch of `batch` images (repeated if the split is smaller), on the device."""
    items = [t.train_set[(i % len(t.train_set), i)] for i in range(batch)]
    return tuple(torch.stack([it[k] for it in items]).to(t.device) for k in range(3))  # type: ignore[return-value]


def timed_steps(step: Callable[[], Any], device: torch.device, steps: int, warm: int) -> tuple[float, float]:
    """(seconds of the `warm` first calls, seconds per call of the next `steps`), the device synchronised."""
    start = time.perf_counter()
    for _ in range(warm):
        step()
    synchronize(device)
    warm_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return warm_seconds, (time.perf_counter() - start) / steps


def model_speed(t: Training, batch: int, steps: int, warm: int = 3) -> tuple[float, float]:
    """(warm-up seconds, img/s) of seglab's train_step on a batch resident on the device."""
    x, y, lab = device_batch(t, batch)
    warm_s, per = timed_steps(lambda: train_step(t, x, y, lab, "in the benchmark", check=False), t.device, steps, warm)
    return warm_s, batch / per


def with_precision(t: Training, precision: str) -> Training:
    runtime = dataclasses.replace(t.runtime, precision=precision)
    return dataclasses.replace(t, runtime=runtime, scaler=torch.amp.GradScaler("cuda", enabled=precision == "fp16"))


def smp_peer(cfg: Any, num_classes: int) -> Optional[torch.nn.Module]:
    """The same architecture in segmentation_models_pytorch, or None (not installed, or no counterpart)."""
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        return None
    opts = cfg.model.options()
    encoder = str(opts.get("encoder", ""))
    name = f"tu-{encoder[5:]}" if encoder.startswith("timm/") else encoder
    if cfg.model.name == "unet" and encoder:
        extra = {"decoder_channels": tuple(opts["decoder_channels"])} if "decoder_channels" in opts else {}
        return smp.Unet(name, encoder_weights=None, classes=num_classes, **extra)
    if cfg.model.name == "deeplabv3plus" and encoder:
        return smp.DeepLabV3Plus(name, encoder_weights=None, classes=num_classes)
    return None


def peer_speeds(t: Training, peer: torch.nn.Module, batch: int, rounds: int, steps: int) -> dict[str, float]:
    """img/s of one plain step (forward, cross-entropy, backward, AdamW) of seglab's model and of `peer`,
    alternating `rounds` rounds of `steps` steps (the order flips every round) after a warm-up."""
    dev, dtype = t.device, amp_dtype(t.precision)
    x, y, _ = device_batch(t, batch)
    y = y.clamp(0, t.data.labels.num_classes - 1).long()
    models = {"seglab": copy.deepcopy(t.model), "smp": peer}
    pairs = {}
    for key, m in models.items():
        m = m.to(dev).to(memory_format=torch.channels_last).train()
        pairs[key] = (m, torch.optim.AdamW(m.parameters(), lr=1e-4))

    def step(m: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            out = m(x)
            out = out[0] if isinstance(out, (tuple, list)) else out["out"] if isinstance(out, dict) else out
            loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for pair in pairs.values():
        timed_steps(lambda: step(*pair), dev, 0, 3)
    seconds = {k: 0.0 for k in pairs}
    for r in range(rounds):
        for key in (list(pairs) if r % 2 == 0 else list(reversed(pairs))):
            seconds[key] += timed_steps(lambda: step(*pairs[key]), dev, steps, 0)[1] * steps
    return {k: rounds * steps * batch / s for k, s in seconds.items()}


class GpuUse:
    """Mean GPU utilisation (%) from nvidia-smi sampled every 200 ms while in the `with` block; None without it."""

    def __enter__(self) -> "GpuUse":
        self.proc, self.mean = None, None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "200"], stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        out = self.proc.communicate()[0]
        values = [float(v) for v in out.split() if v.replace(".", "").isdigit()]
        self.mean = sum(values) / len(values) if values else None


def e2e_speed(t: Training, steps: int, warm: int = 3) -> tuple[float, Optional[float]]:
    """(img/s, mean GPU use) of the run's own loop: DataLoader workers, DeviceBatches, train_step."""
    done, n, start, epoch = 0, 0, 0.0, 0
    with GpuUse() as use:
        while done < warm + steps:
            epoch += 1
            t.sampler.set_epoch(epoch)
            for images, masks, labelled in t.train_batches:
                if done == warm:
                    synchronize(t.device)
                    start = time.perf_counter()
                train_step(t, images, masks, labelled, "in the benchmark", check=False)
                n += images.shape[0] if done >= warm else 0
                done += 1
                if done >= warm + steps:
                    break
        synchronize(t.device)
        seconds = time.perf_counter() - start
    return n / seconds, use.mean


def time_to_target(config: str, overrides: list[str], target: float, out_dir: str) -> dict[str, Any]:
    """Train the config as is; the training seconds at which validation first reached `target`."""
    cfg = load_config(config, overrides + [f"output.dir={out_dir}", "output.name=target"])
    run = fit(cfg, overwrite=True).run
    column = f"val_{cfg.train.best_metric}"
    rows = list(csv.DictReader(run.metrics_csv.open()))
    hit = next((r for r in rows if r.get(column) not in (None, "") and float(r[column]) >= target), None)
    best = max((float(r[column]) for r in rows if r.get(column) not in (None, "")), default=None)
    return {"metric": column, "target": target, "reached_at_epoch": int(hit["epoch"]) if hit else None,
            "reached_after_s": float(hit["elapsed_seconds"]) if hit else None, "best": best,
            "epochs": len(rows), "train_seconds": float(rows[-1]["elapsed_seconds"]) if rows else None}


def table(records: list[dict[str, Any]]) -> str:
    lines = ["| section | batch | setting | img/s | notes |", "|---|---|---|---|---|"]
    for r in records:
        notes = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()
                          if k not in ("section", "batch", "setting", "img_per_s"))
        img = r.get("img_per_s")
        lines.append(f"| {r['section']} | {r.get('batch', '')} | {r.get('setting', '')} | "
                     f"{'' if img is None else f'{img:,.1f}'} | {notes} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="default: the config's batch and 32")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per measurement (after warm-up)")
    ap.add_argument("--loader-batches", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds of the peer comparison")
    ap.add_argument("--target", type=float, default=None, help="validation score for the target section")
    ap.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    ap.add_argument("--out", default=None, help="write every record and the set-up here (JSON)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    skip = set(args.skip) | ({"target"} if args.target is None else set())
    base = load_config(args.config, args.overrides + [f"train.device={args.device}"])
    batches = args.batches or sorted({base.train.batch_size, 32})
    facts = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
             "cores": os.cpu_count(), "torch": torch.__version__, "config": args.config, "overrides": args.overrides,
             "date": datetime.date.today().isoformat(), "commit": _commit()}
    print(json.dumps({"setup": facts}), flush=True)
    alone: dict[tuple[str, int], float] = {}
    for batch in batches:
        cfg = load_config(args.config, args.overrides + [f"train.device={args.device}", f"train.batch_size={batch}"])
        t = build_training(cfg, split=None, dist=DistInfo(), device=device)
        auto = t.runtime.num_workers
        if "loader" not in skip:
            counts = sorted({0, 1, auto}) if batch == batches[0] else [auto]
            for w in counts:
                speed = loader_speed(t, batch, w, args.loader_batches)
                if w == auto:
                    alone["loader", batch] = speed
                report("loader", batch=batch, setting=f"{w} workers", img_per_s=speed)
        if "model" not in skip:
            warm_s, speed = model_speed(t, batch, args.steps)
            alone["model", batch] = speed
            report("model", batch=batch, setting=f"train_step {precision_name(t.precision)}", img_per_s=speed, warmup_s=warm_s)
        if "peer" not in skip:
            peer = smp_peer(cfg, t.data.labels.num_classes)
            if peer is None:
                report("peer", batch=batch, setting="skipped", reason="segmentation_models_pytorch not installed or "
                       f"no counterpart of {cfg.model.name}")
            else:
                speeds = peer_speeds(t, peer, batch, args.rounds, max(1, args.steps // args.rounds))
                for key, speed in speeds.items():
                    report("peer", batch=batch, setting=f"{key} plain step {precision_name(t.precision)}", img_per_s=speed)
        if "precision" not in skip and batch == batches[0]:
            for p in ("bf16", "fp16", "none"):
                if p == "fp16" and device.type != "cuda":
                    continue  # seglab's fp16 autocast is CUDA-only
                report("precision", batch=batch, setting=precision_name(p),
                       img_per_s=model_speed(with_precision(t, p), batch, args.steps)[1])
        if "compile" not in skip and batch == batches[0]:
            for mode in ("default", "reduce-overhead"):
                compiled = dataclasses.replace(t, net=torch.compile(t.model, mode=mode))
                warm_s, speed = model_speed(compiled, batch, args.steps, warm=3)
                report("compile", batch=batch, setting=f"torch.compile {mode}", img_per_s=speed, compile_s=warm_s)
        if "e2e" not in skip:
            speed, use = e2e_speed(t, args.steps)
            parts = [alone[k] for k in (("loader", batch), ("model", batch)) if k in alone]
            report("e2e", batch=batch, setting=f"{auto} workers {precision_name(t.precision)}", img_per_s=speed, gpu_use_pct=use,
                   ratio_to_min_alone=speed / min(parts) if parts else None)
        del t
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "target" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            report("target", setting="the config as is", **time_to_target(
                args.config, args.overrides + [f"train.device={args.device}"], args.target, tmp))
    print(table(RECORDS))
    if args.out:
        tmp_out = Path(args.out).with_suffix(".tmp")
        tmp_out.write_text(json.dumps({"setup": facts, "records": RECORDS}, indent=1))
        tmp_out.replace(args.out)
    return 0


def _commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
