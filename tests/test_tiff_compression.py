"""Compressed TIFFs (LZW, Deflate, JPEG) read on a fresh install, as images and masks (issue 23 item 4)."""
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from seglab.data.mask_formats import build_label_space
from seglab.data.mask_formats import MaskDecoder
from seglab.data.masks import read_image
from seglab.errors import DataError

# Pillow's names for the TIFF compressions (libtiff writes them, so the test needs no codec of its own)
COMPRESSIONS = {"lzw": "tiff_lzw", "deflate": "tiff_adobe_deflate", "jpeg": "jpeg", "packbits": "packbits"}


def _rgb(h=24, w=32):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 8 % 256, y * 10 % 256, (x + y) * 4 % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(COMPRESSIONS))
def test_compressed_rgb_tiff_images(tmp_path, name):
    img = _rgb()
    p = tmp_path / f"{name}.tif"
    Image.fromarray(img).save(p, compression=COMPRESSIONS[name])
    k = Counter()
    out = read_image(p, kinds=k)
    assert out.dtype == np.uint8 and out.shape == img.shape
    if name == "jpeg":  # lossy: close, not equal
        assert np.abs(out.astype(int) - img).mean() < 4
    else:
        assert np.array_equal(out, img)
    assert dict(k) == {"TIFF uint8 3 bands": 1}


@pytest.mark.parametrize("name", ["lzw", "deflate"])
def test_compressed_16_bit_tiff_and_mask(tmp_path, name):
    grey = (np.arange(24 * 32).reshape(24, 32) * 80).astype(np.uint16)
    p = tmp_path / "g.tif"
    Image.fromarray(grey).save(p, compression=COMPRESSIONS[name])
    out = read_image(p)
    assert np.allclose(out[..., 0], grey / 65535.0) and out.shape == (24, 32, 3)
    mask = np.zeros((24, 32), np.uint8)
    mask[5:12, 3:20] = 2
    mask[15:, :] = 1
    Image.fromarray(mask).save(tmp_path / "m.tif", compression=COMPRESSIONS[name])
    labels, remap = build_label_space(encoding="index", palette_file=None, class_names=["a", "b", "c"],
                                      void_class=None, ignore_index=255)
    assert np.array_equal(MaskDecoder("index", labels, remap)(tmp_path / "m.tif"), mask)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")  # Pillow's word on the cut file
def test_without_imagecodecs_pillow_reads_what_it_can(tmp_path, monkeypatch):
    img = _rgb()
    p = tmp_path / "lzw.tif"
    Image.fromarray(img).save(p, compression="tiff_lzw")
    import tifffile

    def without_codecs(*args, **kwargs):  # what tifffile raises on an install without imagecodecs
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile, "TiffFile", without_codecs)
    assert np.array_equal(read_image(p), img)
    (tmp_path / "bad.tif").write_bytes(p.read_bytes()[:200])
    with pytest.raises(DataError, match=r"bad\.tif: "):
        read_image(tmp_path / "bad.tif")
