"""Training switches (issue 16): gradient accumulation, a moving average of the weights, and the
gradient scaler's state in checkpoints; each resumes exactly."""
import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import seglab
from seglab.artifacts.checkpoint import load_checkpoint
from seglab.config import config_from_dict
from seglab.engine.distributed import DistInfo
from seglab.engine.ema import ModelEMA
from seglab.engine.parts import train_step
from seglab.engine.trainer import fit
from seglab.losses import build_loss

from conftest import TINY


def _raw(tmp_path, name, epochs, **train):
    raw = copy.deepcopy(TINY)
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": name}
    raw["train"].update(epochs=epochs, estimate_steps=0, **train)
    return raw


def _step_object(model, lr=0.1):
    cfg = config_from_dict(copy.deepcopy(TINY))
    return SimpleNamespace(cfg=cfg, device=torch.device("cpu"), precision="fp32", net=model, model=model,
                           loss_fn=build_loss("cross_entropy", ignore_index=255),
                           optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                           scaler=torch.amp.GradScaler("cuda", enabled=False), dist=DistInfo(0, 1, 0), ema=None)


def test_two_accumulated_batches_make_the_step_of_their_union():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))  # no batch norm
    twin = copy.deepcopy(model)
    x, y = torch.randn(8, 3, 6, 7), torch.randint(0, 3, (8, 6, 7))
    lab = torch.ones(8, 3, dtype=torch.bool)
    one, two = _step_object(model), _step_object(twin)
    train_step(one, x, y, lab, "test")
    train_step(two, x[:4], y[:4], lab[:4], "test", first=True, last=False, group=2)
    train_step(two, x[4:], y[4:], lab[4:], "test", first=False, last=True, group=2)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_ema_update_is_the_weighted_average():
    model = nn.BatchNorm2d(2)
    ema = ModelEMA(model, decay=0.75, warmup=False)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(4.0)
    model.num_batches_tracked += 5
    ema.update(model)
    assert torch.allclose(ema.model.weight, 0.75 * before + 0.25 * (before + 4.0))
    assert int(ema.model.num_batches_tracked) == int(model.num_batches_tracked)
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())


def test_ema_warms_up_so_a_short_run_forgets_its_random_start():
    model = nn.Linear(1, 1, bias=False)
    ema = ModelEMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
        ema.model.weight.fill_(0.0)
    decays = []
    for _ in range(100):
        decays.append(ema.current_decay())
        ema.update(model)
    assert decays[0] == pytest.approx(0.1) and decays[90] == pytest.approx(91 / 100)
    # without warm-up 0.999^100 = 90% of the random start would remain; with it almost none
    assert float(ema.model.weight) == pytest.approx(1 - math.prod(decays), rel=1e-5) and float(ema.model.weight) > 0.85


def test_accumulation_and_ema_resume_exactly(tmp_path):
    # a constant schedule, so that 2 epochs resumed to 3 are the first 2 of a 3-epoch run
    switches = dict(accumulate_steps=2, ema_decay=0.9)
    TINY_CONSTANT = {"name": "constant"}
    raws = [_raw(tmp_path, name, epochs, **switches) for name, epochs in (("full", 3), ("part", 2), ("part", 3))]
    for raw in raws:
        raw["schedule"] = TINY_CONSTANT
    full = fit(config_from_dict(raws[0])).run
    fit(config_from_dict(raws[1]))
    resumed = fit(config_from_dict(raws[2]), resume=True).run
    a, b = load_checkpoint(full.last), load_checkpoint(resumed.last)
    for key in ("model_state", "trained_model_state"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    # 24 images in batches of 8: 3 batches, so optimizer steps of 2 + 1 batches, 2 a epoch, 6 in all
    assert a["scheduler_state"]["last_epoch"] == 6
    assert "scaler_state" in a  # fp16's loss scale resumes too (the scaler is off on a CPU)
    # the saved (and evaluated) weights are the average, not the trained ones
    assert any(not torch.equal(a["model_state"][k], a["trained_model_state"][k]) for k in a["model_state"])


def test_validation_and_evaluation_score_the_moving_average(tmp_path):
    run = seglab.train(config_from_dict(_raw(tmp_path, "ema", 2, ema_decay=0.5)))
    summary = json.loads(run.summary.read_text())
    logged = {int(r["epoch"]): float(r["val_miou"]) for r in run.read_history()}[summary["best_epoch"]]
    assert json.loads((run.eval_dir("val") / "metrics.json").read_text())["miou"] == pytest.approx(logged, abs=1e-6)


def test_resume_restores_the_gradient_scaler(monkeypatch):
    import seglab.engine.trainer as trainer

    loaded = {}
    model = nn.Linear(1, 1)
    t = SimpleNamespace(data=SimpleNamespace(labels=SimpleNamespace(num_classes=2, names=["a", "b"])), model=model,
                        ema=None, optimizer=torch.optim.SGD(model.parameters(), lr=1),
                        scaler=SimpleNamespace(load_state_dict=loaded.update))
    from seglab.artifacts import ModelInfo
    from seglab.data.labels import LabelSpace

    info = ModelInfo(name="unet", options={}, in_channels=3, num_classes=2, mean=(0.5,) * 3, std=(0.5,) * 3,
                     labels=LabelSpace(names=["a", "b"], palette=[(0, 0, 0), (255, 255, 255)]))
    from seglab.artifacts.checkpoint import Checkpoint, ResumeState

    ckpt = Checkpoint(info=info, config={}, model_state=model.state_dict(),
                      resume=ResumeState(optimizer=t.optimizer.state_dict(), scheduler={}, train_state={}, rng=None,
                                         scaler={"scale": 1024.0, "_growth_tracker": 7}))
    monkeypatch.setattr(trainer, "set_rng_state", lambda state: None)
    trainer._restore(t, SimpleNamespace(load_state_dict=lambda state: None), ckpt, "last.pt")
    assert loaded == {"scale": 1024.0, "_growth_tracker": 7}
