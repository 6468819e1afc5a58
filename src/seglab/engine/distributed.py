"""torchrun / DistributedDataParallel support: process group, rank helpers, SyncBatchNorm on CPU too.

`torchrun --nproc_per_node N -m seglab train CONFIG` sets RANK, WORLD_SIZE, LOCAL_RANK (and the
rendezvous for several machines); one process per GPU with NCCL, or CPU processes with gloo.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..collectives import group_is_initialized
from ..rank import is_main_process  # noqa: F401  (its home is torch-free: the CLI reads it before torch loads)


@dataclass
class DistInfo:
    """This process's place under torchrun: rank, local rank, world size."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1; returns (info, this process's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device_name, 0)
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    check_gpu_count(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), device_name)
    device = resolve_device(device_name, info.local_rank)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            # device_id binds this rank's GPU to the group: NCCL need not guess it from the global rank
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    return info, device


def check_gpu_count(procs_on_node: int, device_name: str) -> None:
    """One GPU per process: refuse more processes on this machine than it has GPUs, when the processes would
    train on GPUs (`device_name` auto with CUDA available, or cuda); several ranks on one GPU fail in NCCL."""
    from ..errors import SeglabError

    if device_name == "cpu" or not device_name.startswith(("auto", "cuda")) or not torch.cuda.is_available():
        return
    gpus = torch.cuda.device_count()
    if procs_on_node > gpus:
        exc = SeglabError(f"{procs_on_node} processes on this machine but it has {gpus} GPU(s) visible "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): one process per GPU; "
                          f"use --nproc-per-node {gpus} (or --set train.device=cpu for CPU processes)")
        exc.same_on_every_rank = True  # type: ignore[attr-defined]  (torchrun: every rank finds it; rank 0 says it)
        raise exc


def resolve_device(name: str, local_rank: int, key: str = "train.device") -> torch.device:
    """'auto', 'cpu', 'cuda' or 'cuda:N' (or another torch device name) -> the device; `key` is the option
    that gave the name, for the error (train.device, or a command's --device)."""
    from ..errors import SeglabError

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SeglabError(f"{key}: '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SeglabError(f"{key}: '{name}' requested but CUDA is not available on this machine; use cpu or auto")
        if device.index is None:  # one GPU per local process
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if device.index >= torch.cuda.device_count():
            raise SeglabError(f"{key}: '{name}' but this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def pick_device(name: str, key: str = "train.device") -> torch.device:
    """train.device ('auto', 'cpu', 'cuda[:N]') -> the device of a single process; `key` names the option."""
    return resolve_device(name, 0, key)


def cleanup_distributed() -> None:
    """Destroy the process group if this process started one."""
    if group_is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device_name: str) -> Iterator[tuple[DistInfo, torch.device]]:
    """Hold one torchrun process group over several trainings (compare, k-fold).

    Each `fit` would otherwise create and destroy its own group; a rank that finishes first would then join
    the next group through stale rendezvous keys while rank 0 is still evaluating, and fail to connect.
    """
    owned = not group_is_initialized()
    info, device = init_distributed(device_name)
    try:
        yield info, device
    finally:
        if owned:
            cleanup_distributed()


def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics): without sync_bn each rank's last
    training step updated its own, and validation must score the model that rank 0 saves."""
    if group_is_initialized():
        for b in model.buffers():
            dist.broadcast(b, 0)


def barrier() -> None:
    """Wait for every rank (a no-op outside torchrun)."""
    if group_is_initialized():
        dist.barrier()


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics are pooled over all ranks, for CPU (gloo) process groups,
    where torch.nn.SyncBatchNorm refuses CPU tensors. Eval mode uses the running statistics as usual."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and group_is_initialized()):
            return super().forward(x)
        import warnings

        from torch.distributed.nn.functional import all_reduce

        xf = x.float()
        n = torch.tensor([float(x.shape[0] * x.shape[2] * x.shape[3])])
        stats = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), n])
        with warnings.catch_warnings():  # deprecated in favour of a private API; still the public differentiable one
            warnings.simplefilter("ignore", FutureWarning)
            stats = all_reduce(stats)  # differentiable: gradients flow through the pooled statistics
        c = x.shape[1]
        count = stats[-1]
        mean = stats[:c] / count
        var = (stats[c:2 * c] / count - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.num_batches_tracked += 1
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * count / max(float(count) - 1, 1.0))
        y = (xf - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d pools its statistics across ranks: torch's SyncBatchNorm on GPUs, CpuSyncBatchNorm on CPU."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def swap(module: nn.Module) -> nn.Module:
        if isinstance(module, nn.BatchNorm2d) and type(module) is not CpuSyncBatchNorm:
            new = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            new.load_state_dict(module.state_dict())
            new.train(module.training)
            for p_new, p_old in zip(new.parameters(), module.parameters()):
                p_new.requires_grad_(p_old.requires_grad)
            return new
        for name, child in module.named_children():
            setattr(module, name, swap(child))
        return module

    return swap(model)


def launch_standalone(nproc: int, argv: list[str], device_name: str = "auto") -> int:
    """Run `python -m seglab ARGV` in `nproc` processes on this machine, as `torchrun --standalone
    --nproc_per_node N` does; returns the exit status of the first process that failed (0 when all finish).
    Each process has already said why it stopped in one line, so torchrun's own failure report (a traceback
    of the launcher) is not shown; each process gets the machine's cores divided among them."""
    import logging
    import sys

    check_gpu_count(nproc, device_name)  # before any process starts
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    env_threads = "OMP_NUM_THREADS" not in os.environ
    if env_threads:  # torchrun would set 1 and warn; share the cores instead
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    elastic = logging.getLogger("torch.distributed.elastic")
    level = elastic.level
    elastic.setLevel(logging.CRITICAL)  # "Sending process closing signal", "failed (exitcode: 2)": said already
    try:
        run(parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "seglab", *argv]))
    except ChildFailedError as exc:
        code = exc.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code if code < 0 else 1  # died of signal S: 128 + S, as a shell says
    finally:
        elastic.setLevel(level)
        if env_threads:
            del os.environ["OMP_NUM_THREADS"]
    sys.stdout.flush()
    return 0
