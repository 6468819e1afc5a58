"""Hugging Face-style model folders (issue 44 items 1-2): `seglab export RUN --format hf` writes
model.safetensors, config.json and a model card; the folder, and the same folder in a Hub cache read offline,
predict and score exactly as the checkpoint it came from."""
from __future__ import annotations

import copy
import json
import shutil
import socket

import numpy as np
import pytest
import yaml
from PIL import Image

from seglab.cli import main
from seglab.errors import SeglabError

from conftest import TINY, cli_fails, save_png

REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny trained run and its model folder, shared by this module's tests (nothing here changes them)."""
    tmp = tmp_path_factory.mktemp("hf")
    raw = copy.deepcopy(TINY)
    raw["output"] = {"dir": str(tmp / "runs"), "name": "tiny"}
    cfg = tmp / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg)]) == 0
    run = tmp / "runs" / "tiny"
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp / "tiny-hf")]) == 0
    return run, tmp / "tiny-hf"


def _images(n=3):
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (32 + 8 * k, 40, 3), dtype=np.uint8) for k in range(n)]


def test_the_folder_holds_safetensors_plain_json_and_a_card_with_the_measured_table(exported):
    run, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())  # plain JSON: no pickle anywhere
    assert config["format"] == "seglab-model-folder" and config["library_name"] == "seglab"
    assert config["labels"]["names"] == ["background", "disc", "box"]
    assert config["normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
    assert config["model"]["name"] == "unet" and config["training_config"]["model"]["base_channels"] == 4
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert f.metadata()["library"] == "seglab" and len(list(f.keys())) > 10
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "seglab" and "image-segmentation" in front["tags"]
    val = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    metrics = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {"mean_iou": round(val["miou"], 4), "accuracy": round(val["pixel_accuracy"], 4),
                       "boundary_iou": round(val["mean_boundary_iou"], 4)}
    row = f"| val | 8 | {val['miou']:.4f} | {val['pixel_accuracy']:.4f} | {val['mean_boundary_iou']:.4f} |"
    assert row in card
    for name, iou, biou in zip(val["class_names"], val["iou"], val["boundary_iou"]):
        assert f"| {name} | {iou:.4f} | {biou:.4f} |" in card
    assert "24 train, 8 val, 8 test" in card and "## Limitations" in card


def test_the_folder_predicts_the_checkpoints_masks_in_python_and_on_the_command_line(exported, tmp_path, capsys):
    import seglab

    run, folder = exported
    from_folder, from_ckpt = seglab.load_model(folder), seglab.load_model(run / "checkpoints" / "best.pt")
    for image in _images():
        assert np.array_equal(from_folder.predict(image), from_ckpt.predict(image))
        assert np.array_equal(from_folder.probabilities(image), from_ckpt.probabilities(image))
    for k, image in enumerate(_images()):
        save_png(tmp_path / "in" / f"{k}.png", image)
    assert main(["predict", str(folder), str(tmp_path / "in"), "--out", str(tmp_path / "a")]) == 0
    assert main(["predict", str(run / "checkpoints" / "best.pt"), str(tmp_path / "in"), "--out", str(tmp_path / "b")]) == 0
    masks = sorted(p.name for p in (tmp_path / "a").glob("*_mask.png"))
    assert len(masks) == 3
    for name in masks:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_eval_scores_the_folder_as_the_checkpoint_beside_it_not_inside(exported, tmp_path):
    run, folder = exported
    copy_ = tmp_path / "m"
    shutil.copytree(folder, copy_)
    assert main(["eval", str(copy_), "--split", "val"]) == 0
    got = json.loads((tmp_path / "m_eval_val" / "metrics.json").read_text())
    want = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert got["miou"] == pytest.approx(want["miou"], abs=1e-6)
    assert got["confusion"] == want["confusion"]
    assert sorted(p.name for p in copy_.iterdir()) == ["README.md", "config.json", "model.safetensors"]


def _fake_cache(home, folder, repo="me/horse"):
    """The Hub cache's layout as huggingface_hub writes it: blobs are files here, snapshots/REV holds them,
    refs/main names REV."""
    owner, name = repo.split("/")
    base = home / "hub" / f"models--{owner}--{name}"
    shutil.copytree(folder, base / "snapshots" / REV)
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(REV)


def test_a_hub_id_loads_from_the_cache_offline_with_no_network(exported, tmp_path, monkeypatch):
    import seglab

    run, folder = exported
    _fake_cache(tmp_path / "hf_home", folder)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network use: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    ckpt = seglab.load_model(run / "checkpoints" / "best.pt")
    for ref in ("hf://me/horse", "hf:me/horse", f"hf://me/horse@{REV}"):
        model = seglab.load_model(ref)
        for image in _images(2):
            assert np.array_equal(model.predict(image), ckpt.predict(image))
    save_png(tmp_path / "in" / "a.png", _images(1)[0])
    assert main(["predict", "hf://me/horse", str(tmp_path / "in"), "--out", str(tmp_path / "pred")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pred" / "a_mask.png")), ckpt.predict(_images(1)[0]))
    assert main(["eval", "hf://me/horse", "--split", "val", "--out", str(tmp_path / "ev")]) == 0
    want = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["confusion"] == want["confusion"]
    with pytest.raises(SeglabError, match=r"hf://me/zebra: not in the Hugging Face cache at .*hf_home/hub .*HF_HUB_OFFLINE=1.*download it once online"):
        seglab.load_model("hf://me/zebra")
    with pytest.raises(SeglabError, match=r"hf://horse: a Hub model is named hf://OWNER/NAME"):
        seglab.load_model("hf://horse")


def test_export_refuses_what_it_would_destroy_or_cannot_do(exported, tmp_path, capsys):
    run, folder = exported
    best = str(run / "checkpoints" / "best.pt")
    cli_fails(capsys, ["export", best, "--format", "hf", "--out", str(folder)],
              r"holds a seglab model folder; pass --overwrite to replace it")
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    cli_fails(capsys, ["export", best, "--format", "hf", "--out", str(other), "--overwrite"],
              r"holds 1 entries that are not a seglab model folder \(e.g. notes.txt\)")
    assert (other / "notes.txt").read_text() == "keep"
    cli_fails(capsys, ["export", best, "--push-to-hub", "me/horse"], r"--push-to-hub: uploads a model folder; give --format hf")
    cli_fails(capsys, ["export", best, "--format", "hf", "--size", "32", "32", "--out", str(tmp_path / "x")],
              r"--size: the hf format keeps the model as trained")
    again = tmp_path / "again"
    shutil.copytree(folder, again)
    assert main(["export", best, "--format", "hf", "--out", str(again), "--overwrite"]) == 0
    from safetensors.torch import load_file

    a, b = load_file(str(again / "model.safetensors")), load_file(str(folder / "model.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    (again / "config.json").write_text(json.dumps({"format": "something-else"}))
    cli_fails(capsys, ["predict", str(again), str(tmp_path), "--out", str(tmp_path / "p")],
              r"config.json: not a seglab model config")


def test_push_to_hub_refuses_offline_before_any_upload(exported, monkeypatch):
    from seglab.artifacts.hub import push_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SeglabError, match=r"--push-to-hub me/horse: HF_HUB_OFFLINE is set"):
        push_folder(exported[1], "me/horse")


def test_a_failed_write_leaves_the_earlier_folder_whole_and_no_temporary(exported, tmp_path, monkeypatch):
    import safetensors.torch

    from seglab.api import export
    from seglab.fileio import atomic_folder

    run, folder = exported
    target = tmp_path / "m"
    shutil.copytree(folder, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(SeglabError, match=r"/m: could not write: the disk is full"):
        export(run, fmt="hf", out=target, overwrite=True)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    with pytest.raises(RuntimeError):  # a failure after the body: the earlier folder is put back
        with atomic_folder(target) as tmp:
            (tmp / "x").write_text("new")
            monkeypatch.setattr(type(tmp), "rename", lambda self, to: (_ for _ in ()).throw(RuntimeError("cut")))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
