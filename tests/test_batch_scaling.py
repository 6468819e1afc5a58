"""optimizer.lr_scaling: how a recipe's learning rate and weight average follow a batch other than its own."""
import json
import math

import pytest
import torch

from seglab.config import config_from_dict
from seglab.config.schema import OptimizerConfig
from seglab.engine.optim import BatchScaling
from seglab.engine.parts import build_training
from seglab.engine.trainer import fit
from seglab.errors import ConfigError


@pytest.mark.parametrize("rule,batch,accumulate,lr,ema", [
    ("none", 32, 1, 1e-3, 0.998),
    ("linear", 32, 1, 4e-3, 0.998 ** 4),
    ("sqrt", 32, 1, 2e-3, 0.998 ** 4),
    ("sqrt", 16, 2, 2e-3, 0.998 ** 4),  # the effective batch counts accumulated batches
    ("linear", 2, 1, 0.25e-3, 0.998 ** 0.25),  # smaller than the reference: lower lr, shorter average
    ("sqrt", 8, 1, 1e-3, 0.998),  # at the reference nothing changes
])
def test_lr_and_ema_decay_follow_the_effective_batch(rule, batch, accumulate, lr, ema):
    opt = OptimizerConfig(lr=1e-3, lr_scaling=rule, reference_batch=None if rule == "none" else 8)
    s = BatchScaling.of(opt, batch, accumulate, 0.998)
    assert s.lr == pytest.approx(lr)
    assert s.ema_decay == pytest.approx(ema)
    # the average's horizon in epochs is kept: (1 - decay) per step x steps per epoch is about constant
    if rule != "none":
        assert (1 - s.ema_decay) / s.ratio == pytest.approx(1 - 0.998, rel=0.01)


def test_scaling_without_a_reference_batch_is_refused_naming_the_key(tiny_raw):
    raw = dict(tiny_raw, optimizer={"name": "adam", "lr": 0.01, "lr_scaling": "sqrt"})
    with pytest.raises(ConfigError, match="reference_batch"):
        config_from_dict(raw)


def test_a_run_trains_at_the_scaled_lr_and_says_so(tiny_raw):
    """batch 8 from a recipe tuned at 2: lr x sqrt(4), EMA decay ^ 4, one start line, summary.json."""
    raw = dict(tiny_raw, optimizer={"name": "adam", "lr": 0.01, "lr_scaling": "sqrt", "reference_batch": 2})
    raw["train"] = dict(raw["train"], epochs=1, ema_decay=0.9)
    run = fit(config_from_dict(raw)).run
    log = run.log.read_text()
    assert "optimizer.lr_scaling sqrt: effective batch 8 vs reference_batch 2, lr 0.01 x sqrt(4) = 0.02" in log
    assert "train.ema_decay 0.9 ^ 4 = 0.6561" in log
    summary = json.loads(run.summary.read_text())["batch_scaling"]
    assert summary["lr"] == pytest.approx(0.02) and summary["ema_decay"] == pytest.approx(0.9 ** 4)


def test_the_optimizer_and_the_average_are_built_at_the_scaled_values(tiny_raw):
    from seglab.engine.distributed import DistInfo

    raw = dict(tiny_raw, optimizer={"name": "sgd", "lr": 0.1, "backbone_lr_mult": 0.5, "lr_scaling": "linear",
                                    "reference_batch": 16})
    raw["model"] = {"name": "pspnet", "encoder": "resnet18"}
    raw["train"] = dict(raw["train"], ema_decay=0.99)
    cfg = config_from_dict(raw)
    t = build_training(cfg, split=None, dist=DistInfo(), device=torch.device("cpu"), load_pretrained=False)
    lrs = sorted(g["lr"] for g in t.optimizer.param_groups)
    assert lrs == pytest.approx([0.025, 0.05])  # 0.1 x 8/16, the encoder's group at half of it
    assert t.ema.decay == pytest.approx(math.sqrt(0.99))


def test_the_reference_batch_itself_is_said_plainly():
    opt = OptimizerConfig(lr=0.001, lr_scaling="sqrt", reference_batch=8)
    line = BatchScaling.of(opt, 8, 1, 0.998).describe(1.0)
    assert line == "optimizer.lr_scaling sqrt: effective batch 8 = reference_batch, lr and train.ema_decay as set"
