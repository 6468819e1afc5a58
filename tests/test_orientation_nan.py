"""EXIF orientation applied to images and masks alike, and NaN / Inf pixels refused (issue 24 items 2, 3)."""
import numpy as np
import pytest
import tifffile
from PIL import Image

from seglab.api import inspect
from seglab.config import config_from_dict
from seglab.data.mask_formats import build_label_space
from seglab.data.mask_formats import MaskDecoder
from seglab.data.masks import read_image
from seglab.errors import DataError

from conftest import data_of, folder_raw


def upright(stored: np.ndarray, orientation: int) -> np.ndarray:
    """The EXIF specification's display transform of the stored pixels, written out independently of the code."""
    cw = lambda a: np.rot90(a, -1)  # noqa: E731 - a quarter turn clockwise
    mirror = lambda a: a[:, ::-1]  # noqa: E731
    return {1: lambda a: a, 2: mirror, 3: lambda a: cw(cw(a)), 4: lambda a: a[::-1],
            5: lambda a: cw(cw(cw(mirror(a)))), 6: cw, 7: lambda a: cw(mirror(a)),
            8: lambda a: cw(cw(cw(a)))}[orientation](stored)


def _save(path, arr, orientation, **kw):
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, exif=exif, **kw)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_images_and_masks_are_turned_upright(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 255, (6, 10, 3), dtype=np.uint8)
    got = read_image(_save(tmp_path / "i.png", stored, orientation))
    np.testing.assert_array_equal(got, upright(stored, orientation))
    mask = rng.integers(0, 3, (6, 10), dtype=np.uint8)
    labels, remap = build_label_space(encoding="index", palette_file=None, class_names=["a", "b", "c"],
                                      void_class=None, ignore_index=255)
    decoder = MaskDecoder("index", labels, remap)
    np.testing.assert_array_equal(decoder(_save(tmp_path / "m.png", mask, orientation)), upright(mask, orientation))
    assert decoder.changed == ({"mask pixels turned upright by their EXIF orientation": 60} if orientation > 1 else {})
    grey16 = rng.integers(0, 65535, (6, 10), dtype=np.uint16)  # OpenCV reads these; the tag still applies
    got16 = read_image(_save(tmp_path / "g.png", grey16, orientation), channels=1)
    np.testing.assert_allclose(got16[..., 0], upright(grey16, orientation) / 65535.0, rtol=1e-6)


def test_a_rotated_phone_jpeg_trains_aligned_with_its_mask(tmp_path, tiny_raw):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    mask = np.zeros((24, 40), np.uint8)  # upright: landscape, class 1 on the left
    mask[:, :12] = 1
    for i in range(3):
        view = (mask[..., None] * 200 + 20).repeat(3, -1).astype(np.uint8)
        # the camera stores the pixels a quarter turn off and tags them 6 ("turn clockwise to view")
        _save(root / "images" / f"p{i}.jpg", np.ascontiguousarray(np.rot90(view, 1)), 6, quality=95)
        Image.fromarray(mask).save(root / "masks" / f"p{i}.png")
    raw = folder_raw(tiny_raw, root, class_names=["bg", "left"])
    reader = data_of(config_from_dict(raw)).readers["train"]
    image, m = reader.load(0)
    assert image.shape[:2] == m.shape == (24, 40)
    assert image[:, :12].mean() > 150 > image[:, 12:].mean()  # the bright class-1 part sits on its mask
    s = inspect(config_from_dict(raw), out=tmp_path / "insp")
    assert not s["problems"] and s["splits"]["train"]["image_kinds"] == {"RGB turned upright by EXIF": 2}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused_in_one_line(tmp_path, bad):
    img = np.ones((8, 9, 3), np.float32) * 0.5
    img[1, 2, 0] = bad
    img[3, 4, 1] = bad
    p = tmp_path / "f.tif"
    tifffile.imwrite(p, img, photometric="rgb")
    with pytest.raises(DataError) as err:
        read_image(p)
    msg = str(err.value)
    assert msg == f"{p}: 2 of 216 values are NaN or infinite; replace them in the file (e.g. with 0 or the band's " \
                  "minimum), set data.nodata: .nan if NaN marks missing pixels, or leave the image out"


def test_inspect_and_train_refuse_non_finite_images_before_training(tmp_path, tiny_raw):
    from seglab.api import train

    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(4):
        img = np.full((8, 8, 3), 0.4, np.float32)
        if i == 1:
            img[0, 0] = np.nan
        tifffile.imwrite(root / "images" / f"s{i}.tif", img, photometric="rgb")
        Image.fromarray(np.eye(8, dtype=np.uint8)).save(root / "masks" / f"s{i}.png")
    raw = folder_raw(tiny_raw, root, class_names=["bg", "fg"], random_split={"val": 0.25, "seed": 0})
    problems = inspect(config_from_dict(raw), out=tmp_path / "insp")["problems"]
    assert any("s1.tif: 3 of 192 values are NaN or infinite" in p for p in problems)
    with pytest.raises(DataError, match=r"s1\.tif: 3 of 192 values are NaN or infinite"):
        train(config_from_dict(raw))
    assert not (tmp_path / "runs" / "tiny" / "checkpoints").exists()
