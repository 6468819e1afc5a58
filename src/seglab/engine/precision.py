"""Mixed-precision facts: the autocast dtypes and whether this CPU computes bf16 natively.

On 2 CPU cores with AVX512-BF16, bf16 autocast made U-Net training steps 1.7-2.0x faster than fp32
channels_last, and a whole 50-epoch Weizmann Horse run 1.4x faster, ending at val mIoU 0.915 against fp32's
0.919 (docs/benchmarks.md). CPUs without native bf16 instructions emulate it and run slower than fp32.
What `train.amp: auto` picks from these facts is decided in engine/runtime.py.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal, Optional

import torch


Precision = Literal["none", "bf16", "fp16"]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has AVX512-BF16 or AMX instructions (what makes bf16 matmul/conv fast)."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)  # private torch helpers; fall back to cpuinfo flags without them
        if fn is not None:
            try:
                if fn():
                    return True
            except RuntimeError:
                pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def amp_dtype(precision: Precision) -> Optional[torch.dtype]:
    """The autocast dtype of a precision (None for fp32)."""
    return DTYPES.get(precision)
