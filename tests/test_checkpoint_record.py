"""The typed checkpoint (issue 43 item 2): artifacts/checkpoint.Checkpoint is what the trainer writes and every
reader takes; a file in the layout seglab wrote at 2e3ba3d (its exact keys and its config's values of the time)
still loads, predicts and resumes; a weights-only checkpoint is refused by --resume in one line."""
import copy

import numpy as np
import pytest
import torch
import yaml

import seglab
from seglab.artifacts.checkpoint import Checkpoint, save_checkpoint
from seglab.cli import main
from seglab.config import config_from_dict

# the entries of a last.pt written by seglab 2e3ba3d (U-Net with ema_decay), read from such a file on 2026-12-05
KEYS_2E3BA3D = ["format", "version", "model_state", "trained_model_state", "ema_updates", "optimizer_state",
                "scaler_state", "scheduler_state", "train_state", "rng", "class_weights", "config", "model", "labels",
                "normalization", "input_size", "image_max", "size_divisor"]


def _run(tiny_raw, name="rec", **train):
    raw = copy.deepcopy(tiny_raw)
    raw["train"].update(ema_decay=0.9, **train)
    raw["output"]["name"] = name
    return seglab.train(config_from_dict(raw))


def test_the_trainer_writes_a_checkpoint_that_reads_back_as_it_was(tiny_raw, tmp_path):
    run = _run(tiny_raw)
    ckpt = Checkpoint.load(run.last)
    assert ckpt.resume is not None and ckpt.train_state["epoch"] == 2 and ckpt.trained_state is not None
    assert ckpt.ema_updates > 0 and ckpt.info.name == "unet" and ckpt.resolved_config().train.ema_decay == 0.9
    assert set(torch.load(run.last, weights_only=True)) == {"format", "version", *ckpt.to_payload()}
    ckpt.save(tmp_path / "again.pt")
    again = Checkpoint.load(tmp_path / "again.pt")
    assert all(torch.equal(again.model_state[k], ckpt.model_state[k]) for k in ckpt.model_state)
    assert again.info == ckpt.info and again.config == ckpt.config and again.train_state == ckpt.train_state
    meta = Checkpoint.load(run.last, tensors=False)  # the metadata alone: tensors mapped, not read
    assert meta.info == ckpt.info and meta.train_state["epoch"] == 2


def test_a_checkpoint_in_the_2e3ba3d_layout_loads_predicts_and_resumes(tiny_raw, tmp_path):
    run = _run(tiny_raw, "old")
    data = torch.load(run.last, weights_only=True)
    old = {k: data[k] for k in KEYS_2E3BA3D}  # no nodata (and nothing else added since)
    old["config"]["train"].update(best_mode="max", num_workers=0)  # what 2e3ba3d resolved and stored
    del old["config"]["data"]["nodata"]
    save_checkpoint(run.last, {k: v for k, v in old.items() if k not in ("format", "version")})
    save_checkpoint(run.best, {k: v for k, v in old.items() if k not in ("format", "version")})
    stored = yaml.safe_load(run.config.read_text())  # the run's config.yaml as 2e3ba3d wrote it, too
    stored["train"].update(best_mode="max", num_workers=0)
    stored["data"].pop("nodata", None)
    run.config.write_text(yaml.safe_dump(stored))
    ckpt = Checkpoint.load(run.last)
    assert ckpt.info.nodata is None and ckpt.resume is not None
    image = np.random.default_rng(0).integers(0, 255, (32, 40, 3), dtype=np.uint8)
    mask = seglab.load_model(run.last).predict(image)
    assert mask.shape == (32, 40)
    # --resume continues it
    assert main(["train", "--resume", str(run.path), "--set", "train.epochs=3"]) == 0
    assert Checkpoint.load(run.last).train_state["epoch"] == 3


def test_resume_from_a_weights_only_checkpoint_is_one_line(tiny_raw, capsys):
    run = _run(tiny_raw, "weights")
    ckpt = Checkpoint.load(run.last)
    ckpt.resume = None
    ckpt.save(run.last)
    assert main(["train", "--resume", str(run.path), "--set", "train.epochs=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {run.last}: holds weights only, no training state to resume; train a new run"


def test_an_altered_training_checkpoint_names_the_missing_entry(tiny_raw, tmp_path):
    run = _run(tiny_raw, "altered")
    data = torch.load(run.last, weights_only=True)
    del data["rng"]
    save_checkpoint(tmp_path / "x.pt", {k: v for k, v in data.items() if k not in ("format", "version")})
    with pytest.raises(Exception, match=r"x\.pt: a training checkpoint without 'rng'; the file was altered"):
        Checkpoint.load(tmp_path / "x.pt")
