"""How a run uses its device: precision, loader workers, TF32 and cuDNN autotuning, decided in one place.

`choose_runtime` turns the config's `auto` settings and the device's facts (`DeviceFacts`, faked in tests) into
`RuntimeChoices`, each with the reason printed in the run's first lines and kept in summary.json:

- precision (`train.amp: auto`): bf16 autocast on CPUs with native bf16 (measured 1.4x end to end on 2 cores,
  docs/benchmarks.md) and on GPUs of compute capability 8.0 or more (native bf16 tensor cores); fp16 autocast
  with a gradient scaler on 7.x GPUs (tensor cores without bf16); fp32 elsewhere.
- loader workers (`train.num_workers: auto`): none on 2 CPU cores or fewer (measured: workers take cores
  from the model there), up to 4 on a larger CPU machine, and on a GPU all cores but one of this process's
  share (16 at most), each worker on one thread (data/datasets.py, init_loader_worker).
- TF32 matmuls on CUDA (convolutions use TF32 by default in torch already), and cudnn.benchmark when the
  training input size is fixed (augment.resize or augment.crop): the autotuned kernels are then reused.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch

from .precision import Precision, cpu_has_native_bf16

MAX_GPU_WORKERS = 16


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class DeviceFacts:
    """What the choices depend on: the device's kind, the cores, a GPU's compute capability, a CPU's bf16."""

    device_type: str  # "cpu" or "cuda"
    cores: int
    cuda_capability: Optional[tuple[int, int]] = None
    cpu_native_bf16: bool = False

    @classmethod
    def of(cls, device: torch.device) -> "DeviceFacts":
        cap = tuple(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None
        return cls(device.type, usable_cores(), cap,  # type: ignore[arg-type]
                   cpu_native_bf16=device.type == "cpu" and cpu_has_native_bf16())


@dataclass(frozen=True)
class RuntimeChoices:
    """The settings a run trains with, and why (`reasons`: setting -> its reason, printed and recorded)."""

    precision: Precision
    num_workers: int
    tf32: bool
    cudnn_benchmark: bool
    reasons: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the run's start: each choice and where it came from."""
        p = "fp32" if self.precision == "none" else f"{self.precision} autocast"
        parts = [f"{p} ({self.reasons['precision']})",
                 f"{self.num_workers} loader workers ({self.reasons['num_workers']})"]
        if self.tf32:
            parts.append("TF32 matmuls")
        if self.cudnn_benchmark:
            parts.append(f"cudnn.benchmark ({self.reasons['cudnn_benchmark']})")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def apply(self) -> None:
        """Set torch's process-wide switches (CUDA only; a CPU run changes nothing)."""
        if self.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True


def _precision(setting: str, facts: DeviceFacts) -> tuple[Precision, str]:
    from ..errors import SeglabError

    if setting == "fp16" and facts.device_type != "cuda":
        raise SeglabError("train.amp: fp16 autocast needs a CUDA device; use bf16 on CPU (or none)")
    if setting != "auto":
        return setting, f"train.amp {setting}"  # type: ignore[return-value]
    if facts.device_type == "cpu":
        if facts.cpu_native_bf16:
            return "bf16", "train.amp auto: this CPU has native bf16"
        return "none", "train.amp auto: this CPU has no native bf16"
    cap = facts.cuda_capability
    if facts.device_type == "cuda" and cap is not None:
        if cap >= (8, 0):
            return "bf16", f"train.amp auto: compute capability {cap[0]}.{cap[1]} has native bf16"
        if cap >= (7, 0):
            return "fp16", f"train.amp auto: compute capability {cap[0]}.{cap[1]} has fp16 tensor cores, no bf16"
    return "none", f"train.amp auto: no bf16 or fp16 tensor cores on this {facts.device_type} device"


def _workers(setting: Any, facts: DeviceFacts, procs_on_node: int) -> tuple[int, str]:
    if setting != "auto":
        return int(setting), "train.num_workers"
    share = max(1, facts.cores // max(1, procs_on_node))
    per = f"{share} cores{' per process' if procs_on_node > 1 else ''}"
    if facts.device_type == "cuda":
        return max(1, min(MAX_GPU_WORKERS, share - 1)), f"auto: {per}, GPU"
    if share <= 2:
        return 0, f"auto: {per}; workers would slow the model"
    return min(4, share - 1), f"auto: {per}"


def choose_runtime(amp: str, num_workers: Any, *, fixed_input_size: bool, facts: DeviceFacts,
                   procs_on_node: int = 1) -> RuntimeChoices:
    """`train.amp` and `train.num_workers` (either may be `auto`) on a device with `facts`, shared by
    `procs_on_node` processes (torchrun) -> the settings to train with."""
    precision, why_p = _precision(amp, facts)
    workers, why_w = _workers(num_workers, facts, procs_on_node)
    cuda = facts.device_type == "cuda"
    reasons = {"precision": why_p, "num_workers": why_w}
    if cuda and fixed_input_size:
        reasons["cudnn_benchmark"] = "fixed input size"
    return RuntimeChoices(precision=precision, num_workers=workers, tf32=cuda,
                          cudnn_benchmark=cuda and fixed_input_size, reasons=reasons)
