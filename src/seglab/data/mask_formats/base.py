"""A mask format's interface, the registry of formats, and MaskDecoder, which decodes one mask file with the
format a dataset names (`data.mask_encoding`) and the decoding options shared by every format."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
from PIL import Image

from ...errors import DataError
from ..labels import MULTILABEL_PALETTE, LabelSpace, default_palette
from ..masks import DEFAULT_MAX_IMAGE_PIXELS, _open
from ..multilabel import MAX_MULTILABEL_CLASSES

if TYPE_CHECKING:
    from ...config.data import DataConfig


class MaskFormat:
    """One way masks encode classes. A subclass in its own module of data/mask_formats/, registered with
    `@register_mask_format`, gives its decoder and, where it differs from the default, its label-space rule,
    its pairing of images with masks and its hint for a split whose masks all read as one class."""

    name: str = ""
    multilabel: bool = False  # one bit per overlapping class in the decoded map (data/multilabel.py)

    def prepare(self, dec: "MaskDecoder") -> Any:
        """Per-decoder set-up from its label space (e.g. rgb's PaletteLookup), kept as `dec.prepared`; None
        for a format that needs none."""
        return None

    def decode(self, dec: "MaskDecoder", path: Path) -> np.ndarray:
        """One mask file -> (H, W) uint8 class ids and `ignore_index` (or a packed multi-label map)."""
        raise NotImplementedError

    def label_space(self, class_names: Optional[list[str]], ignore_index: int) -> LabelSpace:
        """The label space of a dataset without a palette file."""
        if class_names is None:
            raise DataError(f"{self.name} masks need data.class_names or data.palette_file")
        return LabelSpace(list(class_names), default_palette(len(class_names)), ignore_index)

    def mask_folder(self, masks: Path, class_names: Sequence[str]) -> Path:
        """The folder whose files pair with the images by name."""
        return masks

    def one_class_hint(self, where: str, ignored_share: float, data: "DataConfig") -> Optional[str]:
        """What to check when every labelled pixel of a split reads as one class (`ignored_share`: the share of
        pixels that decoded to the ignore value); None: the generic advice."""
        return None


MASK_FORMATS: dict[str, MaskFormat] = {}


def register_mask_format(cls: type[MaskFormat]) -> type[MaskFormat]:
    """Class decorator: make `cls.name` a value of data.mask_encoding."""
    if cls.name in MASK_FORMATS:
        raise ValueError(f"mask format '{cls.name}' registered twice")
    MASK_FORMATS[cls.name] = cls()
    return cls


def get_mask_format(name: str) -> MaskFormat:
    """The registered format `name`; a one-line error listing the others otherwise."""
    if name not in MASK_FORMATS:
        raise DataError(f"data.mask_encoding: unknown mask format '{name}'; available: {', '.join(MASK_FORMATS)}")
    return MASK_FORMATS[name]


def list_mask_formats() -> list[str]:
    """The registered mask formats, in registration order."""
    return list(MASK_FORMATS)


class MaskDecoder:
    """Decode one mask file to an (H, W) uint8 map of class indices and `ignore_index`, by the registered format
    `encoding` (data/mask_formats/: index, binary, rgb, channels, class_folders).

    remap: raw index -> class index or ignore (e.g. CamVid's 11 = Void -> 255); remap_source: where a complete
    remap comes from (values outside it are refused). threshold / invert: the binary rules (data.binary_*).
    unknown_colors: what an rgb mask's colour outside the palette becomes: 'error', 'nearest' (within
    `tolerance`, RGB distance) or 'ignore'. `changed` counts, per rule, the pixels a fallback rule decoded
    (what `seglab inspect` reports).
    """

    def __init__(self, encoding: str, labels: LabelSpace, remap: dict[int, int] | None = None, *,
                 threshold: int | None = None, invert: bool = False, unknown_colors: str = "error",
                 tolerance: float = 30.0, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 remap_source: str | None = None) -> None:
        self.encoding = encoding
        self.format = get_mask_format(encoding)
        self.remap_source = remap_source
        self.max_pixels = max_pixels
        self.labels = labels
        self.remap = dict(remap or {})
        self.threshold, self.invert = threshold, invert
        self.unknown_colors, self.tolerance = unknown_colors, tolerance
        self.changed: Counter[str] = Counter()
        self.prepared: Any = self.format.prepare(self)  # the format's own typed set-up (MaskFormat.prepare)

    def open(self, path: Path) -> Image.Image:
        """The mask file upright (counting the pixels its EXIF orientation turned)."""
        im = _open(path, self.max_pixels)
        if im.info["seglab_orientation"] > 1:
            self.changed["mask pixels turned upright by their EXIF orientation"] += im.width * im.height
        return im

    def __call__(self, path: Path) -> np.ndarray:
        return self.format.decode(self, path)


class OverlappingClassesFormat(MaskFormat):
    """Formats of overlapping classes: one binary mask per class, packed one bit per class."""

    multilabel = True
    per_class = "mask"  # what holds one class: a mask channel, a class folder

    def label_space(self, class_names: Optional[list[str]], ignore_index: int) -> LabelSpace:
        if not class_names:
            raise DataError(f"mask_encoding '{self.name}' needs data.class_names: one name per {self.per_class}, "
                            "in order")
        n = min(len(class_names), MAX_MULTILABEL_CLASSES)
        return LabelSpace(list(class_names), MULTILABEL_PALETTE[:n] + default_palette(len(class_names))[n:],
                          ignore_index, multilabel=True)
