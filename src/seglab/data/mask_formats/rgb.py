"""Colour-coded masks: each pixel's RGB colour looked up in the palette file's colours (CamVid
label_colors.txt, class_dict.csv); colours outside it are refused, or mapped by data.unknown_colors."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ...errors import DataError
from ..labels import LabelSpace
from .base import MaskDecoder, MaskFormat, register_mask_format


# the decoding rule data.unknown_colors: ignore applies, as SplitStats.changed names it
IGNORED_COLOURS = "colours outside the palette -> ignore"


@dataclass(frozen=True)
class PaletteLookup:
    """The palette's colours (classes, then Void colours) sorted by their packed 24-bit code, so that each
    pixel's colour is found by one binary search."""

    codes: np.ndarray  # (P,) int64, ascending: r << 16 | g << 8 | b
    values: np.ndarray  # (P,) uint8: the class id, or ignore_index for a Void colour
    colors: np.ndarray  # (P, 3) float64, for the nearest-colour rule
    names: list[str]  # (P,) the class names, "void" for Void colours


@register_mask_format
class RgbFormat(MaskFormat):
    """`mask_encoding: rgb`: colours decoded by the palette file; needs `data.palette_file`."""
    name = "rgb"

    def prepare(self, dec: MaskDecoder) -> PaletteLookup:
        labels = dec.labels
        colors = list(labels.palette) + list(labels.void_colors)
        values = list(range(labels.num_classes)) + [labels.ignore_index] * len(labels.void_colors)
        codes = np.array([(r << 16) | (g << 8) | b for r, g, b in colors], np.int64)
        order = np.argsort(codes)
        names = list(labels.names) + ["void"] * len(labels.void_colors)
        return PaletteLookup(codes[order], np.array(values, np.uint8)[order], np.array(colors, np.float64)[order],
                             [names[i] for i in order])

    def label_space(self, class_names: Optional[list[str]], ignore_index: int) -> LabelSpace:
        raise DataError("RGB masks need data.palette_file")

    def decode(self, dec: MaskDecoder, path: Path) -> np.ndarray:
        rgb = np.asarray(dec.open(path).convert("RGB"))
        s: PaletteLookup = dec.prepared
        code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        pos = np.searchsorted(s.codes, code).clip(0, len(s.codes) - 1)
        found = s.codes[pos] == code
        if found.all():
            return s.values[pos]
        values, inverse, counts = np.unique(code[~found], return_inverse=True, return_counts=True)
        colors = np.stack([(values >> 16) & 255, (values >> 8) & 255, values & 255], 1)
        if dec.unknown_colors == "error":
            worst = int(np.argmax(counts))
            more = f" and {len(values) - 1} other colours" if len(values) > 1 else ""
            raise DataError(f"{path}: colour {tuple(int(v) for v in colors[worst])} ({counts[worst]} px){more} is "
                            "not in the palette (anti-aliased or JPEG masks: set data.unknown_colors to nearest "
                            "or ignore)")
        out = s.values[pos]
        if dec.unknown_colors == "ignore":
            out[~found] = dec.labels.ignore_index
            dec.changed[IGNORED_COLOURS] += int(counts.sum())
            return out
        dist = np.linalg.norm(colors[:, None, :].astype(np.float64) - s.colors[None], axis=-1)  # (U, P)
        nearest, gap = dist.argmin(1), dist.min(1)
        far = gap > dec.tolerance
        if far.any():
            # the biggest far colours, each with its distance; and the classes that `ignore` would empty here
            worst = [int(k) for k in np.argsort(-np.where(far, counts, -1))[:3] if far[k]]
            each = ", ".join(f"{tuple(int(v) for v in colors[k])} ({counts[k]} px) {gap[k]:.0f} from {s.names[nearest[k]]}"
                             for k in worst)
            more = f" and {int(far.sum()) - len(worst)} more" if far.sum() > len(worst) else ""
            exact = np.bincount(out[found].ravel(), minlength=256)
            emptied = sorted({s.names[nearest[k]] for k in np.flatnonzero(far)
                              if s.names[nearest[k]] != "void" and exact[s.values[nearest[k]]] == 0})
            hint = (f"; data.unknown_colors: ignore would leave {', '.join(emptied)} with no pixel in this mask"
                    if emptied else "")
            raise DataError(f"{path}: colours beyond data.color_tolerance {dec.tolerance:g} of the palette: {each}{more}"
                            f"{hint}; raise data.color_tolerance past {float(gap[far].max()):.0f}, or fix the palette")
        out[~found] = s.values[nearest][inverse]
        dec.changed["colours outside the palette -> nearest palette colour"] += int(counts.sum())
        return out
