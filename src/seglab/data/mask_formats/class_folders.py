"""Overlapping classes in folders: `masks/CLASS/NAME.png` is class CLASS's binary mask of image NAME; images
pair with the first class's folder and the decoder reads the others beside it."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import DataError
from ..masks import _open
from ..multilabel import pack_masks
from .base import MaskDecoder, OverlappingClassesFormat, register_mask_format
from .binary import binary_values, foreground


@register_mask_format
class ClassFoldersFormat(OverlappingClassesFormat):
    """`mask_encoding: class_folders`: one binary mask per class folder, packed one bit per class."""
    name = "class_folders"
    per_class = "class folder"

    def mask_folder(self, masks: Path, class_names: Sequence[str]) -> Path:
        missing = [n for n in class_names if not (masks / n).is_dir()]
        if missing:
            found = sorted(p.name for p in masks.iterdir() if p.is_dir()) if masks.is_dir() else []
            raise DataError(f"{masks}: no class folder '{missing[0]}' (mask_encoding class_folders wants one folder "
                            f"per name in data.class_names); found: {', '.join(found) or 'no folders'}")
        return masks / class_names[0]

    def decode(self, dec: MaskDecoder, path: Path) -> np.ndarray:
        names = dec.labels.names
        if path.parent.name not in names:
            raise DataError(f"{path}: with mask_encoding class_folders a mask lies in a folder named after its class "
                            f"({', '.join(names)}); found folder '{path.parent.name}'")
        masks = []
        for name in names:
            p = path.parent.parent / name / path.name
            if not p.is_file():
                raise DataError(f"{p}: not found; every class folder needs a mask for each image (an empty mask "
                                "where the class is absent)")
            fg = foreground(dec, binary_values(_open(p, dec.max_pixels)), p).astype(bool)
            if masks and fg.shape != masks[0].shape:
                raise DataError(f"{p}: {fg.shape[1]}x{fg.shape[0]}, but {path.parent.parent / names[0] / path.name} "
                                f"is {masks[0].shape[1]}x{masks[0].shape[0]}; an image's class masks share one size")
            masks.append(fg)
        return pack_masks(np.stack(masks))
