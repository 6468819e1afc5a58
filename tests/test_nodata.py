"""Pixels without data (data.nodata, issue 42 item 5): a GeoTIFF's -9999 swath edge or a float file's NaN are
read as missing in every band, take the band's mean as input, are neither trained on nor scored, are left out
of the statistics, are found by `seglab init` and said by `inspect` when unset, and predict as the files do."""
import json
import math

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from seglab.api import inspect
from seglab.cli import main
from seglab.config import config_from_dict
from seglab.data.datasets import TrainDataset, build_data, check_split
from seglab.data.masks import read_image, scale_image
from seglab.data.transforms import to_tensor
from seglab.errors import DataError

from conftest import folder_raw, save_png

H, W, BANDS, MARKER, TOP = 24, 32, 12, -9999, 4095.0


def _tile(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image int16 (H, W, 12), mask (H, W) 0/1, missing (H, W) bool) of sample i: a field (class 1) brighter
    than its surroundings, a swath edge without data in every band (columns 0..4) and a hole in band 7 only."""
    rng = np.random.default_rng(i)
    mask = np.zeros((H, W), np.uint8)
    mask[4 + i % 3:16, 10:24] = 1
    image = (rng.integers(0, 1500, (H, W, BANDS)) + 1500 * mask[..., None].astype(np.int64)).astype(np.int16)
    missing = np.zeros((H, W), bool)
    missing[:, :5] = True
    missing[20, 28] = True
    image[:, :5] = MARKER
    image[20, 28, 7] = MARKER
    return image, mask, missing


def _geo_dataset(root, n=6):
    for i in range(n):
        image, mask, _ = _tile(i)
        (root / "images").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "images" / f"t{i}.tif", image, photometric="minisblack", planarconfig="contig")
        save_png(root / "masks" / f"t{i}.png", mask)
    return root


def _raw(tiny_raw, root, **data):
    raw = folder_raw(tiny_raw, root, class_names=["other", "field"], in_channels=BANDS, image_max=TOP, **data)
    raw["augment"] = {"hflip": 0.5, "color_jitter": 0.0, "mean": [0.55] * BANDS, "std": [0.3] * BANDS}
    return raw


def test_a_marker_in_any_band_makes_the_pixel_missing_in_every_band(tmp_path):
    _geo_dataset(tmp_path / "d", n=1)
    image, _, missing = _tile(0)
    read = read_image(tmp_path / "d" / "images" / "t0.tif", BANDS, TOP, nodata=MARKER)
    assert read.dtype == np.float32 and np.array_equal(np.isnan(read).any(-1), missing)
    assert np.isnan(read[missing]).all()  # every band of a missing pixel, the hole in band 7 too
    assert np.array_equal(read[~missing], image[~missing].astype(np.float32) / np.float32(TOP))
    # without data.nodata the marker is a value, as before
    plain = read_image(tmp_path / "d" / "images" / "t0.tif", BANDS, TOP)
    assert not np.isnan(plain).any() and plain.min() == np.float32(MARKER) / np.float32(TOP)


def test_nan_marks_missing_pixels_in_float_files_only_when_asked(tmp_path):
    arr = np.random.default_rng(0).random((H, W, 3)).astype(np.float32)
    arr[2:4, 3:9, 1] = np.nan
    f = tmp_path / "f.tif"
    tifffile.imwrite(f, arr, photometric="rgb")
    with pytest.raises(DataError, match=r"f\.tif: 12 of 2,304 values are NaN or infinite; .*data\.nodata: \.nan"):
        read_image(f, 3)
    read = read_image(f, 3, nodata=float("nan"))
    assert np.isnan(read).any(-1).sum() == 12 and np.isnan(read[2:4, 3:9]).all()
    assert np.array_equal(read[5:], arr[5:])
    arr[0, 0, 0] = np.inf  # NaN as nodata does not make infinities data
    with pytest.raises(DataError, match="1 of 2,304 values are NaN or infinite"):
        scale_image(arr, None, "x", "fix it", float("nan"))


def test_an_8_bit_image_with_missing_pixels_reads_as_its_uint8_would():
    arr = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert scale_image(arr, None, "x", "-", 200.0) is arr  # no marker in it: uint8 kept
    read = scale_image(arr, 4095.0, "x", "-", 0.0)  # the first pixel holds 0 in band 0; image_max is for wider data
    assert read.dtype == np.float32 and np.isnan(read[0, 0]).all() and np.isnan(read).sum() == 3
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    as_uint8, as_float = to_tensor(arr, mean, std), to_tensor(read, mean, std)
    assert torch.equal(as_float[:, 0, 0], torch.zeros(3))  # the band's mean: 0 once normalised
    assert torch.allclose(as_float.flatten(1)[:, 1:], as_uint8.flatten(1)[:, 1:], atol=1e-6)


def test_missing_pixels_are_neither_trained_on_nor_scored_nor_counted_as_inputs(tmp_path, tiny_raw):
    root = _geo_dataset(tmp_path / "d")
    cfg = config_from_dict(_raw(tiny_raw, root, nodata=MARKER))
    data = build_data(cfg.data, cfg.augment)
    reader = data.readers["train"]
    stats = check_split(reader)
    kept = []
    for i in range(len(reader)):
        image, mask = reader.load(i)
        truth, labels, missing = _tile(int(reader.name(i)[1]))
        assert np.array_equal(mask, np.where(missing, 255, labels)), reader.name(i)
        assert np.array_equal(np.isnan(image).any(-1), missing)
        kept.append(truth[~missing].astype(np.float64) / TOP)
        x, y, _ = TrainDataset(reader, cfg.augment)[(i, 0)]  # augmented: rotated, scaled, flipped; no NaN reaches the model
        assert torch.isfinite(x).all() and (y[torch.isnan(x).any(0)] == 255).all()
    labelled = sum(int(_tile(int(reader.name(i)[1]))[2].sum()) for i in range(len(reader)))
    assert stats.changed["pixels without data (data.nodata) -> ignore"] == labelled
    kept = np.concatenate(kept)
    np.testing.assert_allclose(stats.band_sums / stats.band_pixels, kept.mean(0), rtol=1e-6)
    assert stats.band_pixels == len(kept)


def test_inspect_names_an_unset_marker_and_init_writes_it(tmp_path, tiny_raw, capsys):
    root = _geo_dataset(tmp_path / "d")
    warned = [w for w in inspect(config_from_dict(_raw(tiny_raw, root)), out=tmp_path / "i1")["warnings"]
              if "without data" in w]
    assert warned and "images hold -9999, a usual mark of pixels without data" in warned[0]
    assert "set data.nodata: -9999" in warned[0]
    quiet = inspect(config_from_dict(_raw(tiny_raw, root, nodata=MARKER)), out=tmp_path / "i2")
    assert not [w for w in quiet["warnings"] if "without data" in w]
    assert quiet["splits"]["train"]["pixels_decoded_by_rule"]["pixels without data (data.nodata) -> ignore"] > 0

    out = tmp_path / "geo.yaml"
    assert main(["init", str(root), "--out", str(out)]) == 0
    import yaml

    written = yaml.safe_load(out.read_text())
    assert written["data"]["nodata"] == MARKER and "value -9999 marks pixels without data" in capsys.readouterr().out


def test_init_finds_nan_in_float_files_and_no_marker_in_clean_data(tmp_path, capsys):
    import yaml

    for name, hole in (("nan", True), ("clean", False)):
        root = tmp_path / name
        for i in range(4):
            arr = np.random.default_rng(i).random((H, W, 4)).astype(np.float32) * 3
            if hole:
                arr[:3, :3] = np.nan
            (root / "images").mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / "images" / f"f{i}.tif", arr, photometric="minisblack", planarconfig="contig")
            save_png(root / "masks" / f"f{i}.png", (np.arange(H * W).reshape(H, W) % 2).astype(np.uint8))
        out = tmp_path / f"{name}.yaml"
        assert main(["init", str(root), "--out", str(out)]) == 0
        data = yaml.safe_load(out.read_text())["data"]
        if hole:
            assert math.isnan(data["nodata"]) and "value NaN marks pixels without data" in capsys.readouterr().out
            cfg = config_from_dict(yaml.safe_load(out.read_text()))
            inspect(cfg, out=tmp_path / "ins")  # the written config reads its own files
        else:
            assert "nodata" not in data and data["in_channels"] == 4  # 16-bit / float: R G B NIR, not RGBA


def test_a_model_trained_with_nodata_predicts_files_and_arrays_alike(tmp_path, tiny_raw):
    import seglab
    from seglab.api import train
    from seglab.artifacts.model_info import ModelInfo

    root = _geo_dataset(tmp_path / "d")
    raw = _raw(tiny_raw, root, nodata=MARKER)
    raw["train"] = {**raw["train"], "epochs": 1, "batch_size": 2}
    run = train(config_from_dict(raw))
    summary = json.loads((run.path / "summary.json").read_text())
    assert math.isfinite(summary["best_value"])  # no NaN reached the loss or the scores
    ckpt = run.best if run.best.is_file() else run.last
    model = seglab.load_model(ckpt)
    assert model.model.info.nodata == MARKER
    f = root / "images" / "t0.tif"
    assert main(["predict", str(ckpt), str(f), "--out", str(tmp_path / "cli"), "--save-probabilities"]) == 0
    written = np.asarray(Image.open(tmp_path / "cli" / "t0_mask.png"))
    assert np.array_equal(model.predict(tifffile.imread(f)), written)
    assert np.allclose(model.probabilities(tifffile.imread(f)), np.load(tmp_path / "cli" / "t0_prob.npy"), atol=2e-3)
    # the record round-trips, NaN included, and files written before data.nodata read as having none
    info = model.model.info
    for value in (MARKER, float("nan"), None):
        back = ModelInfo.from_dict({**info.to_dict(), "nodata": value}).nodata
        assert back == value or (value is not None and math.isnan(value) and math.isnan(back))
    old = {k: v for k, v in info.to_dict().items() if k != "nodata"}
    assert ModelInfo.from_dict(old).nodata is None
    assert ModelInfo.from_dict(old, config={"data": {"nodata": -1}}).nodata == -1
    with pytest.raises(Exception, match="nodata is 'x', expected a number"):
        ModelInfo.from_dict({**info.to_dict(), "nodata": "x"})


def test_a_nan_marker_is_one_setting_when_configs_are_compared(tmp_path, tiny_raw):
    """--resume compares config.yaml with last.pt's: NaN != NaN must not make them differ."""
    from seglab.config.loading import config_differences

    root = _geo_dataset(tmp_path / "d", n=1)
    a, b = (config_from_dict(_raw(tiny_raw, root, nodata=float("nan"))) for _ in range(2))
    assert config_differences(a, b) == ""
    assert "data.nodata" in config_differences(a, config_from_dict(_raw(tiny_raw, root, nodata=MARKER)))
