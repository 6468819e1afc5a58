"""Loss sums pooled over torchrun ranks.

Under torchrun every sum a loss pools over the batch (pixel counts, Dice intersections and unions) goes
through `batch_sum`, which inside `pooled_over_ranks()` adds the other ranks' sums: each rank then computes
the loss of the whole global batch, with gradients through its own pixels, so N processes train what one
process would for every loss, not only for per-pixel means (nnU-Net and MONAI do the same for Dice).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

_pooled = False  # set by pooled_over_ranks() around a training step under torchrun


@contextlib.contextmanager
def pooled_over_ranks(enabled: bool = True) -> Iterator[None]:
    """Losses computed inside pool their batch sums over all torchrun ranks (see `batch_sum`). Every rank
    must compute the same losses inside it (each sum is a collective operation)."""
    global _pooled
    before, _pooled = _pooled, enabled and torch.distributed.is_available() and torch.distributed.is_initialized()
    try:
        yield
    finally:
        _pooled = before


def batch_sum(x: torch.Tensor) -> torch.Tensor:
    """A per-batch sum (any shape, already summed over this rank's samples) -> the same sum over the global
    batch when pooled over ranks; its gradient flows to this rank's part only (the others' parts are
    constants here and get their gradients on their own ranks)."""
    if not _pooled:
        return x
    total = x.detach().clone()
    torch.distributed.all_reduce(total)
    return x + (total - x.detach())


def batch_kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest of `values` (1-D, no gradient) over the global batch, 1 <= k <= their global
    count: within pooled_over_ranks every rank gathers the others' k smallest, among which it lies."""
    local = values.detach().float().flatten()
    if not _pooled:
        return local.kthvalue(k).values
    smallest = torch.full((k,), float("inf"), device=local.device)
    m = min(k, local.numel())
    if m:
        smallest[:m] = local.topk(m, largest=False).values
    gathered = [torch.empty_like(smallest) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, smallest)
    return torch.cat(gathered).kthvalue(k).values
