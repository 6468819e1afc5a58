"""`seglab init DATA_DIR` writes a config that the schema accepts and that decodes every mask to the labels it
means, for the layouts of the table in docs/data.md it can decide; where the files leave a choice
open it stops with one line naming the option. Checked pixel by pixel against the intended labels."""
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from seglab.cli import main
from seglab.config import load_config
from seglab.data.datasets import build_data

from conftest import data_of, cli_fails, save_png

H, W = 24, 32
COLOURS = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (64, 64, 128)]


def _target(i: int, classes: int = 3) -> np.ndarray:
    """The intended (H, W) class map of sample i: bands of classes 0..classes-1, shifted per sample."""
    return ((np.arange(W)[None, :] * classes // W + i + np.zeros((H, 1), int)) % classes).astype(np.uint8)


def _image(path: Path, i: int, size=(H, W), dtype=np.uint8, channels: int = 3, top: int = 255):
    rng = np.random.default_rng(i)
    arr = (rng.random((*size, channels)) * top).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    if dtype == np.uint16:
        Image.fromarray(arr[..., 0]).save(path)  # 16-bit grey PNG
    else:
        Image.fromarray(arr[..., 0] if channels == 1 else arr).save(path)


def _colour_pairs(expect: dict, pairs: list) -> None:
    """Write (image, colour mask) pairs, the i-th with _target(i) in COLOURS; record the intended labels."""
    for i, (image, mask) in enumerate(pairs):
        _image(image, i)
        save_png(mask, np.array(COLOURS[:3], np.uint8)[_target(i)])
        expect[image.stem] = _target(i)


def _init(tmp_path, root, capsys, *extra) -> tuple[Path, str]:
    out = tmp_path / "init.yaml"
    assert main(["init", str(root), "--out", str(out), *extra]) == 0
    return out, capsys.readouterr().out


def _decoded(cfg_path: Path, expect: dict[str, np.ndarray]) -> dict[str, object]:
    """Every sample of every split decoded by the written config equals its intended labels."""
    cfg = load_config(cfg_path)
    data = build_data(cfg.data, cfg.augment)
    seen = 0
    for reader in data.readers.values():
        for i in range(len(reader)):
            _, label = reader.load(i)
            want = expect[Path(reader.items[i].image).stem]
            assert label.shape == want.shape and np.array_equal(label, want), reader.name(i)
            seen += 1
    assert seen == len(expect)
    return yaml.safe_load(cfg_path.read_text())


def test_images_and_binary_masks_without_splits(tmp_path, capsys):
    root, expect = tmp_path / "polyps", {}
    for i in range(8):
        _image(root / "images" / f"p{i}.jpg", i)
        save_png(root / "masks" / f"p{i}.png", (_target(i, 2) * 255).astype(np.uint8))
        expect[f"p{i}"] = _target(i, 2)
    cfg, printed = _init(tmp_path, root, capsys)
    raw = _decoded(cfg, expect)
    assert raw["data"]["mask_encoding"] == "binary" and raw["data"]["random_split"]["val"] == 0.15
    assert "binary masks" in printed and "wrote" in printed
    assert "random split of 8 images: 6 train, 1 val, 1 test" in printed  # the counts the split will draw
    # the written recipe trains as it is (one epoch here)
    assert main(["train", str(cfg), "--set", "train.time_budget=null", "--set", "train.epochs=1",
                 "--set", f"output.dir={tmp_path / 'runs'}"]) == 0
    assert (tmp_path / "runs" / "polyps" / "checkpoints" / "best.pt").is_file()


def test_camvid_split_folders_index_masks_and_a_palette_with_void(tmp_path, capsys):
    root, expect = tmp_path / "camvid", {}
    names = ["Sky", "Road", "Car", "Void"]
    (root).mkdir()
    (root / "label_colors.txt").write_text("".join(f"{r} {g} {b}\t{n}\n" for (r, g, b), n in zip(COLOURS, names)))
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for i in range(n):
            t = _target(i, 4)
            _image(root / split / f"{split}{i}.png", i)
            save_png(root / f"{split}annot" / f"{split}{i}.png", t)
            expect[f"{split}{i}"] = np.where(t == 3, 255, t).astype(np.uint8)  # Void is ignored
    cfg, printed = _init(tmp_path, root, capsys)
    raw = _decoded(cfg, expect)
    assert raw["data"]["val"] == {"images": "val", "masks": "valannot"} and raw["data"]["void_class"] == "Void"
    assert raw["eval"]["split"] == "test" and "random_split" not in raw["data"]
    assert "Void" in printed


def test_one_folder_with_suffixed_colour_masks_and_a_palette(tmp_path, capsys):
    root, expect = tmp_path / "camseq", {}
    root.mkdir()
    (root / "label_colors.txt").write_text("".join(f"{r} {g} {b}\t{n}\n" for (r, g, b), n in
                                                    zip(COLOURS[:3], ["bg", "road", "car"])))
    _colour_pairs(expect, [(root / f"f{i}.png", root / f"f{i}_L.png") for i in range(6)])
    cfg, _ = _init(tmp_path, root, capsys)
    raw = _decoded(cfg, expect)
    assert raw["data"]["mask_suffix"] == "_L" and raw["data"]["mask_encoding"] == "rgb"


def test_split_subfolders_with_class_dict_csv(tmp_path, capsys):
    root, expect = tmp_path / "roads", {}
    root.mkdir()
    (root / "class_dict.csv").write_text("name,r,g,b\n" + "".join(f"{n},{r},{g},{b}\n" for (r, g, b), n in
                                                                  zip(COLOURS[:3], ["bg", "road", "car"])))
    for split, n in (("train", 4), ("val", 2)):
        _colour_pairs(expect, [(root / split / "images" / f"{split}{i}.png", root / split / "labels" / f"{split}{i}.png")
                               for i in range(n)])
    cfg, _ = _init(tmp_path, root, capsys)
    raw = _decoded(cfg, expect)
    assert raw["data"]["palette_file"] == "class_dict.csv" and raw["eval"]["split"] == "val"


def test_list_files(tmp_path, capsys):
    root, expect = tmp_path / "listed", {}
    for split, n in (("train", 4), ("val", 2)):
        lines = []
        for i in range(n):
            _image(root / "x" / f"{split}{i}.png", i)
            save_png(root / "y" / f"{split}{i}.png", _target(i))
            lines.append(f"x/{split}{i}.png y/{split}{i}.png")
            expect[f"{split}{i}"] = _target(i)
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    # two folders of the same names would also pair: the lists say which split each file is in
    cfg, printed = _init(tmp_path, root, capsys)
    raw = _decoded(cfg, expect)
    assert raw["data"]["train"] == {"list": "train.txt"} and raw["data"]["class_names"][:3] == ["class_0", "class_1",
                                                                                                  "class_2"]
    assert "reduce_zero_label" in printed  # what it could not decide is said


@pytest.mark.parametrize("kind", ["instances16", "jpeg", "onebit", "palette_png"])
def test_mask_formats(tmp_path, capsys, kind):
    root, expect = tmp_path / kind, {}
    for i in range(6):
        t = _target(i, 2)
        _image(root / "images" / f"m{i}.png", i)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        if kind == "instances16":  # one id per object, up to 1000: every non-zero id is foreground
            ids = (t.astype(np.uint16) * (300 + np.arange(W, dtype=np.uint16)[None, :] % 700))
            Image.fromarray(ids).save(root / "masks" / f"m{i}.png")
        elif kind == "jpeg":
            Image.fromarray(t * 255).save(root / "masks" / f"m{i}.jpg", quality=90)
        elif kind == "onebit":
            Image.fromarray(t.astype(bool)).convert("1").save(root / "masks" / f"m{i}.png")
        else:  # a VOC palette PNG: indices are the classes, 255 the "don't care" border
            t = _target(i, 3)
            t[0, :] = 255
            im = Image.fromarray(t, mode="P")
            im.putpalette([v for c in COLOURS[:3] for v in c] + [224, 224, 192] * 253)
            im.save(root / "masks" / f"m{i}.png")
        expect[f"m{i}"] = t
    if kind == "jpeg":
        expect = _jpeg_truth(root, expect)
    elif kind != "palette_png":
        expect = {k: (v > 0).astype(np.uint8) for k, v in expect.items()}
    cfg, _ = _init(tmp_path, root, capsys)
    raw = _decoded(cfg, expect)
    assert raw["data"]["mask_encoding"] == ("index" if kind == "palette_png" else "binary")


def _jpeg_truth(root, expect):
    """JPEG blurs edges: the intended labels are the foreground where the saved file is above 127."""
    return {k: (np.asarray(Image.open(root / "masks" / f"{k}.jpg").convert("L")) > 127).astype(np.uint8)
            for k in expect}


def test_larger_images_16bit_and_grey(tmp_path, capsys):
    root, expect = tmp_path / "scans", {}
    for i in range(6):
        _image(root / "images" / f"s{i}.png", i, size=(2 * H, 2 * W), dtype=np.uint16, channels=1, top=4000)
        save_png(root / "masks" / f"s{i}.png", _target(i, 2) * 255)
        expect[f"s{i}"] = _target(i, 2)
    cfg, printed = _init(tmp_path, root, capsys)
    raw = _decoded(cfg, expect)
    d = raw["data"]
    assert (d["align"], d["in_channels"], d["image_max"]) == ("resize_image_to_mask", 1, 4095)
    assert "16-bit images" in printed


def test_ambiguous_layouts_ask_for_the_option_that_settles_them(tmp_path, capsys):
    root = tmp_path / "retina"
    for i in range(4):
        _image(root / "images" / f"r{i}.png", i)
        save_png(root / "masks" / f"r{i}.png", _target(i, 2) * 255)
        save_png(root / "labels" / f"r{i}.png", (1 - _target(i, 2)) * 255)  # a second annotator
    err = cli_fails(capsys, ["init", str(root), "--out", str(tmp_path / "a.yaml")], r"give --masks")
    assert "masks, labels" in err and not (tmp_path / "a.yaml").exists()
    cfg, _ = _init(tmp_path, root, capsys, "--masks", "labels")
    _decoded(cfg, {f"r{i}": (1 - _target(i, 2)).astype(np.uint8) for i in range(4)})
    # colour masks with no palette file: which colour is which class is not in the files
    colour = tmp_path / "colour"
    for i in range(4):
        _image(colour / "images" / f"c{i}.png", i)
        save_png(colour / "masks" / f"c{i}.png", np.array(COLOURS[:3], np.uint8)[_target(i)])
    cli_fails(capsys, ["init", str(colour), "--out", str(tmp_path / "b.yaml")], r"no palette file; give --palette")
    (tmp_path / "pal.txt").write_text("0 0 0 bg\n128 0 0 a\n0 128 0 b\n")
    cfg, _ = _init(tmp_path, colour, capsys, "--palette", str(tmp_path / "pal.txt"), "--overwrite")
    _decoded(cfg, {f"c{i}": _target(i) for i in range(4)})
    # a relative --palette is where the user typed it (issue 42 item 4: it was looked up in the data folder)
    import os

    here = os.getcwd()
    try:
        os.chdir(tmp_path)
        cfg, _ = _init(tmp_path, colour, capsys, "--palette", "pal.txt", "--overwrite")
        _decoded(cfg, {f"c{i}": _target(i) for i in range(4)})  # its data.root is relative to here
    finally:
        os.chdir(here)
    cli_fails(capsys, ["init", str(tmp_path / "nothing")], r"nothing: not a folder")
    cli_fails(capsys, ["init", str(colour), "--budget", "soon"], r"--budget: expected a duration")


@pytest.mark.realdata
@pytest.mark.parametrize("folder,shipped", [("camvid", "camvid_unet.yaml"),
                                            ("weizmann_horse", "weizmann_horse_unet.yaml")])
def test_real_folders_decode_as_the_shipped_configs_do(tmp_path, capsys, folder, shipped):
    from conftest import ROOT, SHARED_DATA

    root = SHARED_DATA / folder
    if not root.is_dir():
        pytest.skip(f"{root} not present (../shared/data)")
    cfg, _ = _init(tmp_path, root, capsys)
    mine = data_of(load_config(cfg))
    theirs = data_of(load_config(ROOT / "configs" / shipped, [f"data.root={root}"]))
    assert mine.labels.names == theirs.labels.names or folder == "weizmann_horse"  # horse: "foreground"
    assert mine.labels.ignore_index == theirs.labels.ignore_index
    ours = {Path(r.items[i].image).name: (r, i) for r in mine.readers.values() for i in range(len(r))}
    checked = 0
    for reader in theirs.readers.values():
        for i in range(0, len(reader), max(1, len(reader) // 4)):
            r, j = ours[Path(reader.items[i].image).name]
            assert np.array_equal(r.load(j)[1], reader.load(i)[1]), reader.name(i)
            checked += 1
    assert checked >= 8


def test_a_folder_too_small_to_split_is_said_not_promised_a_split(tmp_path, capsys):
    """Issue 42 item 15: one image was promised "15% drawn for val and 15% for test"."""
    root = tmp_path / "one"
    _image(root / "images" / "a.jpg", 0)
    save_png(root / "masks" / "a.png", (_target(0, 2) * 255).astype(np.uint8))
    _, printed = _init(tmp_path, root, capsys)
    assert "not decided: how to split 1 image: too few to draw a val and a test split and keep one to train" in printed
    assert "random split of" not in printed


def test_8_bit_instance_ids_are_read_as_objects_not_as_184_classes(tmp_path, capsys):
    """Issue 42 item 3: masks holding instance ids 1..N (each id one small blob) were written as an index config
    with a class per id. Now: binary, every non-zero id foreground (binary_threshold 0, so ids 1..127 count),
    and the choice said; ordinary index masks stay index masks."""
    root, expect = tmp_path / "cells", {}
    for i in range(8):
        ids = np.zeros((H, W), np.uint8)
        for k in range(6):  # six objects per image, ids unique over the set (1..48)
            y, x = 2 + (k // 3) * 10, 2 + (k % 3) * 10
            ids[y:y + 5, x:x + 5] = 1 + 6 * i + k
        _image(root / "images" / f"c{i}.png", i)
        save_png(root / "masks" / f"c{i}.png", ids)
        expect[f"c{i}"] = (ids > 0).astype(np.uint8)
    cfg, printed = _init(tmp_path, root, capsys)
    raw = _decoded(cfg, expect)
    assert raw["data"]["mask_encoding"] == "binary" and raw["data"]["binary_threshold"] == 0
    assert "instance ids, read as binary with binary_threshold 0" in printed
    assert "not decided: whether the ids are instances" in printed


def test_a_config_written_elsewhere_finds_its_data_from_anywhere(tmp_path, capsys, monkeypatch):
    """Issue 42 item 4: `init DATA --out ELSEWHERE/x.yaml` wrote data.root relative to the folder init ran in."""
    root, expect = tmp_path / "proj" / "polyps", {}
    for i in range(8):
        _image(root / "images" / f"p{i}.jpg", i)
        save_png(root / "masks" / f"p{i}.png", (_target(i, 2) * 255).astype(np.uint8))
        expect[f"p{i}"] = _target(i, 2)
    monkeypatch.chdir(tmp_path / "proj")
    out = tmp_path / "elsewhere" / "x.yaml"
    out.parent.mkdir()
    assert main(["init", "polyps", "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["data"]["root"] == str(root)
    monkeypatch.chdir(tmp_path / "elsewhere")
    _decoded(out, expect)
    monkeypatch.chdir(tmp_path / "proj")  # into the folder it runs in: relative, and the header says so
    assert main(["init", "polyps", "--out", "here.yaml"]) == 0
    text = (tmp_path / "proj" / "here.yaml").read_text()
    assert yaml.safe_load(text)["data"]["root"] == "polyps" and "data.root is relative to the folder seglab runs in" in text


def test_multi_band_int16_geotiffs_and_8_bit_data_in_16_bit_files(tmp_path, capsys):
    """Issue 42 items 4, 5: 12-band int16 GeoTIFFs were 'not a readable image' to init (inspect and train read
    them), and trained on the default mean / std 0.5 / 0.25; a 16-bit set whose largest value is 235 got no
    image_max. Now init reads them as training does and writes per-band statistics and image_max 255."""
    import tifffile

    from seglab.data.masks import read_image

    root, expect = tmp_path / "geo", {}
    rng = np.random.default_rng(0)
    for i in range(6):
        bands = rng.integers(-200, 3000, (H, W, 12)).astype(np.int16)
        bands[0, :4] = -9999  # nodata in a corner
        (root / "images").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "images" / f"t{i}.tif", bands, photometric="minisblack", planarconfig="contig")
        save_png(root / "masks" / f"t{i}.png", (_target(i, 2) * 255).astype(np.uint8))
        expect[f"t{i}"] = _target(i, 2)
        expect[f"t{i}"][0, :4] = 255  # pixels without data are not trained on or scored (issue 42 item 5)
    cfg, printed = _init(tmp_path, root, capsys)
    raw = _decoded(cfg, expect)
    assert raw["data"]["in_channels"] == 12 and raw["data"]["image_max"] == 4095 and raw["data"]["nodata"] == -9999
    assert "value -9999 marks pixels without data" in printed
    mean, std = np.array(raw["augment"]["mean"]), np.array(raw["augment"]["std"])
    assert mean.shape == std.shape == (12,)
    read = np.concatenate([read_image(p, 12, 4095, nodata=-9999).reshape(-1, 12)
                           for p in sorted((root / "images").glob("*.tif"))])
    assert np.isnan(read).any(1).sum() == 6 * 4
    read = read[~np.isnan(read).any(1)]  # the statistics of the inputs as training reads them, gaps left out
    np.testing.assert_allclose(mean, read.mean(0), rtol=1e-4)
    np.testing.assert_allclose(std, read.std(0), rtol=1e-4)
    assert "per-band mean / std" in printed
    # inspect (and train) warn when the normalised inputs are far from zero mean / unit variance (here a std 20
    # times too small), not on init's statistics
    from seglab.api import inspect

    assert not [w for w in inspect(load_config(cfg), out=tmp_path / "i1")["warnings"] if "normalised" in w]
    default = load_config(cfg, ["augment.mean=[0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5]",
                                "augment.std=[0.01,0.01,0.01,0.01,0.01,0.01,0.01,0.01,0.01,0.01,0.01,0.01]"])
    far = [w for w in inspect(default, out=tmp_path / "i2")["warnings"] if "normalised" in w]
    assert far and "train split: normalised by augment.mean / augment.std, its inputs have mean" in far[0]

    root8, expect8 = tmp_path / "eight", {}
    for i in range(6):
        root8.joinpath("images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 236, (H, W)).astype(np.uint16)).save(root8 / "images" / f"e{i}.png")
        save_png(root8 / "masks" / f"e{i}.png", (_target(i, 2) * 255).astype(np.uint8))
        expect8[f"e{i}"] = _target(i, 2)
    cfg, printed = _init(tmp_path, root8, capsys, "--overwrite", "--out", str(tmp_path / "e.yaml"))
    assert _decoded(tmp_path / "e.yaml", expect8)["data"]["image_max"] == 255
    assert "image_max 255, 8-bit data in 16-bit files" in printed


def test_a_cvat_segmentation_export_is_read_with_its_labelmap(tmp_path, capsys):
    """Issue 42 item 4: CVAT's labelmap.txt ('name:r,g,b:parts:actions') was ignored (the class came out as
    'foreground') and --palette labelmap.txt was refused as not 'R G B Name'."""
    from seglab.data.labels import read_palette_file

    root, expect = tmp_path / "cvat", {}
    (root / "images").mkdir(parents=True)
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\nhorse:250,50,83::\n")
    assert read_palette_file(root / "labelmap.txt") == [("background", (0, 0, 0)), ("horse", (250, 50, 83))]
    for i in range(6):
        _image(root / "images" / f"h{i}.png", i)
        save_png(root / "masks" / f"h{i}.png", np.array([(0, 0, 0), (250, 50, 83)], np.uint8)[_target(i, 2)])
        expect[f"h{i}"] = _target(i, 2)
    cfg, printed = _init(tmp_path, root, capsys)
    raw = _decoded(cfg, expect)
    assert raw["data"]["palette_file"] == "labelmap.txt" and raw["data"]["mask_encoding"] == "rgb"
    assert load_config(cfg).data.class_names is None and "palette file labelmap.txt: 2 classes" in printed
    _decoded(_init(tmp_path, root, capsys, "--palette", str(root / "labelmap.txt"), "--overwrite")[0], expect)
