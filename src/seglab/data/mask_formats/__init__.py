"""Mask formats as registered parts: one module per format (its decoder, label-space rule, pairing and
inspect hint), registered by name; `data.mask_encoding` names one. Adding a format: a module here with a
`@register_mask_format` class, imported below, its name in config/data.py's `mask_encoding` choices, and its
fixture in tests/test_mask_formats.py (the registry test asks for one)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ...errors import DataError
from ..labels import LabelSpace, read_palette_file
from . import index, binary, rgb, channels, class_folders  # noqa: F401  (each registers its format, in this order)
from .base import MASK_FORMATS, MaskDecoder, MaskFormat, get_mask_format, list_mask_formats, register_mask_format

__all__ = ["build_label_space", "MASK_FORMATS", "MaskDecoder", "MaskFormat", "get_mask_format", "list_mask_formats",
           "register_mask_format"]


def build_label_space(
    *,
    encoding: str,
    palette_file: Optional[Path],
    class_names: Optional[list[str]],
    void_class: Optional[str],
    ignore_index: int,
) -> tuple[LabelSpace, dict[int, int]]:
    """Build the label space and the raw-index remap (e.g. CamVid's 11 = Void -> 255).

    Returns (labels, remap) where remap maps raw mask indices to class indices or ignore.
    """
    remap: dict[int, int] = {}
    if palette_file is not None:  # a palette file names the classes whatever the format
        rows = read_palette_file(palette_file)
        void_rows = [i for i, (n, _) in enumerate(rows) if void_class and n.lower() == void_class.lower()]
        names, palette, void_colors = [], [], []
        for i, (name, color) in enumerate(rows):
            if i in void_rows:
                void_colors.append(color)
                remap[i] = ignore_index
            else:
                remap[i] = len(names)
                names.append(name)
                palette.append(color)
        if class_names is not None and class_names != names:
            raise DataError(
                f"{palette_file}: class names {names} differ from data.class_names {class_names}; drop one of them"
            )
        return LabelSpace(names, palette, ignore_index, void_colors), remap
    return get_mask_format(encoding).label_space(class_names, ignore_index), remap
