"""Every registered loss, in every partial-label strategy, gives under 2 gloo processes (each holding half of
the batch) the loss value of the whole batch and the gradient one process computes (issue 14): Dice terms
pool their sums over ranks instead of averaging per-rank Dice values."""
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from seglab.losses import list_losses, list_strategies, strategy_takes

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _cases():
    return [(name, strategy, weighted) for name in list_losses() for strategy in list_strategies()
            if strategy_takes(strategy, name)
            for weighted in (False, True) if not (weighted and strategy == "conditional")]


def _batch(k=3, n=4, size=(6, 7)):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, k, *size, generator=g) * 2
    target = torch.randint(0, k, (n, *size), generator=g)
    target[torch.rand(n, *size, generator=g) < 0.1] = 255
    target[3] = 255  # a sample without one labelled pixel (on rank 1): every rank must still join every sum
    labelled = torch.ones(n, k, dtype=torch.bool)
    labelled[1, 2] = labelled[2, 1] = False  # partial labels, one sample per rank
    target[1][target[1] == 2] = 0
    target[2][target[2] == 1] = 0
    return logits, target, labelled


def _loss(name, strategy, weighted, k=3):
    from seglab.losses import build_loss

    weight = torch.tensor([0.5, 1.0, 2.0]) if weighted else None
    # OHEM: a low threshold, so the min_kept hardest pixels of the global batch decide what is kept
    own = {"ohem_threshold": 0.05, "ohem_min_kept": 20} if name == "ohem" else {}
    return build_loss(name, ignore_index=255, weight=weight, ce_weight=1.0, dice_weight=0.7, dice_smooth=1.0,
                      strategy=strategy, exclusion_weight=0.5, **own)


def _worker(rank, world, port, out):
    from seglab.losses import pooled_over_ranks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    logits, target, labelled = _batch()
    rows = slice(rank * 2, rank * 2 + 2)
    report = {}
    for name, strategy, weighted in _cases() + [("ce_dice", "naive", "unpooled")]:
        fn = _loss(name, strategy, weighted is True)
        mine = logits[rows].clone().requires_grad_()
        with pooled_over_ranks(weighted != "unpooled"):
            value = fn(mine, target[rows], labelled[rows])
        value.backward()
        if weighted == "unpooled":  # what DDP made of it before: the mean of per-rank losses and gradients
            grad = mine.grad / world
            v = torch.tensor([float(value)])
            dist.all_reduce(v)
            value = v / world
        else:
            grad = mine.grad
        grads = [torch.zeros_like(grad) for _ in range(world)]
        dist.all_gather(grads, grad.contiguous())
        values = [torch.zeros(1) for _ in range(world)]
        dist.all_gather(values, torch.tensor([float(value)]))
        if rank == 0:
            full = logits.clone().requires_grad_()
            ref = fn(full, target, labelled)
            ref.backward()
            report[f"{name}/{strategy}/{weighted}"] = {
                "value": max(abs(float(v) - float(ref)) for v in values),
                "grad": float((torch.cat(grads) - full.grad).abs().max()),
                "scale": float(full.grad.abs().max()),
            }
    if rank == 0:
        with open(out, "w") as f:
            json.dump(report, f)
    dist.destroy_process_group()


def test_every_loss_under_two_processes_equals_one_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "report.json"
    mp.spawn(_worker, args=(2, port, str(out)), nprocs=2, join=True)
    report = json.loads(out.read_text())
    cases = _cases()
    assert len(cases) >= 3 * 4 and {c[0] for c in cases} >= {"cross_entropy", "dice", "ce_dice"}
    for name, strategy, weighted in cases:
        r = report[f"{name}/{strategy}/{weighted}"]
        assert r["value"] < 1e-5, (name, strategy, weighted, r)
        assert r["grad"] < 1e-5 * max(1.0, r["scale"]), (name, strategy, weighted, r)
    # the check can fail: per-rank Dice averaged over ranks is not the whole batch's Dice
    control = report["ce_dice/naive/unpooled"]
    assert control["value"] > 1e-3 or control["grad"] > 1e-3 * control["scale"], control
