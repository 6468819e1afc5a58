"""Training-step throughput of seglab's U-Net on this machine: contiguous vs channels_last (fp32).

Usage: python benchmarks/cpu_step_speed.py [--size H W] [--batch N] [--steps N]
Prints one line per setting; paste the output into docs/ with the date and hardware.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from seglab.models import create_model


def step_speed(*, base: int, depth: int, size: tuple[int, int], batch: int, channels_last: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = create_model("unet", num_classes=2, base_channels=base, depth=depth)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(batch, 3, *size).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (batch, *size))
    for i in range(steps + 2):
        if i == 2:  # two warm-up steps
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, nargs=2, default=[192, 256])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    for base, depth in ((16, 4), (32, 4)):
        speeds = {}
        for cl in (False, True):
            speeds[cl] = step_speed(base=base, depth=depth, size=tuple(args.size), batch=args.batch,
                                    channels_last=cl, steps=args.steps)
        print(f"unet base {base} depth {depth}, {args.size[0]}x{args.size[1]}, batch {args.batch}: "
              f"contiguous {speeds[False]:.1f} img/s, channels_last {speeds[True]:.1f} img/s "
              f"({speeds[True] / speeds[False]:.2f}x)")


if __name__ == "__main__":
    main()
