"""Training speed options on this machine, for seglab's U-Net: memory format, bf16 autocast, torch.compile,
and the data pipeline (decoding every epoch vs the decoded-sample cache).

Usage: python benchmarks/cpu_step_speed.py [--size H W] [--batch N] [--steps N] [--data ../shared/data/weizmann_horse]
Prints one line per setting; the numbers go into docs/benchmarks.md with the date and hardware.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seglab.models import create_model

SETTINGS = {  # name -> (channels_last, amp dtype, compile)
    "fp32 contiguous": (False, None, False),
    "fp32 channels_last": (True, None, False),
    "bf16 autocast, channels_last": (True, torch.bfloat16, False),
    "torch.compile, channels_last": (True, None, True),
}


def step_speed(*, base: int, depth: int, size: tuple[int, int], batch: int, channels_last: bool, amp, compile: bool,
               steps: int) -> float:
    torch.manual_seed(0)
    model = create_model("unet", num_classes=2, base_channels=base, depth=depth)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    net = torch.compile(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(batch, 3, *size).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (batch, *size))
    warmup = 3 if compile else 2  # compile happens in the first steps
    for i in range(steps + warmup):
        if i == warmup:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def loader_speed(data: Path, size: tuple[int, int], cache: bool, epochs: int = 2) -> list[float]:
    """Images/s of the training data pipeline alone (decode, align, augment, to tensor), per epoch."""
    from seglab.config import config_from_dict
    from seglab.data.datasets import TrainDataset, build_data

    cfg = config_from_dict({
        "data": {"kind": "folder", "root": str(data), "train": {"images": "rgb", "masks": "figure_ground"},
                 "mask_encoding": "binary", "class_names": ["background", "horse"], "align": "resize_image_to_mask",
                 "cache": cache},
        "augment": {"resize": list(size), "scale": [0.8, 1.25], "crop": list(size), "hflip": 0.5, "rotate": 10,
                    "color_jitter": 0.2},
    }, "loader benchmark")
    ds = TrainDataset(build_data(cfg.data, cfg.augment).readers["train"], cfg.augment)
    out = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for i in range(len(ds)):
            ds[(i, epoch * 100003 + i)]
        out.append(len(ds) / (time.perf_counter() - t0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, nargs=2, default=[192, 256])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--data", default="../shared/data/weizmann_horse")
    args = ap.parse_args()
    size = tuple(args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    for base, depth in ((16, 4), (32, 4)):
        speeds = {}
        for name, (cl, amp, comp) in SETTINGS.items():
            speeds[name] = step_speed(base=base, depth=depth, size=size, batch=args.batch, channels_last=cl, amp=amp,
                                      compile=comp, steps=args.steps)
        ref = speeds["fp32 contiguous"]
        print(f"unet base {base} depth {depth}, {size[0]}x{size[1]}, batch {args.batch}, training img/s: "
              + "; ".join(f"{k} {v:.1f} ({v / ref:.2f}x)" for k, v in speeds.items()))
    if Path(args.data).is_dir():
        for cache in (False, True):
            s = loader_speed(Path(args.data), size, cache)
            print(f"loader (Weizmann Horse, {size[0]}x{size[1]}, augmentations, 1 process), cache={cache}: "
                  + ", ".join(f"epoch {i + 1} {v:.1f} img/s" for i, v in enumerate(s)))


if __name__ == "__main__":
    main()
