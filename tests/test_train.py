import copy
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import seglab
from seglab.config import config_from_dict
from seglab.engine.trainer import fit
from seglab.errors import SeglabError

from conftest import TINY


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    raw = copy.deepcopy(TINY)
    raw["output"]["dir"] = str(tmp_path_factory.mktemp("runs"))
    raw["train"]["epochs"] = 3
    raw["eval"]["split"] = "test"
    return seglab.train(config_from_dict(raw))


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_smoke_training_writes_every_artefact(trained_run):
    run = trained_run
    rows = _rows(run.metrics_csv)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    for key in ("val_loss", "val_miou", "val_pixel_accuracy", "val_mean_boundary_iou", "lr", "epoch_seconds"):
        assert rows[-1][key] != ""
    for p in (run.config, run.split, run.log, run.best, run.last, run.report, run.summary,
              run.eval_dir("val") / "metrics.json", run.eval_dir("test") / "per_class.csv",
              run.eval_dir("val") / "per_class.md"):
        assert p.is_file(), p
    for name in ("loss", "metrics", "per_class_iou_val", "confusion_val", "samples_val", "confusion_test"):
        assert (run.plots / f"{name}.png").is_file(), name
    assert any(f.name.startswith("events.out.tfevents") for f in run.tensorboard.iterdir())
    assert yaml.safe_load(run.config.read_text())["train"]["epochs"] == 3
    assert "epoch 3/3" in run.log.read_text() and "training done" in run.log.read_text()


def test_report_is_self_contained(trained_run):
    html = trained_run.report.read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    import re

    assert not re.search(r"<script[^>]*\ssrc=", html)  # scripts (plotly.js) inlined
    markup = re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.S)
    assert "src=\"http" not in markup and "href=\"http" not in markup and "<link" not in markup
    assert 'id="curve_loss"' in html and 'id="curve_metrics"' in html  # interactive curves
    assert "mIoU" in html and "Resolved config" in html and "total training time" in html


def test_checkpoint_is_weights_only_loadable_and_complete(trained_run):
    ckpt = torch.load(trained_run.best, weights_only=True)
    assert ckpt["format"] == "seglab-checkpoint"
    assert ckpt["labels"]["names"] == ["background", "disc", "box"]
    assert ckpt["model"]["name"] == "unet" and ckpt["normalization"]["mean"] == [0.5, 0.5, 0.5]
    assert ckpt["config"]["model"]["base_channels"] == 4


def test_eval_metrics_match_training_validation(trained_run):
    m = seglab.evaluate(trained_run.path, split="val", report=False)
    best = yaml.safe_load(trained_run.summary.read_text())["best_value"]
    assert m["miou"] == pytest.approx(best, abs=1e-9)
    assert 0.0 <= m["mean_boundary_iou"] <= 1.0 and len(m["iou"]) == 3


def test_existing_run_folder_needs_resume_or_overwrite(trained_run):
    cfg = config_from_dict(yaml.safe_load(trained_run.config.read_text()))
    with pytest.raises(SeglabError, match="run folder exists; pass --resume .* or --overwrite"):
        seglab.train(cfg)


def test_best_val_loss_keeps_the_lowest_loss_epoch_and_a_contradicting_mode_is_refused(tiny_raw):
    """Issue 43 item 1: best_metric val_loss with best_mode defaulting to max kept the worst epoch; the
    metric vocabulary now gives the direction (lower is better for val_loss), and a best_mode or a
    tune.direction that contradicts its metric is refused in one line."""
    from seglab.artifacts.checkpoint import load_checkpoint
    from seglab.errors import ConfigError

    raw = copy.deepcopy(tiny_raw)
    raw["train"].update(epochs=4, best_metric="val_loss")
    run = seglab.train(config_from_dict(raw))
    losses = {int(r["epoch"]): float(r["val_loss"]) for r in _rows(run.metrics_csv)}
    assert len(set(losses.values())) > 1  # the epochs differ, so the wrong side would show
    lowest = min(losses, key=losses.get)
    assert load_checkpoint(run.best)["train_state"]["epoch"] == lowest
    assert json.loads(run.summary.read_text())["best_value"] == pytest.approx(losses[lowest], rel=1e-4)
    for section, setting, pattern in (
            ("train", {"best_metric": "val_loss", "best_mode": "max"},
             r"train: best_mode max contradicts best_metric val_loss, for which lower is better; leave best_mode out"),
            ("train", {"best_mode": "min"}, r"best_mode min contradicts best_metric miou, for which higher is better"),
            ("tune", {"metric": "val_loss", "direction": "maximize"},
             r"tune: direction maximize contradicts metric val_loss, for which lower is better")):
        bad = copy.deepcopy(tiny_raw)
        bad.setdefault(section, {}).update(setting)
        with pytest.raises(ConfigError, match=pattern):
            config_from_dict(bad)
    agreeing = copy.deepcopy(tiny_raw)
    agreeing["train"].update(best_metric="val_loss", best_mode="min")
    agreeing["tune"] = {"metric": "val_loss"}
    cfg = config_from_dict(agreeing)
    assert cfg.train.best.higher_is_better is False and cfg.tune.study_direction == "minimize"


def test_early_stopping(tiny_raw):
    tiny_raw["train"].update(epochs=6, early_stopping_patience=1)
    tiny_raw["optimizer"]["lr"] = 1e-12  # nothing improves after the first validation
    run = seglab.train(config_from_dict(tiny_raw))
    assert len(_rows(run.metrics_csv)) == 2
    assert "early stopping" in run.log.read_text()


def _write_cfg(tmp_path: Path, name: str, **train) -> Path:
    raw = copy.deepcopy(TINY)
    raw["data"]["synthetic"].update(num_train=96, size=[48, 48])
    raw["train"].update(epochs=6, batch_size=8, threads=1, **train)
    raw["model"]["dropout"] = 0.2  # the resumed run must also restore the dropout RNG
    raw["augment"].update(scale=[0.8, 1.2], crop=[40, 40], rotate=10)
    raw["output"] = {"dir": str(tmp_path), "name": name}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _seglab(*args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "seglab", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_resume_after_sigkill_or_sigterm_matches_uninterrupted_run(tmp_path):
    """kill -9 anywhere, and SIGTERM (issue 24 item 8: what `kill` and schedulers send; handled like Ctrl-C,
    exit 143, "interrupted", the lock released), then --resume: the same weights and metrics as one run."""
    full = _seglab("train", str(_write_cfg(tmp_path, "full")))
    assert full.wait(timeout=300) == 0, full.stdout.read()
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    ra = _rows(tmp_path / "full" / "metrics.csv")

    for sig, name in ((signal.SIGKILL, "killed"), (signal.SIGTERM, "terminated")):
        proc = _seglab("train", str(_write_cfg(tmp_path, name)))
        metrics = tmp_path / name / "metrics.csv"
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if metrics.is_file() and len(_rows(metrics)) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.3)  # land somewhere inside the next epoch
        proc.send_signal(sig)
        out = proc.communicate(timeout=60)[0]
        if sig == signal.SIGTERM:
            assert proc.returncode == 143 and out.strip().splitlines()[-1] == "interrupted (SIGTERM)", out[-2000:]
            assert not (tmp_path / f".{name}.lock").exists()  # released, as after Ctrl-C
            assert not list((tmp_path / name).rglob("*.tmp"))
        done = len(_rows(metrics))
        assert done < 6
        resumed = _seglab("train", "--resume", str(tmp_path / name))
        out = resumed.communicate(timeout=300)[0]
        assert resumed.returncode == 0, out
        assert "resuming" in out

        b = torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)
        for k, v in a["model_state"].items():
            assert torch.equal(v, b["model_state"][k]), (name, k)
        rb = _rows(metrics)
        assert len(ra) == len(rb) == 6
        for x, y in zip(ra, rb):
            for key in ("epoch", "train_loss", "val_loss", "val_miou", "val_mean_boundary_iou", "lr"):
                assert x[key] == y[key], (name, key, x, y)


@pytest.mark.parametrize("model", [{"name": "u2net_small"}, {"name": "pspnet", "encoder": "resnet18"},
                                   {"name": "lraspp"}])
def test_zoo_models_train_through_the_same_trainer(tiny_raw, model):
    tiny_raw["model"] = model
    tiny_raw["train"]["epochs"] = 1
    tiny_raw["loss"]["aux_weight"] = 1.0 if model["name"] == "u2net_small" else 0.4
    run = seglab.train(config_from_dict(tiny_raw))
    assert len(_rows(run.metrics_csv)) == 1 and run.best.is_file()
    ckpt = torch.load(run.best, weights_only=True)
    assert ckpt["model"]["name"] == model["name"] and ckpt["model"]["options"] == {k: v for k, v in model.items() if k != "name"}


def test_aux_weight_count_mismatch_is_a_config_error(tiny_raw):
    tiny_raw["model"] = {"name": "u2net_small"}
    tiny_raw["loss"]["aux_weight"] = [1.0, 1.0]
    with pytest.raises(SeglabError, match=r"loss\.aux_weight: the model has 6 auxiliary outputs, 2 weights given"):
        seglab.train(config_from_dict(tiny_raw))


def _losses(run_dir):
    import csv

    with open(run_dir / "metrics.csv") as f:
        return [float(r["train_loss"]) for r in csv.DictReader(f)]


def test_speed_switches_compile_and_bf16(tiny_raw, tmp_path):
    """torch.compile trains the same model as eager; bf16 autocast trains close to fp32; fp16 needs CUDA."""

    tiny_raw["model"] = {"name": "unet", "base_channels": 4, "depth": 1}
    tiny_raw["loss"] = {"name": "cross_entropy"}
    runs = {}
    for name, sets in (("eager", {}), ("compiled", {"compile": True}), ("bf16", {"amp": "bf16"})):
        raw = copy.deepcopy(tiny_raw)
        raw["train"].update(epochs=2, **sets)
        raw["output"]["name"] = name
        runs[name] = _losses(fit(config_from_dict(raw)).run.path)
    assert runs["compiled"] == pytest.approx(runs["eager"], rel=1e-3)
    assert runs["bf16"] == pytest.approx(runs["eager"], rel=5e-2)
    tiny_raw["train"]["amp"] = "fp16"
    with pytest.raises(SeglabError, match="train.amp: fp16 autocast needs a CUDA device"):
        fit(config_from_dict(tiny_raw))


def test_amp_auto_uses_bf16_only_on_cpus_with_native_bf16(tiny_raw, monkeypatch):
    """`train.amp: auto` -> bf16 autocast on a CPU with AVX512-BF16/AMX (measured faster there), fp32 on other
    CPUs (where bf16 is emulated and slower); the run records what it used and why."""
    import json

    from seglab.engine import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    tiny_raw["train"].update(epochs=1, amp="auto")
    summary = json.loads((fit(config_from_dict(tiny_raw)).run.path / "summary.json").read_text())
    assert summary["precision"] == "bf16"
    assert summary["runtime"]["reasons"]["precision"] == "train.amp auto: this CPU has native bf16"
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    tiny_raw["output"]["name"] = "fp32"
    summary = json.loads((fit(config_from_dict(tiny_raw)).run.path / "summary.json").read_text())
    assert summary["precision"] == "none"
    assert summary["runtime"]["num_workers"] == 0 and summary["runtime"]["cudnn_benchmark"] is False


def test_eval_writes_per_image_metrics_and_the_worst_images(trained_run):
    run = trained_run
    with (run.eval_dir("val") / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    metrics = json.loads((run.eval_dir("val") / "metrics.json").read_text())
    assert len(rows) == metrics["num_images"] == 8
    assert list(rows[0])[:4] == ["image", "miou", "pixel_accuracy", "mean_boundary_iou"]
    assert {r["image"] for r in rows} == {f"val/{i:05d}" for i in range(8)}
    for r in rows:  # each image's mIoU is the mean of its class IoUs
        ious = [float(v) for k, v in r.items() if k.startswith("iou_") and v != ""]
        assert float(r["miou"]) == pytest.approx(sum(ious) / len(ious), abs=1e-5)
    for name in ("per_image_miou_val", "worst_val"):
        assert (run.plots / f"{name}.png").is_file(), name
    assert "Per image" in run.report.read_text()


def test_evaluation_after_fit_from_memory_equals_the_reloaded_checkpoints(tiny_raw, tmp_path, monkeypatch):
    import dataclasses

    from seglab.config.metric_names import metric

    from seglab.artifacts.checkpoint import load_checkpoint
    from seglab.workflows.runs import evaluate, evaluate_and_report

    raw = copy.deepcopy(tiny_raw)
    # the lowest mIoU is "best" (the vocabulary's direction turned round for this test only): best.pt is an
    # early epoch, so the model in memory must be given its weights
    raw["train"].update(epochs=3, ema_decay=0.9)
    cfg = config_from_dict(raw)
    monkeypatch.setattr(type(cfg.train), "best", property(lambda t: dataclasses.replace(metric(t.best_metric),
                                                                                        higher_is_better=False)))
    fitted = fit(cfg)
    run = fitted.run
    best, last = load_checkpoint(run.best)["model_state"], load_checkpoint(run.last)["model_state"]
    assert load_checkpoint(run.best)["train_state"]["epoch"] < 3
    assert not all(torch.equal(best[k], last[k]) for k in best)
    held = fitted.model.state_dict()
    assert all(torch.equal(held[k], best[k]) for k in best) and not fitted.model.training
    evaluate_and_report(run, ["val", "test"], fitted)
    for split in ("val", "test"):
        evaluate(run.path, split=split, out=tmp_path / f"again_{split}", report=False)
        in_memory, reloaded = (json.loads((d / "metrics.json").read_text())
                               for d in (run.eval_dir(split), tmp_path / f"again_{split}"))
        for timing in ("seconds", "metric_seconds"):
            in_memory.pop(timing), reloaded.pop(timing)
        assert in_memory == reloaded
        for table in ("per_class.csv", "per_image.csv"):
            assert (run.eval_dir(split) / table).read_text() == (tmp_path / f"again_{split}" / table).read_text()
