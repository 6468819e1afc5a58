"""Binary masks that used to lose foreground silently, and 8-bit data in 16-bit images (issue 23 item 2)."""

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from seglab.api import inspect
from seglab.config import config_from_dict
from seglab.data.mask_formats import build_label_space
from seglab.data.mask_formats import MaskDecoder
from seglab.errors import DataError

from conftest import folder_raw, save_png


def _decoder(**kw) -> MaskDecoder:
    labels, remap = build_label_space(encoding="binary", palette_file=None, class_names=["bg", "fg"],
                                      void_class=None, ignore_index=255)
    return MaskDecoder("binary", labels, remap, **kw)


def _instances(h=64, w=48, n=150) -> np.ndarray:
    """uint16 instance ids 1..n (one per small object) on 0."""
    ids = np.zeros((h, w), np.uint16)
    k = 0
    for y in range(0, h - 2, 4):
        for x in range(0, w - 2, 4):
            k += 1
            if k > n:
                return ids
            ids[y:y + 3, x:x + 3] = k
    return ids


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16_bit_instance_ids_are_all_foreground(tmp_path, ext):
    ids = _instances()
    assert ids.max() > 127 and (ids[ids > 0] <= 127).any()  # ids on both sides of the 8-bit threshold
    p = tmp_path / f"m{ext}"
    cv2.imwrite(str(p), ids) if ext == ".png" else tifffile.imwrite(p, ids)
    d = _decoder()
    out = d(p)
    assert np.array_equal(out, (ids > 0).astype(np.uint8))  # pixel by pixel: every id is foreground
    (rule, px), = d.changed.items()
    assert "instance ids" in rule and px == int((ids > 0).sum())


def test_16_bit_zero_or_full_and_an_explicit_threshold(tmp_path):
    m = np.zeros((8, 9), np.uint16)
    m[2:5, 3:7] = 65535
    cv2.imwrite(str(tmp_path / "full.png"), m)
    d = _decoder()
    assert np.array_equal(d(tmp_path / "full.png"), (m > 0).astype(np.uint8)) and not d.changed
    ids = _instances()
    cv2.imwrite(str(tmp_path / "ids.png"), ids)
    # a threshold the user sets is the one used, in the mask's units
    assert np.array_equal(_decoder(threshold=100)(tmp_path / "ids.png"), (ids > 100).astype(np.uint8))


def _dim_colour_mask() -> np.ndarray:
    """PanNuke-like: objects whose channel values 16..255 encode type / instance, many of them below 127."""
    m = np.zeros((64, 64, 3), np.uint8)
    for i, v in enumerate(range(16, 256, 16)):
        y, x = divmod(i, 4)
        m[y * 16 + 2:y * 16 + 12, x * 16 + 2:x * 16 + 12, i % 3] = v
    return m


def test_dim_valued_foreground_is_refused_with_the_count_and_the_setting(tmp_path):
    m = _dim_colour_mask()
    p = save_png(tmp_path / "dim.png", m)
    dropped = int(((m.max(-1) > 0) & (m.max(-1) <= 127)).sum())
    with pytest.raises(DataError) as err:
        _decoder()(p)
    msg = str(err.value)
    assert "\n" not in msg and str(p) in msg and f"{dropped:,} " in msg and "data.binary_threshold: 0" in msg
    # the setting named keeps every object, pixel by pixel
    assert np.array_equal(_decoder(threshold=0)(p), (m.max(-1) > 0).astype(np.uint8))


@pytest.mark.parametrize("quality", [30, 75, 95])
def test_jpeg_and_anti_aliased_binary_masks_are_not_refused(tmp_path, quality):
    rng = np.random.default_rng(quality)
    m = np.zeros((128, 128), np.uint8)
    for _ in range(12):
        cv2.circle(m, tuple(int(v) for v in rng.integers(0, 128, 2)), int(rng.integers(3, 20)), 255, -1)
    Image.fromarray(m).save(tmp_path / "m.jpg", quality=quality)
    out = _decoder()(tmp_path / "m.jpg")
    assert (out != (m > 127)).mean() < 0.02  # only edge pixels may differ
    soft = cv2.resize(cv2.resize(m, (32, 32), interpolation=cv2.INTER_AREA), (128, 128),
                      interpolation=cv2.INTER_LINEAR)
    save_png(tmp_path / "soft.png", soft)
    _decoder()(tmp_path / "soft.png")


def test_inspect_names_merged_ids_and_8_bit_data_in_16_bit_images(tmp_path, tiny_raw):
    root = tmp_path / "d"
    ids = _instances(20, 24, 30)
    rng = np.random.default_rng(0)
    for i in range(4):
        (root / "masks").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "masks" / f"s{i}.png"), ids)
        img = (rng.random((20, 24, 3)) * 235).astype(np.uint16)  # 8-bit values in a 16-bit file
        (root / "images").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "images" / f"s{i}.tif", img, photometric="rgb")
    raw = folder_raw(tiny_raw, root, class_names=["bg", "cell"], mask_encoding="binary")
    s = inspect(config_from_dict(raw), out=tmp_path / "insp")
    assert not s["problems"]
    rules = {k: v for sp in s["splits"].values() for k, v in sp["pixels_decoded_by_rule"].items()}
    assert list(rules) == ["foreground pixels of 16-bit binary masks holding instance ids (every non-zero id read "
                           "as foreground)"]
    assert s["splits"]["train"]["class_pixel_fraction"]["cell"] == pytest.approx((ids > 0).mean())
    (w,) = [w for w in s["warnings"] if w.startswith("train split")]
    assert "data.image_max: 255" in w and "'TIFF uint16 3 bands'" in w
    raw["data"]["image_max"] = 255
    assert not [w for w in inspect(config_from_dict(raw), out=tmp_path / "insp")["warnings"] if "image_max" in w]


def test_0_1_masks_say_they_count_foreground_pixels(tmp_path):
    m = np.zeros((6, 7), np.uint8)
    m[1:3, 2:6] = 1
    d = _decoder()
    assert np.array_equal(d(save_png(tmp_path / "m.png", m)), m)
    assert d.changed == {"foreground pixels of binary masks holding 0/1 (read as background/foreground)": 8}
