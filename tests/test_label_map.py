"""data.label_map and data.reduce_zero_label: mask values -> class ids or ignore (issue 23 item 5)."""
import copy

import numpy as np
import pytest
import yaml

from seglab.config import config_from_dict
from seglab.errors import ConfigError, DataError

from conftest import data_of, ROOT, save_png

EXAMPLE = ROOT / "configs" / "examples" / "cityscapes_labelids.yaml"


def _cityscapes(root, cities=("aachen", "bremen"), h=16, w=24):
    """leftImg8bit/train/CITY/*_leftImg8bit.png + gtFine/train/CITY/*_gtFine_labelIds.png (+ _color files)."""
    rng = np.random.default_rng(0)
    masks = {}
    for c in cities:
        for i in range(3):
            stem = f"{c}_{i:06d}_000019"
            ids = rng.choice(np.arange(34), size=(h, w)).astype(np.uint8)  # every labelId 0..33
            masks[stem] = ids
            save_png(root / "leftImg8bit" / "train" / c / f"{stem}_leftImg8bit.png",
                     rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            save_png(root / "gtFine" / "train" / c / f"{stem}_gtFine_labelIds.png", ids)
            save_png(root / "gtFine" / "train" / c / f"{stem}_gtFine_color.png", np.zeros((h, w, 3), np.uint8))
    return masks


def _train_ids():
    """labelId -> trainId, as cityscapesScripts' labels.py gives them (255: ignored)."""
    t = np.full(256, 255, np.int64)
    for label_id, train_id in zip([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33],
                                  range(19)):
        t[label_id] = train_id
    return t


def _example_raw(tiny_raw, root):
    raw = copy.deepcopy(tiny_raw)
    ex = yaml.safe_load(EXAMPLE.read_text())
    raw["data"] = {**ex["data"], "root": str(root), "val": None, "random_split": {"val": 0.34, "seed": 0}}
    return raw


def _decoded(raw):
    data = data_of(config_from_dict(raw))
    out = {}
    for reader in data.readers.values():
        for i, it in enumerate(reader.items):
            out[it.image.rsplit("/", 1)[-1].replace("_leftImg8bit.png", "")] = reader.load(i)[1]
    return data, out


def test_cityscapes_label_ids_decode_as_train_ids_pixel_by_pixel(tmp_path, tiny_raw):
    masks = _cityscapes(tmp_path / "cs")
    data, got = _decoded(_example_raw(tiny_raw, tmp_path / "cs"))
    assert data.labels.num_classes == 19 and set(got) == set(masks)  # both cities, colour files left out
    lut = _train_ids()
    for stem, ids in masks.items():
        assert np.array_equal(got[stem], lut[ids]), stem


def test_values_outside_the_map_are_refused_naming_them(tmp_path, tiny_raw):
    masks = _cityscapes(tmp_path / "cs", cities=("aachen",))
    stem = sorted(masks)[0]
    bad = masks[stem].copy()
    bad[0, :3] = 40
    save_png(tmp_path / "cs" / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png", bad)
    with pytest.raises(DataError, match=r"labelIds\.png: mask values 40 \(3 px\) are not in data\.label_map; map "
                                        r"each to a class id, a class name or ignore$"):
        data_of(config_from_dict(_example_raw(tiny_raw, tmp_path / "cs")), check=["train", "val"])


@pytest.mark.parametrize("form", ["yaml", "txt"])
def test_a_label_map_file_many_to_one(tmp_path, tiny_raw, form):
    root = tmp_path / "d"
    mask = np.tile(np.array([[0, 1, 2, 3], [4, 5, 5, 255]], np.uint8), (2, 1))
    for i in range(3):
        save_png(root / "images" / f"s{i}.png", np.zeros((4, 4, 3), np.uint8))
        save_png(root / "masks" / f"s{i}.png", mask)
    mapping = {0: "bg", 1: 1, 2: "thing", 3: "ignore", 4: 2, 5: 2}
    if form == "yaml":
        (root / "map.yaml").write_text(yaml.safe_dump(mapping))
    else:
        (root / "map.txt").write_text("# value target\n" + "".join(f"{k} {v}\n" for k, v in mapping.items()))
    raw = copy.deepcopy(tiny_raw)
    raw["data"] = {"kind": "folder", "root": str(root), "train": {"images": "images", "masks": "masks"},
                   "random_split": {"val": 0.34, "seed": 0}, "mask_encoding": "index",
                   "class_names": ["bg", "thing", "stuff"], "label_map": f"map.{form}"}
    _, got = _decoded(raw)
    for m in got.values():
        assert np.array_equal(m, np.tile([[0, 1, 1, 255], [2, 2, 2, 255]], (2, 1)))  # the raw ignore value stays ignore


def test_reduce_zero_label_as_ade20k(tmp_path, tiny_raw):
    root = tmp_path / "d"
    mask = np.tile(np.array([[0, 1, 2, 3], [3, 3, 255, 1]], np.uint8), (2, 1))  # 0 = unlabelled, classes 1..3
    for i in range(3):
        save_png(root / "images" / f"s{i}.png", np.zeros((4, 4, 3), np.uint8))
        save_png(root / "masks" / f"s{i}.png", mask)
    raw = copy.deepcopy(tiny_raw)
    raw["data"] = {"kind": "folder", "root": str(root), "train": {"images": "images", "masks": "masks"},
                   "random_split": {"val": 0.34, "seed": 0}, "mask_encoding": "index",
                   "class_names": ["a", "b", "c"], "reduce_zero_label": True}
    _, got = _decoded(raw)
    for m in got.values():
        assert np.array_equal(m, np.tile([[255, 0, 1, 2], [2, 2, 255, 0]], (2, 1)))
    mask[0, 0] = 4  # class 4 - 1 = 3 is beyond three classes
    save_png(root / "masks" / "s0.png", mask)
    with pytest.raises(DataError, match=r"s0\.png: mask values 3 \(1 px\) are not class ids 0\.\.2"):
        _decoded(raw)


@pytest.mark.parametrize("change, pattern", [
    ({"label_map": {1: "nope"}}, r"value 1 -> 'nope' is not a class name \(bg, thing\) nor ignore"),
    ({"label_map": {1: 7}}, r"value 1 -> 7: class ids are 0\.\.1"),
])
def test_bad_targets_are_refused_in_one_line(tmp_path, tiny_raw, change, pattern):
    root = tmp_path / "d"
    for i in range(3):
        save_png(root / "images" / f"s{i}.png", np.zeros((4, 4, 3), np.uint8))
        save_png(root / "masks" / f"s{i}.png", np.ones((4, 4), np.uint8))
    raw = copy.deepcopy(tiny_raw)
    raw["data"] = {"kind": "folder", "root": str(root), "train": {"images": "images", "masks": "masks"},
                   "mask_encoding": "index", "class_names": ["bg", "thing"], **change}
    with pytest.raises(DataError, match=pattern):
        data_of(config_from_dict(raw))


def test_label_map_needs_index_masks(tiny_raw, tmp_path):
    raw = copy.deepcopy(tiny_raw)
    raw["data"] = {"kind": "folder", "root": str(tmp_path), "train": {"images": "i", "masks": "m"},
                   "mask_encoding": "binary", "label_map": {0: 0}}
    with pytest.raises(ConfigError, match=r"label_map remaps the values of index masks: .*mask_encoding: index"):
        config_from_dict(raw)
    raw["data"].update(mask_encoding="index", reduce_zero_label=True)
    with pytest.raises(ConfigError, match="give label_map or reduce_zero_label, not both"):
        config_from_dict(raw)


def test_a_labelids_set_trains(tmp_path, tiny_raw):
    from seglab.api import train

    _cityscapes(tmp_path / "cs")
    raw = _example_raw(tiny_raw, tmp_path / "cs")
    raw["model"], raw["augment"] = tiny_raw["model"], tiny_raw["augment"]
    raw["train"] = {**tiny_raw["train"], "epochs": 1, "batch_size": 2}
    run = train(config_from_dict(raw))
    assert run.last.is_file()


@pytest.mark.parametrize("name, text, pattern", [
    ("map.txt", "0 bg\n10 red\n10 green\n", r"map\.txt:3: mask value 10 is mapped twice \(.*map\.txt:2 -> 'red', here -> 'green'\)"),
    ("map.txt", "0 bg\n10 red\n010 green\n", r"map\.txt:3: mask value 10 is mapped twice"),
    ("map.yaml", "0: bg\n10: red\n10: green\n", r"map\.yaml: not a readable label map \(key 10 is given twice \(lines 2 and 3\)"),
    ("map.yaml", "0: bg\n10: red\n'10': green\n", r"map\.yaml: key '10': mask value 10 is mapped twice"),
    ("map.json", '{"0": "bg", "10": "red", "10": "green"}', r"map\.json: .*key '10' is given twice"),
])
def test_a_value_mapped_twice_in_a_file_is_refused_naming_both(tmp_path, tiny_raw, name, text, pattern):
    """The last mapping would win silently and the first's class train with no pixel."""
    root = tmp_path / "d"
    for i in range(3):
        save_png(root / "images" / f"s{i}.png", np.zeros((4, 4, 3), np.uint8))
        save_png(root / "masks" / f"s{i}.png", np.full((4, 4), 10, np.uint8))
    (root / name).write_text(text)
    raw = copy.deepcopy(tiny_raw)
    raw["data"] = {"kind": "folder", "root": str(root), "train": {"images": "images", "masks": "masks"},
                   "mask_encoding": "index", "class_names": ["bg", "red", "green"], "label_map": name}
    with pytest.raises(DataError, match=pattern):
        data_of(config_from_dict(raw))


@pytest.mark.parametrize("mapping", [{10: "red", "10": "green"}, {"010": "red", 10: "green"}])
def test_a_value_mapped_twice_inline_is_refused(tiny_raw, mapping):
    raw = copy.deepcopy(tiny_raw)
    raw["data"] = {"kind": "folder", "root": "d", "train": {"images": "images", "masks": "masks"},
                   "mask_encoding": "index", "class_names": ["bg", "red", "green"], "label_map": mapping}
    with pytest.raises(ConfigError, match=r"data\.label_map.*mask value 10 is mapped twice \('red' and 'green'\)"):
        config_from_dict(raw)
