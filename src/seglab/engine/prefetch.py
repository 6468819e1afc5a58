"""Training batches on the device ahead of their step, and the time the loop waited for them.

`DeviceBatches` wraps the training DataLoader: batch i + 1 is taken from the loader (whose workers decode,
augment, collate and pin it) and its copy to the GPU started on a side CUDA stream (non_blocking) before batch
i is handed to its step, so the copy runs while the step's kernels do. On the CPU the batches pass through
unchanged, in the same order; only the waiting is measured.

`waited` is the time spent inside the loader's `next()`: what the training loop logs as its `loader` figure
(images / waited seconds), the rest of the epoch being `model`. With no host-device synchronisation in the
step, the host runs ahead of the GPU, so `model` is the host's view of the steps: its long-run mean matches the
GPU's throughput, since the CUDA queue fills and then blocks the host at the GPU's pace.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Iterator, Optional

import torch

Batch = tuple[torch.Tensor, ...]


class DeviceBatches:
    """Iterate `loader`'s batches (tuples of tensors) on `device`, each fetched and copied one step ahead."""

    def __init__(self, loader: Iterable[Batch], device: torch.device):
        self.loader, self.device = loader, device
        self.waited = 0.0  # seconds inside the loader's next(), summed over this object's life

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def _fetch(self, it: Iterator[Batch], stream: Optional[Any]) -> Optional[Batch]:
        start = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return None
        finally:
            self.waited += time.perf_counter() - start
        if stream is None:
            return batch
        with torch.cuda.stream(stream):
            return tuple(x.to(self.device, non_blocking=True) for x in batch)

    def __iter__(self) -> Iterator[Batch]:
        stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        it = iter(self.loader)
        ahead = self._fetch(it, stream)
        while ahead is not None:
            if stream is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_stream(stream)  # the step's kernels start after the copy
                for x in ahead:
                    x.record_stream(current)  # the copy's memory belongs to the step's stream from here
            batch, ahead = ahead, self._fetch(it, stream)  # the next copy runs while this batch's step does
            yield batch
