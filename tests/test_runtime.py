"""Defaults that fit the device (issue 41 item 2): the decisions of engine/runtime.py on faked device facts."""
from __future__ import annotations

import pytest

from seglab.engine.runtime import DeviceFacts, choose_runtime
from seglab.errors import SeglabError


def _choose(amp="auto", workers="auto", fixed=True, procs=1, **facts):
    return choose_runtime(amp, workers, fixed_input_size=fixed, facts=DeviceFacts(**facts), procs_on_node=procs)


@pytest.mark.parametrize("cap, precision", [((9, 0), "bf16"), ((8, 0), "bf16"), ((8, 6), "bf16"),
                                            ((7, 5), "fp16"), ((7, 0), "fp16"), ((6, 1), "none")])
def test_amp_auto_on_gpus_follows_the_compute_capability(cap, precision):
    c = _choose(device_type="cuda", cores=16, cuda_capability=cap)
    assert c.precision == precision
    assert f"{cap[0]}.{cap[1]}" in c.reasons["precision"] or precision == "none"


def test_amp_auto_on_cpus_follows_native_bf16_and_explicit_settings_win():
    assert _choose(device_type="cpu", cores=2, cpu_native_bf16=True).precision == "bf16"
    assert _choose(device_type="cpu", cores=2, cpu_native_bf16=False).precision == "none"
    assert _choose(amp="none", device_type="cuda", cores=16, cuda_capability=(9, 0)).precision == "none"
    assert _choose(amp="fp16", device_type="cuda", cores=16, cuda_capability=(9, 0)).precision == "fp16"
    assert _choose(amp="bf16", device_type="cpu", cores=2).precision == "bf16"
    with pytest.raises(SeglabError, match="train.amp: fp16 autocast needs a CUDA device"):
        _choose(amp="fp16", device_type="cpu", cores=2)


@pytest.mark.parametrize("device, cores, procs, workers", [
    ("cpu", 1, 1, 0), ("cpu", 2, 1, 0), ("cpu", 4, 1, 3), ("cpu", 32, 1, 4), ("cpu", 8, 4, 0),
    ("cuda", 2, 1, 1), ("cuda", 16, 1, 15), ("cuda", 64, 1, 16), ("cuda", 16, 2, 7), ("cuda", 16, 8, 1)])
def test_workers_auto_follow_the_cores_and_the_device(device, cores, procs, workers):
    c = _choose(device_type=device, cores=cores, procs=procs, cuda_capability=(9, 0) if device == "cuda" else None)
    assert c.num_workers == workers
    assert _choose(workers=3, device_type=device, cores=cores).num_workers == 3  # a number is kept as it is


def test_tf32_and_cudnn_benchmark_only_on_cuda_and_benchmark_only_for_fixed_sizes():
    gpu = _choose(device_type="cuda", cores=16, cuda_capability=(9, 0))
    assert gpu.tf32 and gpu.cudnn_benchmark
    assert not _choose(fixed=False, device_type="cuda", cores=16, cuda_capability=(9, 0)).cudnn_benchmark
    cpu = _choose(device_type="cpu", cores=2)
    assert not cpu.tf32 and not cpu.cudnn_benchmark
    line = gpu.describe()
    assert line.startswith("bf16 autocast (train.amp auto: compute capability 9.0 has native bf16)")
    assert "15 loader workers (auto: 16 cores, GPU)" in line and "TF32" in line and "cudnn.benchmark" in line


def test_num_workers_accepts_auto_or_a_count(tiny_raw):
    from seglab.config import config_from_dict
    from seglab.errors import ConfigError

    assert config_from_dict({**tiny_raw, "train": {"num_workers": "auto"}}).train.num_workers == "auto"
    assert config_from_dict({**tiny_raw, "train": {}}).train.num_workers == "auto"
    with pytest.raises(ConfigError, match="num_workers"):
        config_from_dict({**tiny_raw, "train": {"num_workers": -1}})


def test_more_processes_than_gpus_is_refused_before_any_starts(tiny_raw, tmp_path, monkeypatch, capsys):
    """--nproc-per-node 2 on a (faked) one-GPU machine: one line naming the counts, exit 2, no process started;
    a CPU run's processes are not GPUs and pass the check."""
    import torch
    import torch.distributed.run as torchrun
    import yaml

    from seglab.cli import main
    from seglab.engine.distributed import check_gpu_count

    started = []
    monkeypatch.setattr(torchrun, "run", lambda *a, **k: started.append(a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw))
    assert main(["train", str(cfg), "--nproc-per-node", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: 2 processes on this machine but it has 1 GPU(s) visible") and "\n" not in err
    assert "--nproc-per-node 1" in err and started == []
    check_gpu_count(2, "cpu")  # gloo processes on the CPU: no GPU needed
    check_gpu_count(1, "auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_gpu_count(4, "auto")  # no CUDA: auto means CPU processes


def test_device_batches_fetch_one_ahead_and_count_only_the_loaders_time(monkeypatch):
    """Batch i + 1 is taken from the loader before batch i's step runs (on a GPU its copy overlaps the step),
    every batch arrives once and in order, and `waited` is the time inside the loader alone (a fake clock: the
    loader takes 2 units a batch, the step 5)."""
    import torch

    from seglab.engine import prefetch

    clock = [0.0]
    monkeypatch.setattr(prefetch.time, "perf_counter", lambda: clock[0])
    events = []

    class SlowLoader:
        def __len__(self):
            return 4

        def __iter__(self):
            for k in range(4):
                clock[0] += 2.0
                events.append(f"fetch {k}")
                yield (torch.full((2, 3), float(k)),)

    batches = prefetch.DeviceBatches(SlowLoader(), torch.device("cpu"))
    assert len(batches) == 4
    for k, (x,) in enumerate(batches):
        assert float(x[0, 0]) == k
        events.append(f"step {k}")
        clock[0] += 5.0
    assert events == ["fetch 0", "fetch 1", "step 0", "fetch 2", "step 1", "fetch 3", "step 2", "step 3"]
    assert batches.waited == 8.0
