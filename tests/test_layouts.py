"""Folder layouts people have: masks beside images marked by a suffix, stems that differ by a pattern (issue 13)."""
import json

import numpy as np
import pytest
from PIL import Image

from seglab.config import config_from_dict
from seglab.data.datasets import build_data
from seglab.data.folder import pair_folders
from seglab.errors import ConfigError, DataError

from conftest import data_of, save_png

# a few CamVid colours, as in its label_colors.txt
CAMVID_COLOURS = "128 128 128\tSky\n128 0 0\tBuilding\n128 64 128\tRoad\n64 0 128\tCar\n0 0 0\tVoid\n"
COLOURS = [(128, 128, 128), (128, 0, 0), (128, 64, 128), (64, 0, 128), (0, 0, 0)]


def _camseq_folder(root, n=6):
    """CamSeq01 layout: 0016E5_0NNNN.png and its colour mask 0016E5_0NNNN_L.png side by side, palette beside."""
    root.mkdir(parents=True)
    (root / "label_colors.txt").write_text(CAMVID_COLOURS)
    rng = np.random.default_rng(0)
    truth = {}
    for i in range(n):
        labels = rng.integers(0, 5, (6, 8)).repeat(2, 0).repeat(2, 1)  # 12x16 map of blocks, Void included
        labels[0, 0], labels[0, 1], labels[0, 2], labels[0, 3] = 0, 1, 2, 3  # every class in every mask
        save_png(root / f"0016E5_{i:05d}.png", (rng.random((12, 16, 3)) * 255).astype(np.uint8))
        save_png(root / f"0016E5_{i:05d}_L.png", np.array(COLOURS, np.uint8)[labels])
        truth[f"0016E5_{i:05d}.png"] = np.where(labels == 4, 255, labels).astype(np.uint8)
    return truth


def test_same_folder_with_mask_suffix_decodes_colour_masks_pixel_by_pixel(tmp_path, tiny_raw):
    truth = _camseq_folder(tmp_path / "camseq")
    raw = {**tiny_raw, "data": {"kind": "folder", "root": str(tmp_path / "camseq"),
                                "train": {"images": ".", "masks": "."}, "mask_suffix": "_L",
                                "mask_encoding": "rgb", "palette_file": "label_colors.txt",
                                "random_split": {"val": 0.34, "seed": 0}}}
    bundle = data_of(config_from_dict(raw), check=("train", "val"))
    assert bundle.labels.names == ["Sky", "Building", "Road", "Car"]
    loaders = bundle.readers
    assert len(loaders["train"]) + len(loaders["val"]) == 6  # masks are never listed as images
    for loader in loaders.values():
        for i, s in enumerate(loader.items):
            assert not s.image.endswith("_L.png") and s.mask.endswith("_L.png")
            np.testing.assert_array_equal(loader.load(i)[1], truth[s.image.rsplit("/", 1)[1]])


def test_same_folder_without_a_rule_is_refused(tmp_path):
    _camseq_folder(tmp_path / "camseq")
    with pytest.raises(DataError, match=r"images and masks are the same folder; set data\.mask_suffix"):
        pair_folders(tmp_path / "camseq", tmp_path / "camseq")


def test_stems_that_differ_by_a_pattern(tmp_path):
    # DRIVE: images/21_training.tif, 1st_manual/21_manual1.gif
    (tmp_path / "images").mkdir()
    (tmp_path / "1st_manual").mkdir()
    for k in (21, 22, 23):
        Image.fromarray(np.full((8, 8, 3), k, np.uint8)).save(tmp_path / "images" / f"{k}_training.tif")
        Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "1st_manual" / f"{k}_manual1.gif")
    samples = pair_folders(tmp_path / "images", tmp_path / "1st_manual",
                           stems=(r"(\d+)_training", r"(\d+)_manual1"))
    assert [(s.image.rsplit("/", 1)[1], s.mask.rsplit("/", 1)[1]) for s in samples] == [
        (f"{k}_training.tif", f"{k}_manual1.gif") for k in (21, 22, 23)]
    (tmp_path / "1st_manual" / "23_manual1.gif").unlink()
    with pytest.raises(DataError, match=r"23_training\.tif: no mask with a stem matching '\(\\d\+\)_manual1' and key '23' in "):
        pair_folders(tmp_path / "images", tmp_path / "1st_manual", stems=(r"(\d+)_training", r"(\d+)_manual1"))


def test_same_folder_with_two_annotators(tmp_path, tiny_raw):
    # CHASE_DB1: Image_01L.jpg, Image_01L_1stHO.png, Image_01L_2ndHO.png in one folder
    root = tmp_path / "chase"
    root.mkdir()
    for k in range(1, 5):
        for side in "LR":
            Image.fromarray(np.full((8, 8, 3), 9 * k, np.uint8)).save(root / f"Image_{k:02d}{side}.jpg")
            first = np.zeros((8, 8), np.uint8)
            first[:4] = 255
            save_png(root / f"Image_{k:02d}{side}_1stHO.png", first)
            save_png(root / f"Image_{k:02d}{side}_2ndHO.png", 255 - first)
    raw = {**tiny_raw, "data": {"kind": "folder", "root": str(root), "train": {"images": ".", "masks": "."},
                                "pair_stems": {"image": r"(Image_\d+[LR])", "mask": r"(Image_\d+[LR])_1stHO"},
                                "mask_encoding": "binary", "random_split": {"val": 0.25, "seed": 0}}}
    bundle = data_of(config_from_dict(raw), check=("train", "val"))
    items = bundle.readers["train"].items + bundle.readers["val"].items
    assert len(items) == 8 and all(s.image.endswith(".jpg") and s.mask.endswith("_1stHO.png") for s in items)
    want = np.zeros((8, 8), np.uint8)
    want[:4] = 1
    np.testing.assert_array_equal(bundle.readers["train"].load(0)[1], want)


def test_pairing_config_errors(tiny_raw):
    base = {"kind": "folder", "root": ".", "train": {"images": "a", "masks": "b"}}
    with pytest.raises(ConfigError, match="needs exactly one"):
        config_from_dict({**tiny_raw, "data": {**base, "pair_stems": {"image": r"\d+", "mask": r"(\d+)_m"}}})
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        config_from_dict({**tiny_raw, "data": {**base, "pair_stems": {"image": r"((\d+)", "mask": r"(\d+)_m"}}})
    with pytest.raises(ConfigError, match="mask_suffix or pair_stems, not both"):
        config_from_dict({**tiny_raw, "data": {**base, "mask_suffix": "_L",
                                               "pair_stems": {"image": r"(\d+)", "mask": r"(\d+)_m"}}})


def test_train_and_predict_on_a_same_folder_layout(tmp_path, tiny_raw):
    from seglab.cli import main

    _camseq_folder(tmp_path / "camseq")
    raw = {**tiny_raw, "data": {"kind": "folder", "root": str(tmp_path / "camseq"),
                                "train": {"images": ".", "masks": "."}, "mask_suffix": "_L",
                                "mask_encoding": "rgb", "palette_file": "label_colors.txt",
                                "random_split": {"val": 0.34, "seed": 0}},
           "train": {**tiny_raw["train"], "epochs": 1, "batch_size": 2}}
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", str(tmp_path / "c.yaml")]) == 0
    ckpt = tmp_path / "runs" / "tiny" / "checkpoints" / "best.pt"
    assert main(["predict", str(ckpt), str(tmp_path / "camseq"), "--out", str(tmp_path / "pred")]) == 0
    written = sorted(p.name for p in (tmp_path / "pred").glob("*.png"))
    assert len(written) == 18 and not any("_L_" in n for n in written)  # the 6 masks beside them are skipped


def _drive_folder(root, with_regions=True):
    """DRIVE: images/NN_training.tif, 1st_manual/NN_manual1.gif, mask/NN_training_mask.gif (the field of
    view: 255 inside the eye's disc, 0 outside). Returns the intended label map per image."""
    for d in ("images", "1st_manual", "mask"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(3)
    truth = {}
    yy, xx = np.mgrid[:12, :12]
    fov = (yy - 5.5) ** 2 + (xx - 5.5) ** 2 < 30  # a disc
    for k in (21, 22, 23, 24):
        vessels = rng.random((12, 12)) < 0.3
        vessels[5, 5], vessels[5, 6] = True, False  # both classes inside every field of view
        Image.fromarray((rng.random((12, 12, 3)) * 255).astype(np.uint8)).save(root / "images" / f"{k}_training.tif")
        Image.fromarray(vessels.astype(np.uint8) * 255).save(root / "1st_manual" / f"{k}_manual1.gif")
        if with_regions:
            Image.fromarray(fov.astype(np.uint8) * 255).save(root / "mask" / f"{k}_training_mask.gif")
        truth[f"{k}_training.tif"] = np.where(fov, vessels.astype(np.uint8), 255).astype(np.uint8)
    return truth


def _drive_raw(tiny_raw, root, **data):
    return {**tiny_raw, "data": {"kind": "folder", "root": str(root), "mask_encoding": "binary",
                                 "train": {"images": "images", "masks": "1st_manual", "regions": "mask"},
                                 "pair_stems": {"image": r"(\d+)_training", "mask": r"(\d+)_manual1"},
                                 "region_suffix": "_mask", "random_split": {"val": 0.25, "seed": 0}, **data}}


def test_region_masks_turn_pixels_outside_the_field_of_view_to_ignore(tmp_path, tiny_raw):
    from seglab.data.datasets import check_split

    truth = _drive_folder(tmp_path / "drive")
    bundle = data_of(config_from_dict(_drive_raw(tiny_raw, tmp_path / "drive")), check=("train", "val"))
    outside = 0
    for loader in bundle.readers.values():
        for i, s in enumerate(loader.items):
            assert s.region.endswith(s.image.rsplit("/", 1)[1].replace(".tif", "_mask.gif"))
            np.testing.assert_array_equal(loader.load(i)[1], truth[s.image.rsplit("/", 1)[1]])
        stats = check_split(loader)
        outside += stats.ignored
        assert stats.changed["pixels outside the region masks -> ignore"] == stats.ignored
    assert outside == sum(int((t == 255).sum()) for t in truth.values()) > 0
    # the split file keeps each image's region, so eval of a finished run applies the same one
    from seglab.data.splits import Split

    again = Split.from_json(json.loads(json.dumps(bundle.split.to_json()))).items("train")
    assert [s.region for s in again] == [s.region for s in bundle.readers["train"].items]


def test_region_marks_ignore_reads_dont_care_masks(tmp_path, tiny_raw):
    truth = _drive_folder(tmp_path / "drive")
    for p in (tmp_path / "drive" / "mask").iterdir():  # the same regions stored as "don't care" masks
        Image.fromarray(255 - np.asarray(Image.open(p))).save(p)
    bundle = data_of(config_from_dict(_drive_raw(tiny_raw, tmp_path / "drive", region_marks="ignore")),
                        check=("train",))
    loader = bundle.readers["train"]
    for i, s in enumerate(loader.items):
        np.testing.assert_array_equal(loader.load(i)[1], truth[s.image.rsplit("/", 1)[1]])


def test_region_masks_in_the_image_folder_and_from_list_files(tmp_path, tiny_raw):
    root = tmp_path / "drive"
    truth = _drive_folder(root)
    for p in (root / "mask").iterdir():  # regions beside the images: never taken for images
        p.rename(root / "images" / p.name)
    raw = _drive_raw(tiny_raw, root)
    raw["data"]["train"]["regions"] = "images"
    bundle = data_of(config_from_dict(raw), check=("train", "val"))
    items = bundle.readers["train"].items + bundle.readers["val"].items
    assert len(items) == 4 and all(s.image.endswith("_training.tif") for s in items)
    # a list file's third path is the region mask
    (root / "train.txt").write_text("".join(f"images/{k}_training.tif 1st_manual/{k}_manual1.gif "
                                            f"images/{k}_training_mask.gif\n" for k in (21, 22)))
    listed = {**raw["data"], "train": {"list": "train.txt"}}
    listed.pop("pair_stems")
    loader = data_of(config_from_dict({**tiny_raw, "data": listed}), check=("train",)).readers["train"]
    for i, s in enumerate(loader.items):
        np.testing.assert_array_equal(loader.load(i)[1], truth[s.image.rsplit("/", 1)[1]])
    raw["data"]["region_suffix"] = ""
    with pytest.raises(DataError, match=r"images and region masks are the same folder; set data\.region_suffix"):
        data_of(config_from_dict(raw))


def test_region_mask_refusals(tmp_path, tiny_raw):
    root = tmp_path / "drive"
    _drive_folder(root)
    cfg = config_from_dict(_drive_raw(tiny_raw, root))
    (root / "mask" / "22_training_mask.gif").unlink()
    with pytest.raises(DataError, match=r"22_training\.tif: no region mask '22_training_mask\.\*' in .*mask$"):
        build_data(cfg.data, cfg.augment)
    Image.fromarray(np.full((12, 10), 255, np.uint8)).save(root / "mask" / "22_training_mask.gif")
    with pytest.raises(DataError, match=r"22_training_mask\.gif: region mask is 10x12 but the mask .* is 12x12"):
        build_data(cfg.data, cfg.augment, check=("train", "val"))
    faint = np.zeros((12, 12), np.uint8)
    faint[3:9, 3:9] = 100  # neither 0/1 nor 0/255: refused, not read as "all outside"
    (root / "mask" / "22_training_mask.gif").unlink()
    Image.fromarray(faint).save(root / "mask" / "22_training_mask.png")
    with pytest.raises(DataError, match=r"22_training_mask\.png: region mask's largest value is 100, expected 0 and 255"):
        build_data(cfg.data, cfg.augment, check=("train", "val"))
    with pytest.raises(ConfigError, match="third path on its line"):
        config_from_dict({**tiny_raw, "data": {"kind": "folder", "train": {"list": "a.txt", "regions": "m"}}})
