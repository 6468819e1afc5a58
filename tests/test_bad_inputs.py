"""Bad inputs that used to give a silently wrong result or an unclear error (issue 14): each is now a
one-line error naming the file, key or flag, and what would fix it."""
import copy
import re

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from seglab.cli import main
from seglab.errors import brief

from conftest import cfg_file as _cfg_file, cli_fails as _fails, TINY, folder_raw, make_folder_dataset, save_png


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    raw = copy.deepcopy(TINY)
    raw["output"] = {"dir": str(d / "runs"), "name": "r"}
    raw["train"].update(epochs=1, batch_size=4)
    assert main(["train", _cfg_file(d, raw)]) == 0
    return d / "runs" / "r"


# ------------------------------------------------------------------ files that used to be silently wrong

def test_two_masks_or_two_images_of_one_stem_are_refused_and_listed(capsys, folder, tmp_path):
    root, raw = folder
    Image.open(root / "masks" / "img02.png").save(root / "masks" / "img02.bmp")
    _fails(capsys, ["train", _cfg_file(tmp_path, raw)],
           r"img02\.png: a second mask for the image 'img02' \(img02\.bmp and img02\.png\); keep one of them")
    assert main(["inspect", _cfg_file(tmp_path, raw), "--out", str(tmp_path / "i")]) == 1
    assert "a second mask for the image 'img02'" in capsys.readouterr().out
    (root / "masks" / "img02.bmp").unlink()
    Image.open(root / "images" / "img03.png").convert("RGB").save(root / "images" / "img03.jpg")
    _fails(capsys, ["train", _cfg_file(tmp_path, raw)],
           r"img03\.png: a second image for the mask 'img03' \(img03\.jpg and img03\.png\); keep one of them")


def test_a_mask_without_an_image_is_reported(capsys, folder, tmp_path):
    root, raw = folder
    save_png(root / "masks" / "orphan.png", np.zeros((20, 24), np.uint8))
    assert main(["inspect", _cfg_file(tmp_path, raw), "--out", str(tmp_path / "i")]) == 0  # train accepts it
    out = capsys.readouterr().out
    assert re.search(r"warning: .*masks: 1 mask file\(s\) without an image in .*images, left out: orphan\.png", out), out


def test_an_all_void_training_set_is_refused_before_training(capsys, folder, tmp_path):
    root, raw = folder
    for p in (root / "masks").iterdir():
        save_png(p, np.full((20, 24), 255, np.uint8))
    _fails(capsys, ["train", _cfg_file(tmp_path, raw)],
           r"train split: every pixel of its 4 masks is the ignore value 255 .*nothing to learn from")
    assert not (tmp_path / "runs" / "tiny").exists()


def test_a_tiny_image_or_mixed_sizes_without_resize_are_refused(capsys, folder, tmp_path):
    root, raw = folder
    save_png(root / "images" / "img01.png", np.zeros((1, 1, 3), np.uint8))
    save_png(root / "masks" / "img01.png", np.zeros((1, 1), np.uint8))
    _fails(capsys, ["train", _cfg_file(tmp_path, raw)], r"img01\.png: 1x1 pixels, too small to segment")
    save_png(root / "images" / "img01.png", np.zeros((30, 24, 3), np.uint8))
    save_png(root / "masks" / "img01.png", np.zeros((30, 24), np.uint8))
    raw["data"]["random_split"] = {"val": 0.2, "seed": 1}  # img01 in train
    _fails(capsys, ["train", _cfg_file(tmp_path, raw)],
           r"the train split's masks come in 2 sizes \(24x20, 24x30\).*set augment\.resize or augment\.crop")


def test_large_images_up_to_max_image_pixels(capsys, folder, tmp_path):
    root, raw = folder
    raw["data"]["max_image_pixels"] = 400
    _fails(capsys, ["train", _cfg_file(tmp_path, raw)],
           r"img\d\d\.png: 24x20 = 480 pixels, above data\.max_image_pixels \(400\); raise it")
    raw["data"]["max_image_pixels"] = 480
    assert main(["inspect", _cfg_file(tmp_path, raw), "--out", str(tmp_path / "i")]) == 0


# ------------------------------------------------------------------ configs and arguments

def test_empty_or_dataless_or_non_utf8_configs_are_refused(capsys, tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    _fails(capsys, ["train", str(tmp_path / "empty.yaml")], r"empty\.yaml: the config is empty")
    (tmp_path / "nodata.yaml").write_text("model: {name: unet}\n")
    _fails(capsys, ["train", str(tmp_path / "nodata.yaml")], r"nodata\.yaml: no data: section")
    (tmp_path / "latin1.yaml").write_bytes("# caf\xe9\nseed: 0\n".encode("latin-1"))
    _fails(capsys, ["train", str(tmp_path / "latin1.yaml")], r"latin1\.yaml: not UTF-8 text \(byte 0xe9")
    assert not (tmp_path / "runs").exists()


def test_a_one_column_class_dict_is_one_line(capsys, folder, tmp_path):
    root, raw = folder
    (root / "class_dict.csv").write_text("name\nsky\n")
    raw["data"].update(mask_encoding="rgb", palette_file="class_dict.csv", class_names=None)
    _fails(capsys, ["inspect", _cfg_file(tmp_path, raw)], r"class_dict\.csv:1: expected 'name,r,g,b', got 'name'")


def test_sweep_set_must_be_a_list(capsys, tmp_path, tiny_raw):
    cfg = _cfg_file(tmp_path, tiny_raw)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"experiments": [{"config": cfg, "set": "train.epochs=1"}]}))
    _fails(capsys, ["compare", str(tmp_path / "sweep.yaml"), "--out", str(tmp_path / "c")],
           r"sweep\.yaml: experiments\[0\]\.set: expected a list of KEY=VALUE strings")


@pytest.mark.parametrize("args,pattern", [
    (["--workers", "-1"], r"argument --workers: -1 is below 0"),
    (["--device", "tpu7"], r"--device: 'tpu7' is not a device"),
])
def test_predict_arguments(capsys, run, tmp_path, args, pattern):
    argv = ["predict", str(run / "checkpoints" / "best.pt"), str(tmp_path), "--out", str(tmp_path / "o"), *args]
    code = main(argv) if "--workers" not in args else None
    if code is None:  # argparse's own one-line error, exit 2
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert re.search(pattern, capsys.readouterr().err)
    else:
        assert code == 2 and re.search(pattern, capsys.readouterr().err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_names_the_flag(capsys, run, tmp_path):
    _fails(capsys, ["predict", str(run / "checkpoints" / "best.pt"), str(tmp_path), "--out", str(tmp_path / "o"),
                    "--device", "cuda"],
           r"--device: 'cuda' requested but CUDA is not available")


def test_export_size_must_be_positive(capsys, run):
    with pytest.raises(SystemExit) as exc:
        main(["export", str(run / "checkpoints" / "best.pt"), "--size", "0", "0"])
    assert exc.value.code == 2 and "argument --size: 0 is below 1" in capsys.readouterr().err


# ------------------------------------------------------------------ checkpoints

def test_a_text_file_as_a_checkpoint(capsys, tmp_path):
    (tmp_path / "notes.pt").write_text("epoch 3: looks good\n")
    _fails(capsys, ["eval", str(tmp_path / "notes.pt")], r"notes\.pt: not a seglab checkpoint")


@pytest.mark.parametrize("edit,pattern", [
    (lambda c: c["model"].update(num_classes="3"), r"model\.num_classes is '3', expected a whole number"),
    (lambda c: c["model"].update(name="deeplab"), r"unknown model 'deeplab'"),
    (lambda c: c["model"]["options"].update(base_channels="wide"), r"model"),
    (lambda c: c.update(labels={"names": "abc"}), r"'labels' is not \{names, palette, ignore_index\}"),
    (lambda c: c.update(input_size=[0, "x"]), r"input_size is \[0, 'x'\]"),
])
def test_crafted_checkpoint_metadata_names_the_checkpoint(capsys, run, tmp_path, edit, pattern):
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, tmp_path / "crafted.pt")
    err = _fails(capsys, ["predict", str(tmp_path / "crafted.pt"), str(tmp_path), "--out", str(tmp_path / "o")],
                 pattern)
    assert err.startswith(f"error: {tmp_path / 'crafted.pt'}: ")


def test_other_class_counts_name_the_checkpoint(capsys, tmp_path, tiny_raw):
    root = make_folder_dataset(tmp_path / "data", n=6)
    raw = folder_raw(tiny_raw, root)
    raw["train"]["epochs"] = 1
    cfg = _cfg_file(tmp_path, raw)
    assert main(["train", cfg]) == 0
    run = tmp_path / "runs" / "tiny"
    # a best.pt copied in from a run with other classes is not scored on this run's masks
    other = copy.deepcopy(raw)
    other["data"].update(class_names=["bg", "a", "b", "c"], absent_classes=["c"])  # c: no pixel in these masks
    other["output"]["name"] = "other"
    assert main(["train", _cfg_file(tmp_path, other, "other.yaml")]) == 0
    (run / "checkpoints" / "best.pt").write_bytes((tmp_path / "runs" / "other" / "checkpoints" / "best.pt").read_bytes())
    _fails(capsys, ["eval", str(run)], r"best\.pt: not a checkpoint of the run in .*data\.class_names")
    # resuming after the classes changed names last.pt and both class lists
    (root / "names.txt").write_text("0 0 0 bg\n1 1 1 a\n2 2 2 b\n3 3 3 c\n")
    stored = yaml.safe_load((run / "config.yaml").read_text())
    stored["data"].update(class_names=None, palette_file="names.txt")
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    ckpt["config"]["data"].update(class_names=None, palette_file="names.txt")
    torch.save(ckpt, run / "checkpoints" / "last.pt")
    (run / "config.yaml").write_text(yaml.safe_dump(stored))
    _fails(capsys, ["train", "--resume", str(run)], r"last\.pt: trained for 3 classes .* the data now gives 4")


def test_brief_cuts_at_a_word():
    text = "word " * 40
    out = brief(text, 30)
    assert out.endswith(" ...") and len(out) <= 34 and not out[:-4].endswith("wor")
    assert brief("short\nsecond line") == "short"


def test_a_list_file_too_short_to_split_is_named(tmp_path, capsys):
    """Issue 24 item 8: a train list with one usable line (the rest unresolvable, or missing) names the list file
    when it cannot be split, and an unresolvable line is named with its line number."""
    root = make_folder_dataset(tmp_path / "d", n=3)
    raw = folder_raw(copy.deepcopy(TINY), root)
    raw["output"]["dir"] = str(tmp_path / "runs")
    raw["data"]["train"] = {"list": "train.txt"}
    (root / "train.txt").write_text("images/img00.png masks/img00.png\n")
    cfg = _cfg_file(tmp_path, raw)
    _fails(capsys, ["train", cfg], rf"data.train \(list {root / 'train.txt'}\): cannot split 1 sample into "
                                   r"train/val/test with ratios val=0.34 test=0.0; list more samples there, or give data.val$")
    (root / "train.txt").write_text("images/img00.png masks/img00.png\nimages/x1.png masks/x1.png\n")
    _fails(capsys, ["train", cfg], rf"{root / 'train.txt'}:2: 'images/x1.png' not found under {root}$")
    assert not (tmp_path / "runs").exists()  # a refused training creates nothing (its lock's folders go too)
    raw["output"] = {"dir": str(root), "name": "images"}  # output.dir is the data folder
    before = sorted(p.name for p in root.iterdir())
    _fails(capsys, ["train", _cfg_file(tmp_path, raw)], r"images: folder exists and was not created by seglab")
    assert sorted(p.name for p in root.iterdir()) == before  # no lock file left in the data folder


@pytest.mark.parametrize("version, found", [("1", "'1' (str)"), (1.0, "1.0 (float)"), (None, "None (NoneType)")])
def test_a_checkpoint_version_of_the_wrong_type_says_so(run, tmp_path, capsys, version, found):
    """Issue 24 item 8: version "1" read "checkpoint version 1 is not supported (expected 1)"."""
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    ckpt["version"] = version
    path = tmp_path / "odd.pt"
    torch.save(ckpt, path)
    _fails(capsys, ["eval", str(path)], rf"{path}: checkpoint version is {re.escape(found)}, not a whole number "
                                        r"\(seglab writes 1\); the file was not written by seglab's save_checkpoint$")
    ckpt["version"] = 7
    torch.save(ckpt, path)
    _fails(capsys, ["eval", str(path)], rf"{path}: checkpoint version 7 is not supported \(expected 1\)$")
