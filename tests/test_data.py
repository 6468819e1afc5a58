import json
from pathlib import Path

import numpy as np
import torch
import pytest
from PIL import Image

from seglab.config import config_from_dict
from seglab.data.datasets import EpochSampler, TrainDataset, build_data, build_split
from seglab.data.folder import pair_folders, read_list_file
from seglab.data.labels import LabelSpace, read_palette_file
from seglab.data.mask_formats import build_label_space
from seglab.data.mask_formats import MaskDecoder
from seglab.data.masks import read_image
from seglab.data.splits import Split, random_split
from seglab.data.synthetic import make_synthetic_sample
from seglab.errors import ConfigError, DataError

from conftest import folder_raw, make_folder_dataset, save_png

PALETTE_TXT = "128 128 128\tSky\n128 0 0\t\tBuilding\n64 0 128\tCar\n0 0 0\t\tVoid\n"
PALETTE_CSV = "name,r,g,b\nSky,128,128,128\nBuilding,128,0,0\nCar,64,0,128\nVoid,0,0,0\n"


@pytest.mark.parametrize("name,text", [("label_colors.txt", PALETTE_TXT), ("class_dict.csv", PALETTE_CSV)])
def test_palette_formats_and_void(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    rows = read_palette_file(p)
    assert rows[1] == ("Building", (128, 0, 0))
    labels, remap = build_label_space(encoding="rgb", palette_file=p, class_names=None, void_class="Void",
                                      ignore_index=255)
    assert labels.names == ["Sky", "Building", "Car"] and labels.void_colors == [(0, 0, 0)]
    assert remap == {0: 0, 1: 1, 2: 2, 3: 255}
    rgb = np.array([[[128, 128, 128], [128, 0, 0]], [[64, 0, 128], [0, 0, 0]]], np.uint8)
    mask = MaskDecoder("rgb", labels)(save_png(tmp_path / "m.png", rgb))
    assert mask.tolist() == [[0, 1], [2, 255]]


def test_rgb_unknown_colour_reports_colour_file_and_count(tmp_path):
    p = tmp_path / "label_colors.txt"
    p.write_text(PALETTE_TXT)
    labels, _ = build_label_space(encoding="rgb", palette_file=p, class_names=None, void_class="Void", ignore_index=255)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, :3] = (1, 2, 3)
    f = save_png(tmp_path / "bad.png", rgb)
    with pytest.raises(DataError, match=r"bad\.png: colour \(1, 2, 3\) \(3 px\) is not in the palette"):
        MaskDecoder("rgb", labels)(f)


def test_palette_file_errors(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("name,r,g,b\nSky,128,128\n")
    with pytest.raises(DataError, match=r"c.csv:2: expected 'name,r,g,b'"):
        read_palette_file(p)
    p.write_text("name,r,g,b\nA,1,2,3\nB,1,2,3\n")
    with pytest.raises(DataError, match="more than one class"):
        read_palette_file(p)


def test_index_masks_8_and_16_bit_and_remap(tmp_path):
    labels = LabelSpace(["a", "b", "c"], [(0, 0, 0), (1, 1, 1), (2, 2, 2)])
    m8 = save_png(tmp_path / "m8.png", np.array([[0, 1], [2, 255]], np.uint8))
    assert MaskDecoder("index", labels)(m8).tolist() == [[0, 1], [2, 255]]
    m16 = tmp_path / "m16.png"
    Image.fromarray(np.array([[0, 1], [2, 3]], np.uint16)).save(m16)
    assert Image.open(m16).mode.startswith("I")
    assert MaskDecoder("index", labels, {3: 255})(m16).tolist() == [[0, 1], [2, 255]]


def test_palettised_png_reads_indices(tmp_path):
    im = Image.fromarray(np.array([[0, 2], [1, 1]], np.uint8), mode="P")
    im.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10] + [0] * 759)
    im.save(tmp_path / "p.png")
    labels = LabelSpace(["a", "b", "c"], [(0, 0, 0), (1, 1, 1), (2, 2, 2)])
    assert MaskDecoder("index", labels)(tmp_path / "p.png").tolist() == [[0, 2], [1, 1]]


def test_index_out_of_range_is_an_error(tmp_path):
    labels = LabelSpace(["a", "b"], [(0, 0, 0), (1, 1, 1)])
    f = save_png(tmp_path / "m.png", np.array([[0, 1], [5, 5]], np.uint8))
    with pytest.raises(DataError, match=r"m\.png: mask values 5 \(2 px\) are not class ids 0..1"):
        MaskDecoder("index", labels)(f)


def test_binary_jpeg_mask_thresholds_at_127(tmp_path):
    yy, xx = np.mgrid[0:40, 0:40]
    mask = np.where((yy - 19.5) ** 2 + (xx - 21) ** 2 < 130, 255, 0).astype(np.uint8)
    f = tmp_path / "m.jpg"
    Image.fromarray(mask).save(f, quality=60)
    noisy = np.asarray(Image.open(f))
    assert len(np.unique(noisy)) > 2  # compression noise is really there
    labels = LabelSpace(["bg", "fg"], [(0, 0, 0), (255, 255, 255)])
    out = MaskDecoder("binary", labels)(f)
    assert set(np.unique(out)) == {0, 1}
    assert (out == (mask > 127)).mean() > 0.98


def test_corrupt_and_truncated_images(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"bad\.png: not a readable image"):
        read_image(bad)
    good = tmp_path / "t.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"trunc\.jpg: cannot decode image"):
        read_image(trunc)


def test_pairing_with_suffix_and_mixed_extensions(tmp_path):
    make_folder_dataset(tmp_path, n=3, mask_suffix="_L", image_ext=".jpg")
    (tmp_path / "images" / "img00.jpg").rename(tmp_path / "images" / "img00.bmp")
    samples = pair_folders(tmp_path / "images", tmp_path / "masks", "_L")
    assert [Path(s.image).name for s in samples] == ["img00.bmp", "img01.jpg", "img02.jpg"]
    assert Path(samples[0].mask).name == "img00_L.png"


def test_image_without_mask(tmp_path):
    make_folder_dataset(tmp_path, n=2)
    (tmp_path / "masks" / "img01.png").unlink()
    with pytest.raises(DataError, match=r"img01\.png: no mask 'img01\.\*'"):
        pair_folders(tmp_path / "images", tmp_path / "masks")


def test_list_file_with_foreign_absolute_paths(tmp_path):
    make_folder_dataset(tmp_path, n=2)
    lst = tmp_path / "train.txt"
    lst.write_text("/elsewhere/Data/images/img00.png /elsewhere/Data/masks/img00.png\nimages/img01.png masks/img01.png\n")
    samples = read_list_file(lst, tmp_path)
    assert samples[0].image == str(tmp_path / "images" / "img00.png")
    assert samples[0].mask == str(tmp_path / "masks" / "img00.png")
    lst.write_text("/x/missing.png /x/masks/img00.png\n")
    with pytest.raises(DataError, match=r"train.txt:1: '/x/missing.png' not found"):
        read_list_file(lst, tmp_path)


def test_size_mismatch_error_and_alignment_rules(tmp_path, tiny_raw):
    make_folder_dataset(tmp_path, n=3, size=(20, 24))
    Image.open(tmp_path / "images" / "img01.png").resize((48, 40)).save(tmp_path / "images" / "img01.png")
    cfg = config_from_dict(folder_raw(tiny_raw, tmp_path))
    with pytest.raises(DataError, match=r"img01\.png is 48x40 but its mask .*img01\.png is 24x20; set data.align"):
        build_data(cfg.data, cfg.augment, check=("train", "val"))
    for rule, shape in (("resize_image_to_mask", (20, 24)), ("resize_mask_to_image", (40, 48))):
        cfg = config_from_dict(folder_raw(tiny_raw, tmp_path, align=rule))
        bundle = build_data(cfg.data, cfg.augment)
        loader = next(r for r in bundle.readers.values() if any("img01" in s.image for s in r.items))
        i = next(i for i, s in enumerate(loader.items) if "img01" in s.image)
        image, mask = loader.load(i)
        assert image.shape[:2] == mask.shape == shape
        assert set(np.unique(mask)) <= {0, 1, 2}  # nearest: no invented labels


def test_random_split_is_seeded_and_disjoint():
    items = list(range(100))
    a = random_split(items, val=0.15, test=0.1, seed=0)
    b = random_split(items, val=0.15, test=0.1, seed=0)
    assert a == b and (len(a["train"]), len(a["val"]), len(a["test"])) == (75, 15, 10)
    assert sorted(a["train"] + a["val"] + a["test"]) == items
    assert random_split(items, val=0.15, test=0.1, seed=1) != a


def test_build_split_json_roundtrip(tmp_path, tiny_raw):
    make_folder_dataset(tmp_path, n=6)
    cfg = config_from_dict(folder_raw(tiny_raw, tmp_path))
    split = build_split(cfg.data).to_json()
    assert len(split["train"]) == 4 and len(split["val"]) == 2
    again = build_data(cfg.data, cfg.augment, split=Split.from_json(json.loads(json.dumps(split))))
    assert [s.image for s in again.readers["val"].items] == [a for a, _ in split["val"]]


def test_empty_split_is_an_error(tiny_raw):
    cfg = config_from_dict(tiny_raw)
    with pytest.raises(DataError, match="the val split is empty"):
        build_data(cfg.data, cfg.augment, split=Split.from_json({"kind": "synthetic", "train": [0, 1], "val": []}), check=("train", "val"))


def test_synthetic_is_deterministic_and_has_every_class():
    a = make_synthetic_sample(split="train", index=3, size=(48, 64), num_classes=4, seed=0)
    b = make_synthetic_sample(split="train", index=3, size=(48, 64), num_classes=4, seed=0)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[0].shape == (48, 64, 3)
    seen = set()
    for i in range(30):
        seen |= set(np.unique(make_synthetic_sample(split="train", index=i, size=(48, 64), num_classes=4, seed=0)[1]))
    assert seen == {0, 1, 2, 3}


def test_augmentation_is_reproducible_and_keeps_labels(tiny_raw):
    tiny_raw["augment"].update(scale=[0.8, 1.3], crop=[28, 36], rotate=20, color_jitter=0.3)
    cfg = config_from_dict(tiny_raw)
    bundle = build_data(cfg.data, cfg.augment)
    ds = TrainDataset(bundle.readers["train"], cfg.augment)
    x1, y1, lab = ds[(2, 1234)]
    assert lab.dtype == torch.bool and bool(lab.all())  # a fully labelled dataset annotates every class
    x2, y2, _ = ds[(2, 1234)]
    assert x1.shape == (3, 28, 36) and y1.shape == (28, 36)
    assert (x1 == x2).all() and (y1 == y2).all()
    assert set(y1.unique().tolist()) <= {0, 1, 2, 255}  # nearest masks, ignore as fill


def test_epoch_sampler_depends_only_on_seed_and_epoch():
    s = EpochSampler(10, seed=3)
    s.set_epoch(2)
    a = list(s)
    s.set_epoch(3)
    assert list(s) != a
    t = EpochSampler(10, seed=3)
    t.set_epoch(2)
    assert list(t) == a and sorted(i for i, _ in a) == list(range(10))


def test_split_json_round_trip_and_refusals(tmp_path):
    from seglab.data.splits import Sample, SyntheticItem, load_split, save_split

    split = Split("merged", train=[Sample("a.png", "a_m.png", "lungs"), Sample("b.png", "b_m.png", "", "b_fov.gif")],
                  val=[Sample("c.png", "c_m.png")])
    save_split(tmp_path / "split.json", split)
    assert load_split(tmp_path / "split.json") == split
    synthetic = Split("synthetic", [SyntheticItem("train", i) for i in range(4)], [SyntheticItem("val", 0)])
    assert synthetic.to_json()["train"] == [0, 1, 2, 3]
    folds = synthetic.folds(2, seed=0)
    assert sorted(map(repr, folds[0].val + folds[1].val)) == sorted(map(repr, synthetic.train + synthetic.val))
    # a fold mixes streams, so its file names every item's stream and reads back the same samples
    assert all(isinstance(v, str) for v in folds[0].to_json()["train"])
    assert Split.from_json(folds[0].to_json()) == folds[0]
    for bad in ('[1, 2]', '{"kind": "folder", "train": [["a.png"]]}', '{"kind": "synthetic", "val": ["x/1"]}', "{"):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(DataError, match=r"bad\.json: "):
            load_split(tmp_path / "bad.json")
    with pytest.raises(DataError, match="the test split is empty"):
        split.items("test")


def _class_balance_mask() -> np.ndarray:
    """96 x 96: class 0 everywhere but a 12 x 12 square of class 1 and a 12 x 12 square of class 2 in one
    corner, ignore (255) along the bottom rows."""
    mask = np.zeros((96, 96), np.uint8)
    mask[4:16, 4:16] = 1
    mask[4:16, 20:32] = 2
    mask[88:, :] = 255
    return mask


def test_class_balanced_crop_redraws_dominated_crops_and_keeps_pixels_aligned():
    import albumentations as A
    from seglab.data.transforms import ClassBalancedCrop

    mask = _class_balance_mask()
    # the image encodes every pixel's position, so a crop of image and mask must be the same window
    yy, xx = np.mgrid[:96, :96]
    image = np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.uint8)
    crop = ClassBalancedCrop(32, 32, max_share=0.75, ignore_index=255)
    plain = A.Compose([A.RandomCrop(32, 32)], seed=0)
    balanced = A.Compose([crop], seed=0)
    mixed = {"plain": 0, "balanced": 0}
    for seed in range(200):
        for name, t in (("plain", plain), ("balanced", balanced)):
            t.set_random_seed(seed)
            out = t(image=image, mask=mask)
            y0, x0 = int(out["image"][0, 0, 0]), int(out["image"][0, 0, 1])
            assert (out["mask"] == mask[y0:y0 + 32, x0:x0 + 32]).all()
            shares = crop.class_shares(out["mask"])
            mixed[name] += int(len(shares) > 1 and shares.max() < 0.75)
    # a random 32x32 window holds 25% or more of class 1 or 2 for only a few positions near the corner
    assert mixed["plain"] < 20 and mixed["balanced"] > 3 * mixed["plain"]
    # deterministic under the sample's seed (resume and torchrun re-crop exactly)
    draws = []
    for _ in range(2):
        balanced.set_random_seed(7)
        draws.append(balanced(image=image, mask=mask))
    a, b = draws
    assert (a["mask"] == b["mask"]).all() and (a["image"] == b["image"]).all()


def test_class_balanced_crop_shares_ignore_void_and_count_overlapping_classes():
    from seglab.data.transforms import ClassBalancedCrop

    crop = ClassBalancedCrop(4, 4, max_share=0.75, ignore_index=255)
    m = np.array([[0, 0, 1, 255]], np.uint8)
    assert np.allclose(sorted(crop.class_shares(m)), [1 / 3, 2 / 3])  # Void is not a labelled pixel
    packed = ClassBalancedCrop(4, 4, max_share=0.75, ignore_index=255, multilabel_classes=2)
    m = np.array([[1, 3, 2, 0]], np.uint8)  # bit 0: class 0, bit 1: class 1; 3 holds both
    assert np.allclose(sorted(packed.class_shares(m)), [0.5, 0.5])


def test_cat_max_ratio_in_the_config(tiny_raw):
    tiny_raw["augment"].update(crop=[16, 16], cat_max_ratio=0.75)
    cfg = config_from_dict(tiny_raw)
    ds = TrainDataset(build_data(cfg.data, cfg.augment).readers["train"], cfg.augment)
    assert ds[(0, 3)][1].shape == (16, 16)
    tiny_raw["augment"].update(crop=None)
    with pytest.raises(ConfigError, match="cat_max_ratio.*augment.crop"):
        config_from_dict(tiny_raw)
    tiny_raw["augment"].update(crop=[16, 16], cat_max_ratio=1.5)
    with pytest.raises(ConfigError, match="cat_max_ratio"):
        config_from_dict(tiny_raw)
