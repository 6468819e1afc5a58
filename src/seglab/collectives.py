"""Sums over torchrun ranks, for every layer (metrics, evaluation, engine); each is the identity without a
process group. nccl reduces on the rank's current CUDA device, gloo on the CPU."""
from __future__ import annotations

import torch
import torch.distributed as dist


def group_is_initialized() -> bool:
    """Whether a torch.distributed process group is running (torchrun)."""
    return dist.is_available() and dist.is_initialized()


def all_reduce_tensor(t: torch.Tensor) -> torch.Tensor:
    """The sum of `t` (any shape) over ranks, on `t`'s device."""
    if not group_is_initialized():
        return t
    work = t.to(f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu", copy=True)
    dist.all_reduce(work)
    return work.to(t.device)


def all_reduce_sum(values: list[float]) -> list[float]:
    """Plain numbers summed over ranks (in float64)."""
    if not group_is_initialized():
        return values
    return all_reduce_tensor(torch.tensor(values, dtype=torch.float64)).tolist()
