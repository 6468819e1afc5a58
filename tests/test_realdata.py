"""Checks on the real datasets in ../shared/data; skipped when that folder is absent."""
from collections import Counter

import numpy as np
import pytest

from seglab.config import load_config
from seglab.data.datasets import build_data, check_split

from conftest import ROOT, SHARED_DATA

CAMVID = SHARED_DATA / "camvid"
HORSE = SHARED_DATA / "weizmann_horse"
pytestmark = pytest.mark.realdata

needs_camvid = pytest.mark.skipif(not CAMVID.is_dir(), reason=f"CamVid not found at {CAMVID}")
needs_horse = pytest.mark.skipif(not HORSE.is_dir(), reason=f"Weizmann Horse not found at {HORSE}")

CAMVID_NAMES = ["Sky", "Building", "Column_Pole", "Road", "Sidewalk", "Tree", "SignSymbol", "Fence", "Car",
                "Pedestrian", "Bicyclist"]


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # configs use paths relative to the project root


@needs_camvid
def test_every_camvid_mask_decodes(in_root):
    cfg = load_config(ROOT / "configs" / "camvid_unet.yaml", ["data.cache=false"])
    bundle = build_data(cfg.data, cfg.augment)
    assert bundle.labels.names == CAMVID_NAMES and bundle.labels.ignore_index == 255
    assert {k: len(v) for k, v in bundle.readers.items()} == {"train": 367, "val": 101, "test": 233}
    for name, loader in bundle.readers.items():
        stats = check_split(loader)
        assert set(stats.sizes) == {(360, 480)}
        assert (stats.counts > 0).all(), f"{name}: every class appears"
        assert stats.ignored > 0  # Void (index 11) became the ignore value
        assert stats.counts.sum() + stats.ignored == len(loader) * 360 * 480
    image, mask = bundle.readers["train"].load(0)
    assert image.shape == (360, 480, 3) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= set(range(11)) | {255}


@needs_camvid
def test_camvid_list_files_with_foreign_paths(in_root):
    cfg = load_config(ROOT / "configs" / "camvid_unet.yaml",
                      ["data.train={list: train.txt}", "data.val={list: val.txt}", "data.test={list: test.txt}"])
    bundle = build_data(cfg.data, cfg.augment)
    assert [len(bundle.readers[s]) for s in ("train", "val", "test")] == [367, 101, 233]
    first = bundle.readers["train"].items[0]
    assert first.image.endswith("camvid/train/0001TP_006690.png")
    assert first.mask.endswith("camvid/trainannot/0001TP_006690.png")


@needs_horse
def test_every_weizmann_mask_decodes_and_aligns(in_root):
    cfg = load_config(ROOT / "configs" / "weizmann_horse_unet.yaml", ["data.cache=false"])
    bundle = build_data(cfg.data, cfg.augment)
    assert bundle.labels.names == ["background", "horse"]
    assert len(bundle.readers["train"]) == 279 and len(bundle.readers["val"]) == 49  # 85/15 of 328
    sizes = Counter()
    for loader in bundle.readers.values():
        for i in range(len(loader)):
            image, mask = loader.load(i)
            assert image.shape[:2] == mask.shape  # colour image resized to its (smaller) mask
            values = set(np.unique(mask).tolist())
            assert values == {0, 1}, loader.name(i)
            assert 0.02 < mask.mean() < 0.9, loader.name(i)  # a horse, not JPEG noise
            sizes[mask.shape] += 1
    assert sum(sizes.values()) == 328


@needs_horse
def test_weizmann_without_alignment_names_both_files(in_root):
    from seglab.errors import DataError

    cfg = load_config(ROOT / "configs" / "weizmann_horse_unet.yaml", ["data.align=none", "data.cache=false"])
    bundle = build_data(cfg.data, cfg.augment)
    with pytest.raises(DataError, match=r"rgb/horse\d+\.jpg is \d+x\d+ but its mask .*figure_ground/horse\d+\.jpg is \d+x\d+"):
        check_split(bundle.readers["train"])


SINGLE = SHARED_DATA / "single_class"


@pytest.mark.skipif(not (SINGLE / "polyp").is_dir() or not (SINGLE / "lung").is_dir(),
                    reason=f"single-class polyp/lung sets not found under {SINGLE}")
def test_merged_polyp_lung_config(in_root):
    cfg = load_config(ROOT / "configs" / "merged_polyp_lung.yaml", ["data.cache=false"])
    bundle = build_data(cfg.data, cfg.augment)
    assert bundle.labels.names == ["background", "polyp", "lung"]
    train = bundle.readers["train"]
    per_source = Counter(bundle.sources[k].name for k in train.source_of)
    assert per_source == {"polyp": 595, "lung": 385}  # 700 and 453 images, 15% of each held out
    seen = {"polyp": 0, "lung": 0}
    for i in range(len(train)):
        name = bundle.sources[train.source_of[i]].name
        if seen[name] >= 4:
            continue
        seen[name] += 1
        image, mask = train.load(i)
        own = 1 if name == "polyp" else 2
        assert set(np.unique(mask)) == {0, own}, name  # soft JPEG edges thresholded, no stray values
        assert image.shape[:2] == mask.shape
        assert train.labelled(i).tolist() == [True, own == 1, own == 2]
