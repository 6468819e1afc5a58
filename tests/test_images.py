"""Images as they come: 16-bit, multi-band TIFF, any channel count, grey / RGBA / palette / CMYK (issue 13)."""
from collections import Counter

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from torch import nn

from seglab.api import inspect
from seglab.config import config_from_dict
from seglab.data.masks import read_image
from seglab.errors import ConfigError, DataError
from seglab.models import create_model, list_models
from seglab.models.encoders import _adapt_first_conv

from conftest import folder_raw, save_png


def _ramp16(h=4, w=5, c=None):
    n = h * w * (c or 1)
    return (np.arange(n) * (65535 // n)).astype(np.uint16).reshape((h, w) + ((c,) if c else ()))


def test_16_bit_grey_and_rgb_png_keep_their_full_range(tmp_path):
    grey = _ramp16()
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    got = read_image(tmp_path / "g.png", 1)
    assert got.dtype == np.float32 and got.shape == (4, 5, 1)
    np.testing.assert_allclose(got[..., 0], grey / 65535.0, rtol=1e-6)
    rgb = _ramp16(c=3)
    cv2.imwrite(str(tmp_path / "c.png"), rgb[..., ::-1])  # OpenCV writes BGR
    got = read_image(tmp_path / "c.png", 3)
    np.testing.assert_allclose(got, rgb / 65535.0, rtol=1e-6)  # Pillow alone would keep only the high bytes
    np.testing.assert_allclose(read_image(tmp_path / "g.png", 1, image_max=4095.0)[..., 0], grey / 4095.0, rtol=1e-6)


@pytest.mark.parametrize("planar", [False, True])
def test_multi_band_tiff(tmp_path, planar):
    bands = _ramp16(c=5)
    data = np.moveaxis(bands, -1, 0) if planar else bands
    tifffile.imwrite(tmp_path / "m.tif", data, planarconfig="separate" if planar else "contig",
                     photometric="minisblack")
    kinds = Counter()
    got = read_image(tmp_path / "m.tif", 5, kinds=kinds)
    assert got.shape == (4, 5, 5)
    np.testing.assert_allclose(got, bands / 65535.0, rtol=1e-6)
    assert kinds == {"TIFF uint16 5 bands": 1}
    with pytest.raises(DataError, match=r"m\.tif: 5 channels, but data\.in_channels is 3; set data\.in_channels: 5"):
        read_image(tmp_path / "m.tif", 3)
    u8 = (np.arange(60) * 4).astype(np.uint8).reshape(4, 5, 3)
    tifffile.imwrite(tmp_path / "u8.tif", u8, photometric="rgb")
    got = read_image(tmp_path / "u8.tif", 3)
    assert got.dtype == np.uint8 and np.array_equal(got, u8)


def test_grey_rgba_palette_and_cmyk_become_rgb_and_are_counted(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (4, 5, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    Image.fromarray(grey).save(tmp_path / "l.png")
    Image.fromarray(np.dstack([rgb, np.full((4, 5), 7, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    kinds = Counter()
    assert np.array_equal(read_image(tmp_path / "l.png", 3, kinds=kinds), np.repeat(grey[..., None], 3, -1))
    assert np.array_equal(read_image(tmp_path / "rgba.png", 3, kinds=kinds), rgb)
    p = read_image(tmp_path / "p.png", 3, kinds=kinds)
    assert p.shape == (4, 5, 3) and p.dtype == np.uint8
    assert read_image(tmp_path / "cmyk.jpg", 3, kinds=kinds).shape == (4, 5, 3)
    assert kinds == {"L": 1, "RGBA": 1, "P": 1, "CMYK": 1}


def test_normalisation_has_one_value_per_channel(tiny_raw):
    raw = {**tiny_raw, "data": {**tiny_raw["data"], "in_channels": 1}, "augment": {"hflip": 0.5}}
    cfg = config_from_dict(raw)
    assert cfg.augment.mean == (0.5,) and cfg.augment.std == (0.25,)
    assert config_from_dict({**tiny_raw, "augment": {}}).augment.mean == (0.485, 0.456, 0.406)
    raw["augment"] = {"mean": [0.4, 0.4, 0.4], "std": [0.2]}
    with pytest.raises(ConfigError, match=r"x\.yaml: augment\.mean has 3 values but data\.in_channels is 1: give 1"):
        config_from_dict(raw, "x.yaml")


def test_first_convolution_reuses_rgb_kernels_like_timm():
    for n in (1, 2, 5):
        net = nn.Sequential(nn.Conv2d(3, 4, 3))
        w = net[0].weight.detach().clone()
        _adapt_first_conv(net, n)
        got = net[0].weight.detach()
        want = w.sum(1, keepdim=True) if n == 1 else w[:, [i % 3 for i in range(n)]] * 3.0 / n
        assert got.shape == (4, n, 3, 3) and torch.allclose(got, want)


@pytest.mark.parametrize("name", list_models())
def test_every_model_takes_any_channel_count(name):
    torch.manual_seed(0)
    for n in (1, 5):
        model = create_model(name, in_channels=n, num_classes=3).eval()
        with torch.no_grad():
            assert model(torch.randn(1, n, 64, 64)).shape == (1, 3, 64, 64)


def _band_dataset(root, n=6, bands=5):
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.zeros((32, 32), np.uint8)
        mask[4:20, 6:22] = 1
        img = (rng.random((32, 32, bands)) * 20000 + mask[..., None].astype(np.float64) * 30000).astype(np.uint16)
        (root / "images").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "images" / f"s{i}.tif", img, photometric="minisblack", planarconfig="contig")
        save_png(root / "masks" / f"s{i}.png", mask)
    return root


@pytest.mark.parametrize("name", ["unet", "deeplabv3plus", "segformer"])
def test_training_on_16_bit_five_band_tiffs(tmp_path, tiny_raw, name):
    from seglab.api import train

    root = _band_dataset(tmp_path / "d")
    raw = folder_raw(tiny_raw, root, class_names=["bg", "field"], in_channels=5)
    raw["augment"] = {"hflip": 0.5, "color_jitter": 0.0, "mean": [0.3] * 5, "std": [0.2] * 5}
    raw["model"] = {"name": name} if name != "unet" else {"name": "unet", "base_channels": 4, "depth": 2}
    raw["train"] = {**raw["train"], "epochs": 1, "batch_size": 2}
    run = train(config_from_dict(raw))
    assert run.best.is_file() or run.last.is_file()
    train_split = inspect(config_from_dict(raw), out=tmp_path / "insp")["splits"]["train"]
    assert train_split["image_kinds"] == {"TIFF uint16 5 bands": train_split["samples"]}


def test_report_of_runs_with_different_channel_counts(tmp_path, tiny_raw):
    from seglab.api import train
    from seglab.cli import main

    from conftest import make_folder_dataset

    root = make_folder_dataset(tmp_path / "d", n=6, size=(32, 32))
    runs = []
    for n in (3, 1):
        raw = folder_raw(tiny_raw, root, in_channels=n)
        raw["augment"] = {"hflip": 0.5}
        raw["train"] = {**raw["train"], "epochs": 1, "batch_size": 2}
        raw["output"] = {**raw["output"], "name": f"c{n}"}
        runs.append(train(config_from_dict(raw)).path)
    assert main(["report", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "cmp"), "--images", "2"]) == 0
    assert (tmp_path / "cmp" / "predictions.png").is_file()
