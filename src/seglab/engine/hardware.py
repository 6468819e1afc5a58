"""What a run ran on, in words, for summary.json and comparison tables (timings mean little without it)."""
from __future__ import annotations

import platform

import torch


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo or platform), for result tables."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def describe_hardware(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3' on a GPU; 'AMD EPYC 9B14, 2 threads' on a CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"
