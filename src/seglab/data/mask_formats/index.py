"""Index masks: pixel values are class ids (8- or 16-bit grey, palette PNGs' indices, 1-bit), through the label
space's remap (a palette's Void row, data.label_map, reduce_zero_label)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
from PIL import Image

from ...errors import DataError
from .base import MaskDecoder, MaskFormat, register_mask_format

if TYPE_CHECKING:
    from ...config.data import DataConfig


def index_values(im: Image.Image, path: Path) -> np.ndarray:
    """The raw (H, W) int64 values of an index mask; a colour image is refused (it needs rgb)."""
    if im.mode in ("RGB", "RGBA"):
        arr = np.asarray(im)
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise DataError(f"{path}: colour mask, but data.mask_encoding is 'index' (use 'rgb' with a palette file)")
        arr = arr[..., 0]
    elif im.mode == "1":
        arr = np.asarray(im).astype(np.uint8)  # 1-bit: True is class 1, not 255
    elif im.mode in ("P", "L", "I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im)  # P gives palette indices, which are the class ids
    else:
        arr = np.asarray(im.convert("L"))
    return arr.astype(np.int64)


def _listed(values: np.ndarray, counts: np.ndarray) -> str:
    return ", ".join(f"{v} ({c} px)" for v, c in zip(values[:5], counts[:5]))


def remap_values(dec: MaskDecoder, arr: np.ndarray, path: Path) -> np.ndarray:
    """Raw values -> class ids by the decoder's remap; values outside a complete map are refused."""
    ignore = dec.labels.ignore_index
    lut_size = max(int(arr.max(initial=0)) + 1, max(dec.remap) + 1, 256)
    # a complete map (data.label_map) marks the values it leaves out; otherwise they are ids as they are
    lut = np.full(lut_size, -1, np.int64) if dec.remap_source else np.arange(lut_size, dtype=np.int64)
    if dec.remap_source:
        lut[ignore] = ignore
    for raw, new in dec.remap.items():
        lut[raw] = new
    out = lut[arr]
    if dec.remap_source and (out < 0).any():
        values, counts = np.unique(arr[out < 0], return_counts=True)
        more = f" and {len(values) - 5} more" if len(values) > 5 else ""
        raise DataError(f"{path}: mask values {_listed(values, counts)}{more} are not in {dec.remap_source}; map each "
                        "to a class id, a class name or ignore")
    return out


@register_mask_format
class IndexFormat(MaskFormat):
    """`mask_encoding: index`: values are class ids through the label space's remap."""
    name = "index"

    def decode(self, dec: MaskDecoder, path: Path) -> np.ndarray:
        arr = index_values(dec.open(path), path)
        if dec.remap:
            arr = remap_values(dec, arr, path)
        n, ignore = dec.labels.num_classes, dec.labels.ignore_index
        bad = (arr >= n) & (arr != ignore)
        if bad.any():
            values, counts = np.unique(arr[bad], return_counts=True)
            raise DataError(f"{path}: mask values {_listed(values, counts)} are not class ids 0..{n - 1} nor the "
                            f"ignore value {ignore}")
        return arr.astype(np.uint8)

    def one_class_hint(self, where: str, ignored_share: float, data: "DataConfig") -> Optional[str]:
        if data.kind != "folder" or not ignored_share:
            return None
        return (f"{where} and {100 * ignored_share:.0f}% are {data.ignore_index} (the ignore value): 0/255 masks are "
                "binary masks; set data.mask_encoding: binary")
