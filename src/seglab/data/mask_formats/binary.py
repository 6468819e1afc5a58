"""Binary masks: foreground where any channel is above the threshold ({0,255}, JPEG, {0,1}, 1-bit, coloured
objects, 16-bit instance ids); the foreground rules are shared by the formats of overlapping classes."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
from PIL import Image

from ...errors import DataError
from ..labels import LabelSpace, default_palette
from ..masks import DEFAULT_BINARY_THRESHOLD, _refuse_dim_foreground
from .base import MaskDecoder, MaskFormat, register_mask_format

if TYPE_CHECKING:
    from ...config.data import DataConfig


def binary_values(im: Image.Image) -> np.ndarray:
    """The (H, W) values a binary mask is thresholded on: grey levels, 1-bit, 0/1 palette indices, else the
    brightest channel (a pure-blue (0, 0, 255) object is foreground)."""
    if im.mode == "1":
        return np.asarray(im).astype(np.uint8)
    if im.mode in ("L", "I;16", "I;16B", "I;16L", "I"):
        return np.asarray(im)
    if im.mode == "P" and int(np.asarray(im).max(initial=0)) <= 1:
        return np.asarray(im)  # palette indices 0/1: background/foreground whatever their colours
    return np.asarray(im.convert("RGB")).max(axis=-1)  # RGBA, LA, P, CMYK...: the colours, without alpha


def foreground(dec: MaskDecoder, values: np.ndarray, path: Path, where: str = "binary mask") -> np.ndarray:
    """One binary mask's (H, W) values -> bool foreground, by the threshold rules of data.binary_*.

    Without data.binary_threshold: {0,1} masks are read as they are, masks of more than 8 bits (16-bit
    instance ids, one per object) as foreground wherever non-zero, 8-bit masks above 127; an 8-bit mask
    whose foreground lies in flat regions below 127 (values that encode a type or an instance) is refused.
    """
    top = int(values.max(initial=0))
    if top == 1:
        # {0,1} masks: a threshold meant for 0/255 would read every one as all background
        fg = values == 1
        dec.changed[f"foreground pixels of {where}s holding 0/1 (read as background/foreground)"] += int(fg.sum())
    elif dec.threshold is None and values.dtype.itemsize > 1:
        # 16-bit and wider: object ids 1..N (nuclei, cells), or 0/65535; an 8-bit threshold would drop ids <= 127
        fg = values > 0
        if len(np.unique(values)) > 2:
            dec.changed[f"foreground pixels of 16-bit {where}s holding instance ids (every non-zero id "
                        "read as foreground)"] += int(fg.sum())
    else:
        threshold = DEFAULT_BINARY_THRESHOLD if dec.threshold is None else dec.threshold
        if 1 < top <= threshold and len(np.unique(values)) == 2:
            raise DataError(f"{path}: {where} holds only 0 and {top}, and {top} is not above "
                            f"data.binary_threshold {threshold}: set data.binary_threshold below {top}")
        if dec.threshold is None:
            _refuse_dim_foreground(values, threshold, path, where)
        fg = values > threshold
    return ~fg if dec.invert else fg


@register_mask_format
class BinaryFormat(MaskFormat):
    """`mask_encoding: binary`: background / foreground by the threshold (see the module)."""
    name = "binary"

    def decode(self, dec: MaskDecoder, path: Path) -> np.ndarray:
        return foreground(dec, binary_values(dec.open(path)), path).astype(np.uint8)

    def label_space(self, class_names: Optional[list[str]], ignore_index: int) -> LabelSpace:
        names = list(class_names) if class_names is not None else ["background", "foreground"]
        if len(names) != 2:
            raise DataError(f"binary masks have 2 classes, data.class_names lists {len(names)}")
        return LabelSpace(names, default_palette(2), ignore_index)

    def one_class_hint(self, where: str, ignored_share: float, data: "DataConfig") -> Optional[str]:
        threshold = DEFAULT_BINARY_THRESHOLD if data.binary_threshold is None else data.binary_threshold
        return (f"{where}: no foreground pixel above data.binary_threshold {threshold}; check the threshold, "
                "data.binary_invert and data.mask_encoding")
