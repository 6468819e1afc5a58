"""torchrun with 2 CPU processes (gloo): the same validation metrics as one process on the same data,
global batch size and seed, and resume under DDP.

Tolerance: validation mIoU within 0.005 and losses within 1e-3 (relative). With sync_bn and the global
batch split over ranks the two runs compute the same sums in a different order, so they differ only by
float rounding (about 1e-5 measured). The loss is ce_dice, whose Dice term is not a per-pixel mean: it
matches only because losses pool their sums over ranks (tests/test_distributed_losses.py checks every loss)."""
import copy
import csv
import json
import os
import subprocess
import sys

import pytest
import torch.distributed as dist
import yaml

from seglab.cli import main

from conftest import TINY

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")]


def _raw(tmp_path, name, epochs, sync_bn=True):
    raw = copy.deepcopy(TINY)
    raw["loss"] = {"name": "ce_dice"}  # the Weizmann Horse default; its Dice term pools over ranks
    raw["schedule"] = {"name": "constant"}
    raw["optimizer"] = {"name": "adam", "lr": 0.01}
    raw["train"].update(epochs=epochs, batch_size=8, threads=1, sync_bn=sync_bn)
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": name}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _torchrun(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "seglab", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res.stdout


def _history(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _close(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra["val_miou"] == pytest.approx(rb["val_miou"], abs=0.005)
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-3)
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-3)


def test_two_processes_match_one_and_resume(tmp_path):
    assert main(["train", _raw(tmp_path, "single", 6)]) == 0
    single = _history(tmp_path / "runs" / "single")
    assert single[-1]["val_miou"] > single[0]["val_miou"]  # it learns, so the comparison means something

    out = _torchrun("train", _raw(tmp_path, "ddp", 6), cwd=tmp_path)
    assert "x 2 processes" in out
    run = tmp_path / "runs" / "ddp"
    _close(_history(run), single)
    assert (run / "eval" / "val" / "metrics.json").is_file() and (run / "report.html").is_file()
    # the validation logged while training (sharded over ranks) is rank 0's re-evaluation of the same weights
    summary = json.loads((run / "summary.json").read_text())
    logged = {int(r["epoch"]): r["val_miou"] for r in _history(run)}[summary["best_epoch"]]
    assert json.loads((run / "eval" / "val" / "metrics.json").read_text())["miou"] == pytest.approx(logged, abs=1e-6)
    assert not list(tmp_path.glob("runs/ddp*/*rank*"))  # only rank 0 writes the run folder

    # resume under DDP: 3 epochs, then continue to 6 from last.pt
    _torchrun("train", _raw(tmp_path, "ddp_resumed", 3), cwd=tmp_path)
    # ... through seglab's own launcher (torchrun --standalone after the config checks)
    res = subprocess.run([sys.executable, "-m", "seglab", "train", "--resume", str(tmp_path / "runs" / "ddp_resumed"),
                          "--set", "train.epochs=6", "--nproc-per-node", "2"], capture_output=True, text=True,
                         cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert res.returncode == 0 and "training so far) on 2 processes" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    _close(_history(tmp_path / "runs" / "ddp_resumed"), single)


def test_without_sync_bn_validation_scores_the_saved_model(tmp_path):
    """Without sync_bn each rank's batch-norm statistics follow its own half batches; validation (sharded over
    ranks) must score rank 0's model, the one saved: the logged validation loss is that of last.pt."""
    import torch

    from seglab.artifacts.checkpoint import Checkpoint
    from seglab.config import load_config
    from seglab.data.datasets import EvalDataset, build_data
    from seglab.data.splits import load_split
    from seglab.evaluation.evaluate import run_evaluation
    from seglab.evaluation.model_files import build_checkpoint_model
    from seglab.losses import build_loss_from_config

    _torchrun("train", _raw(tmp_path, "ddp_local_bn", 2, sync_bn=False), cwd=tmp_path)
    run = tmp_path / "runs" / "ddp_local_bn"
    cfg = load_config(run / "config.yaml")
    data = build_data(cfg.data, cfg.augment, split=load_split(run / "split.json"))
    model = build_checkpoint_model(run / "checkpoints" / "last.pt", Checkpoint.load(run / "checkpoints" / "last.pt"))
    loss_fn = build_loss_from_config(cfg.loss, ignore_index=data.labels.ignore_index, weight=None)
    res = run_evaluation(model.eval(), EvalDataset(data.readers["val"], cfg.augment), data.labels, device=torch.device("cpu"),
                         batch_size=cfg.eval.batch_size, loss_fn=loss_fn)
    assert res.metrics["loss"] == pytest.approx(_history(run)[-1]["val_loss"], rel=1e-5)


def test_compare_and_k_fold_under_torchrun(tmp_path):
    """`seglab compare` and `k_folds` run unchanged under torchrun: every experiment and fold trains on both ranks,
    rank 0 alone writes the tables and reports, and the numbers match a one-process run of the same configs."""
    a, b = _raw(tmp_path, "a", 2), _raw(tmp_path, "b", 2)
    raw = yaml.safe_load(open(b))
    raw["model"] = {"name": "unet", "base_channels": 6, "depth": 1}
    open(b, "w").write(yaml.safe_dump(raw))
    assert main(["compare", a, b, "--out", str(tmp_path / "single"), "--images", "2"]) == 0
    _torchrun("compare", a, b, "--out", str(tmp_path / "ddp"), "--images", "2", cwd=tmp_path)
    rows = {w: list(csv.DictReader(open(tmp_path / w / "results.csv"))) for w in ("single", "ddp")}
    assert [r["experiment"] for r in rows["ddp"]] == ["a", "b"]
    for rs, rd in zip(rows["single"], rows["ddp"]):
        assert float(rd["miou"]) == pytest.approx(float(rs["miou"]), abs=0.005)
    assert (tmp_path / "ddp" / "report.html").is_file() and (tmp_path / "ddp" / "predictions.png").is_file()

    cv = yaml.safe_load(open(a))
    cv.update(k_folds=2)
    cv["output"]["name"] = "cv"
    path = tmp_path / "cv.yaml"
    path.write_text(yaml.safe_dump(cv))
    _torchrun("train", str(path), cwd=tmp_path)
    import json

    summary = json.loads((tmp_path / "runs" / "cv" / "cv_summary.json").read_text())
    mious = [json.loads((tmp_path / "runs" / "cv" / f"fold_{k}" / "eval" / "val" / "metrics.json").read_text())["miou"]
             for k in (1, 2)]
    assert summary["mean"]["miou"] == pytest.approx(sum(mious) / 2)
    assert not list(tmp_path.rglob("*rank*"))


def test_time_budget_under_torchrun_keeps_ranks_in_step(tmp_path):
    """Every rank re-plans from the same all-reduced numbers, so all take the same number of steps (a rank
    that stopped early would leave the others waiting in an all-reduce forever, caught by the timeout)."""
    path = _raw(tmp_path, "budget", 1000)
    raw = yaml.safe_load(open(path))
    raw["schedule"] = {"name": "cosine", "min_lr_ratio": 0.1}
    open(path, "w").write(yaml.safe_dump(raw))
    out = _torchrun("train", path, "--budget", "10s", cwd=tmp_path)
    assert "time budget 10 s: planned" in out
    import json

    import torch

    timing = json.loads((tmp_path / "runs" / "budget" / "summary.json").read_text())["timing"]
    assert timing["steps_run"] == timing["planned_steps"] > 0
    ckpt = torch.load(tmp_path / "runs" / "budget" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["optimizer_state"]["param_groups"][0]["lr"] == pytest.approx(0.01 * 0.1)


def test_an_uneven_global_batch_is_refused_once_before_any_work(tmp_path):
    """Under torchrun every rank finds it, rank 0 alone says it (torchrun then adds its own report); seglab's
    --nproc-per-node checks before any process starts: one line in all, no traceback."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    message = ("error: train.batch_size: 7 (the global batch) does not split over 2 processes; the nearest that "
               "do are 6 and 8 (--set train.batch_size=N)")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "seglab", "train", _raw(tmp_path, "uneven", 1), "--set", "train.batch_size=7"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert lines == [message], res.stderr[-2000:]
    # torchrun's own report (its traceback cannot be silenced from a worker) names seglab's line as the root
    # cause, written to torchelastic's error file, not "To enable traceback see: ..."
    report = res.stderr[res.stderr.index("Root Cause"):]
    assert "seglab: " + message.removeprefix("error: ") in report and "To enable traceback" not in report
    assert not (tmp_path / "runs").exists()
    cmd = [sys.executable, "-m", "seglab", "train", _raw(tmp_path, "uneven", 1), "--set", "train.batch_size=7",
           "--nproc-per-node", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert (res.returncode, res.stdout, res.stderr.strip()) == (2, "", message)
    assert not (tmp_path / "runs").exists()
    # a run folder to resume is checked before the processes start too
    res = subprocess.run([sys.executable, "-m", "seglab", "train", "--resume", str(tmp_path / "none"),
                          "--nproc-per-node", "2"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert (res.returncode, res.stderr.strip()) == (2, f"error: {tmp_path / 'none'}: not a run folder (no config.yaml)")
