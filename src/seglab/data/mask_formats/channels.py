"""Overlapping classes in one file: channel k of a multi-channel PNG or TIFF is class k's binary mask."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError
from ..masks import _open, _read_png16, _read_tiff, orient
from ..multilabel import pack_masks
from .base import MaskDecoder, OverlappingClassesFormat, register_mask_format
from .binary import foreground


@register_mask_format
class ChannelsFormat(OverlappingClassesFormat):
    """`mask_encoding: channels`: one binary mask per channel, packed one bit per class."""
    name = "channels"
    per_class = "mask channel"

    def decode(self, dec: MaskDecoder, path: Path) -> np.ndarray:
        if path.suffix.lower() in (".tif", ".tiff"):
            arr, _ = _read_tiff(path, dec.max_pixels)
        else:
            im = _open(path, dec.max_pixels)
            if im.mode == "P":
                raise DataError(f"{path}: a palette image holds one class per pixel, not one channel per class; "
                                "use data.mask_encoding: index (or rgb with a palette file)")
            if im.format == "PNG" and ";16" in im.info["seglab_rawmode"]:
                arr = orient(_read_png16(path), im.info["seglab_orientation"])
            else:
                arr = np.asarray(im.convert("L") if im.mode == "1" else im)
        arr = arr[..., None] if arr.ndim == 2 else arr
        k = dec.labels.num_classes
        if arr.shape[-1] != k:
            raise DataError(f"{path}: {arr.shape[-1]} channel{'s' if arr.shape[-1] != 1 else ''}, but data.class_names "
                            f"names {k} classes; a channels mask holds one binary mask per class, in that order")
        return pack_masks(np.stack([foreground(dec, arr[..., c], path, "mask channel") for c in range(k)]))
