"""Reading images and decoding index, binary and RGB-palette masks into (H, W) uint8 class maps."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .labels import LabelSpace

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")


def _open(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
            im.load()  # decode now so truncated files fail here, not later
        return im
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (corrupt or unknown format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None


def read_image(path: Path, channels: int = 3) -> np.ndarray:
    """Read an image file as (H, W, C) uint8 with C = `channels` (1, 3 or 4)."""
    im = _open(path)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    if im.mode in ("I;16", "I;16B", "I", "F") and mode != "L":
        arr = np.asarray(im, dtype=np.float64)
        arr = (255 * (arr - arr.min()) / max(arr.max() - arr.min(), 1)).astype(np.uint8)
        im = Image.fromarray(arr)
    arr = np.asarray(im.convert(mode))
    return arr[..., None] if arr.ndim == 2 else arr


class MaskDecoder:
    """Decode one mask file to an (H, W) uint8 map of class indices and `ignore_index`.

    encoding: 'index' (8/16-bit values are class ids), 'binary' (> 127 is class 1; soft JPEG edges
    allowed) or 'rgb' (colours looked up in the label space's palette).
    remap: raw index -> class index or ignore (e.g. CamVid's 11 = Void -> 255).
    """

    def __init__(self, encoding: str, labels: LabelSpace, remap: dict[int, int] | None = None) -> None:
        self.encoding = encoding
        self.labels = labels
        self.remap = dict(remap or {})
        if encoding == "rgb":
            colors = list(labels.palette) + list(labels.void_colors)
            values = list(range(labels.num_classes)) + [labels.ignore_index] * len(labels.void_colors)
            codes = np.array([(r << 16) | (g << 8) | b for r, g, b in colors], np.int64)
            order = np.argsort(codes)
            self._codes = codes[order]
            self._values = np.array(values, np.uint8)[order]

    def __call__(self, path: Path) -> np.ndarray:
        im = _open(path)
        if self.encoding == "binary":
            arr = np.asarray(im.convert("L"))
            return (arr > 127).astype(np.uint8)
        if self.encoding == "rgb":
            return self._decode_rgb(np.asarray(im.convert("RGB")), path)
        return self._decode_index(im, path)

    def _decode_index(self, im: Image.Image, path: Path) -> np.ndarray:
        if im.mode in ("RGB", "RGBA"):
            arr = np.asarray(im)
            if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
                raise DataError(
                    f"{path}: colour mask, but data.mask_encoding is 'index' (use 'rgb' with a palette file)"
                )
            arr = arr[..., 0]
        elif im.mode in ("P", "L", "I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im)  # P gives palette indices, which are the class ids
        else:
            arr = np.asarray(im.convert("L"))
        arr = arr.astype(np.int64)
        n, ignore = self.labels.num_classes, self.labels.ignore_index
        if self.remap:
            lut_size = max(int(arr.max()) + 1, max(self.remap) + 1, 256)
            lut = np.arange(lut_size, dtype=np.int64)
            for raw, new in self.remap.items():
                lut[raw] = new
            arr = lut[arr]
        bad = (arr >= n) & (arr != ignore)
        if bad.any():
            values, counts = np.unique(arr[bad], return_counts=True)
            listed = ", ".join(f"{v} ({c} px)" for v, c in zip(values[:5], counts[:5]))
            raise DataError(
                f"{path}: mask values {listed} are not class ids 0..{n - 1} nor the ignore value {ignore}"
            )
        return arr.astype(np.uint8)

    def _decode_rgb(self, rgb: np.ndarray, path: Path) -> np.ndarray:
        code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        pos = np.searchsorted(self._codes, code).clip(0, len(self._codes) - 1)
        found = self._codes[pos] == code
        if not found.all():
            values, counts = np.unique(code[~found], return_counts=True)
            worst = np.argmax(counts)
            c = int(values[worst])
            color = ((c >> 16) & 255, (c >> 8) & 255, c & 255)
            more = f" and {len(values) - 1} other colours" if len(values) > 1 else ""
            raise DataError(
                f"{path}: colour {color} ({counts[worst]} px){more} is not in the palette"
            )
        return self._values[pos]
