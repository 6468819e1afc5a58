import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from seglab.cli import main

from conftest import cfg_file as _cfg_file, cli_fails as _fails, TINY, folder_raw, save_png


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    raw = copy.deepcopy(TINY)
    raw["output"] = {"dir": str(d / "runs"), "name": "r"}
    raw["train"]["epochs"] = 1
    assert main(["train", _cfg_file(d, raw), "--set", "train.batch_size=4"]) == 0
    return d / "runs" / "r"


def test_train_set_override_is_saved(cli_run):
    assert yaml.safe_load((cli_run / "config.yaml").read_text())["train"]["batch_size"] == 4


def test_image_without_mask(capsys, folder, tmp_path):
    root, raw = folder
    (root / "masks" / "img03.png").unlink()
    _fails(capsys, ["train", _cfg_file(tmp_path, raw)], r"img03\.png: no mask 'img03\.\*' in .*masks")
    assert not (Path(raw["output"]["dir"]) / "tiny").exists()  # nothing half-written


def test_corrupt_image(capsys, folder, tmp_path):
    root, raw = folder
    (root / "images" / "img02.png").write_bytes(b"\x89PNG garbage")
    _fails(capsys, ["train", _cfg_file(tmp_path, raw)], r"img02\.png: (not a readable image|cannot decode)")
    assert not (Path(raw["output"]["dir"]) / "tiny").exists()


def test_truncated_image(capsys, folder, tmp_path):
    root, raw = folder
    p = root / "images" / "img01.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:-40])
    _fails(capsys, ["train", _cfg_file(tmp_path, raw)], r"img01\.png: (cannot decode image|not a readable)")


def test_size_mismatch_without_alignment(capsys, folder, tmp_path):
    root, raw = folder
    Image.open(root / "images" / "img00.png").resize((30, 25)).save(root / "images" / "img00.png")
    _fails(capsys, ["train", _cfg_file(tmp_path, raw)],
           r"img00\.png is 30x25 but its mask .*img00\.png is 24x20; set data\.align")


def test_mask_colour_not_in_palette(capsys, tmp_path, tiny_raw):
    root = tmp_path / "rgbdata"
    (root).mkdir()
    (root / "class_dict.csv").write_text("name,r,g,b\nbg,0,0,0\nroad,128,64,128\n")
    for i in range(4):
        rgb = np.zeros((8, 8, 3), np.uint8)
        rgb[:4] = (128, 64, 128)
        if i == 2:
            rgb[0, :5] = (10, 20, 30)
        save_png(root / "masks" / f"m{i}.png", rgb)
        save_png(root / "images" / f"m{i}.png", rgb)
    raw = folder_raw(tiny_raw, root, mask_encoding="rgb", palette_file="class_dict.csv", class_names=None)
    _fails(capsys, ["train", _cfg_file(tmp_path, raw)], r"m2\.png: colour \(10, 20, 30\) \(5 px\) is not in the palette")


def test_mask_index_out_of_range(capsys, folder, tmp_path):
    root, raw = folder
    save_png(root / "masks" / "img04.png", np.full((20, 24), 7, np.uint8))
    _fails(capsys, ["train", _cfg_file(tmp_path, raw)], r"img04\.png: mask values 7 \(480 px\) are not class ids 0\.\.2")


def test_empty_split(capsys, folder, tmp_path):
    root, raw = folder
    raw["data"]["random_split"] = {"val": 0.0, "seed": 0}
    _fails(capsys, ["train", _cfg_file(tmp_path, raw)], r"data\.random_split\.val: 0 leaves no validation images")
    (root / "empty.txt").write_text("\n")
    raw["data"]["val"] = {"list": "empty.txt"}
    _fails(capsys, ["train", _cfg_file(tmp_path, raw)], r"empty\.txt: split list is empty")


@pytest.mark.parametrize("override,pattern", [
    ("train.epoch=3", r"cfg\.yaml: train\.epoch: unknown key; allowed: epochs"),
    ("train.epochs=many", r"train\.epochs: .*integer.*'many'"),
    ("loss.name=focl", r"loss\.name: unknown loss 'focl'; available: "),
    ("train.epochs", r"--set 'train\.epochs': expected KEY=VALUE"),
    ("model.widht=3", r"model\.widht: unknown option; allowed: base_channels, condition_channels, decoder_channels, depth, dropout, encoder"),
])
def test_bad_config_values(capsys, tmp_path, tiny_raw, override, pattern):
    _fails(capsys, ["train", _cfg_file(tmp_path, tiny_raw), "--set", override], pattern)


def test_missing_data_root(capsys, tmp_path, tiny_raw):
    raw = folder_raw(tiny_raw, tmp_path / "nowhere")
    _fails(capsys, ["inspect", _cfg_file(tmp_path, raw)], r"data\.root: folder '.*nowhere' not found")


def test_existing_run_folder(capsys, cli_run):
    _fails(capsys, ["train", str(cli_run / "config.yaml")], r"run folder exists; pass --resume .* or --overwrite")


def test_not_a_checkpoint(capsys, tmp_path, cli_run):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    _fails(capsys, ["eval", str(junk)], r"junk\.pt: not a seglab checkpoint")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    _fails(capsys, ["predict", str(other), str(tmp_path), "--out", str(tmp_path / "o")],
           r"other\.pt: not a seglab checkpoint \(no 'seglab-checkpoint' marker\)")
    _fails(capsys, ["eval", str(tmp_path / "none")], r"none: no such run folder or checkpoint")


def test_debug_shows_traceback(tmp_path, tiny_raw):
    with pytest.raises(Exception, match="unknown key"):
        main(["train", _cfg_file(tmp_path, tiny_raw), "--set", "train.epoch=3", "--debug"])


def test_eval_writes_metrics_and_table(capsys, cli_run):
    assert main(["eval", str(cli_run), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "| class | IoU %" in out and "test: mIoU" in out
    import json

    m = json.loads((cli_run / "eval" / "test" / "metrics.json").read_text())
    assert m["num_images"] == 8 and m["class_names"] == ["background", "disc", "box"]
    assert set(m) >= {"miou", "pixel_accuracy", "mean_accuracy", "fwiou", "mean_dice", "mean_boundary_iou",
                      "iou", "dice", "precision", "recall", "boundary_iou", "confusion"}


def test_predict_writes_masks_colours_overlays(capsys, cli_run, tmp_path):
    imgs = tmp_path / "imgs"
    save_png(imgs / "a.png", np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8))
    save_png(imgs / "b.jpg", np.random.default_rng(1).integers(0, 255, (20, 20, 3), dtype=np.uint8))
    out = tmp_path / "pred"
    assert main(["predict", str(cli_run / "checkpoints" / "best.pt"), str(imgs), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}_{k}.png" for s in ("a", "b") for k in ("mask", "color", "overlay")] + [".seglab-predict"])
    mask = np.asarray(Image.open(out / "a_mask.png"))
    assert mask.shape == (37, 53) and mask.max() < 3
    assert np.asarray(Image.open(out / "a_color.png")).shape == (37, 53, 3)
    # two inputs with one stem keep both outputs, and the count is what was written
    save_png(imgs / "a.jpg", np.random.default_rng(2).integers(0, 255, (11, 13, 3), dtype=np.uint8))
    capsys.readouterr()
    assert main(["predict", str(cli_run / "checkpoints" / "best.pt"), str(imgs), str(imgs / "b.jpg"),
                 "--out", str(tmp_path / "two")]) == 0
    assert sorted(p.name for p in (tmp_path / "two").glob("*.png")) == sorted(
        f"{s}_{k}.png" for s in ("a.png", "a.jpg", "b") for k in ("mask", "color", "overlay"))
    assert np.asarray(Image.open(tmp_path / "two" / "a.jpg_mask.png")).shape == (11, 13)
    assert "wrote 9 files" in capsys.readouterr().out


def test_output_names_never_collide():
    from pathlib import Path

    from seglab.evaluation.predict import output_names

    files = [Path("x/1.png"), Path("x/1.jpg"), Path("y/1.png"), Path("x/2.png")]
    assert output_names(files) == ["x_1.png", "1.jpg", "y_1.png", "2"]


def test_inspect_lists_problems_and_writes_grid(capsys, folder, tmp_path):
    root, raw = folder
    (root / "masks" / "img05.png").unlink()
    (root / "images" / "img01.png").write_bytes(b"junk")
    assert main(["inspect", _cfg_file(tmp_path, raw), "--out", str(tmp_path / "insp")]) == 1  # train would refuse it
    out = capsys.readouterr().out
    assert "2 problem(s)" in out and "img05.png: no mask" in out and "img01.png: not a readable image" in out
    assert "class pixels: bg" in out and "sizes WxH: 24x20" in out
    assert (tmp_path / "insp" / "samples.png").is_file() and (tmp_path / "insp" / "inspect.json").is_file()


def test_module_entry_point_and_help():
    r = subprocess.run([sys.executable, "-m", "seglab", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout and "predict" in r.stdout
    r = subprocess.run([sys.executable, "-m", "seglab", "models"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    models, losses = r.stdout.split("\n\n")[:2]
    lines = {ln.split()[0]: ln for ln in models.splitlines()[1:] if not ln.startswith(" ")}
    from seglab.losses import list_losses
    from seglab.models import list_models

    assert sorted(lines) == list_models()
    assert "resnet50" in lines["pspnet"] and "M" in lines["pspnet"]
    assert "options: base_channels=32 depth=4" in models  # each model's options, as docs/models.md says
    assert sorted(ln.split()[0] for ln in losses.splitlines()[1:]) == list_losses()
    assert "focal_gamma=2.0" in losses


def test_each_commands_set_example_is_one_it_accepts():
    import argparse
    import re

    from seglab.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    examples = {name: re.search(r"--set (\S+)", a.help).group(1)
                for name, p in commands.items() for a in p._actions if a.dest == "overrides"}
    assert examples["predict"].startswith("eval.") and examples["eval"].startswith("eval.")  # all they take
    assert examples["train"] == "train.epochs=5"


@pytest.mark.parametrize("modules", [["seglab.cli", "seglab.config"], ["seglab.data.convert"], ["seglab.data.labels"]])
def test_first_lines_need_no_torch(modules):
    """What `seglab models` and `inspect` print first, and all of `convert`, load without torch and
    albumentations (seconds of imports on a 2-core machine; issue 23 item 7)."""
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "heavy = sorted(m for m in ('torch', 'albumentations', 'cv2') if m in sys.modules)\n"
            + "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)
