"""The data and augment sections: where the images and masks are, how masks decode, how samples are augmented."""
from __future__ import annotations

import os
from typing import Any, List, Literal, Optional, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .base import _Strict

# mask encodings of overlapping classes (model.output: multilabel): a multi-channel PNG / TIFF, channel k
# = class k, or one folder of binary masks per class under the masks folder
MULTILABEL_ENCODINGS = ("channels", "class_folders")


def _check_pairing(images: Optional[str], masks: Optional[str], list_file: Optional[str]) -> None:
    if list_file is None and (images is None or masks is None):
        raise ValueError("give either 'list' or both 'images' and 'masks'")
    if list_file is not None and (images is not None or masks is not None):
        raise ValueError("give either 'list' or 'images'/'masks', not both")


class SplitSource(_Strict):
    """One split of a folder dataset: an image and a mask folder, or a list file of 'image mask' lines.

    regions: an optional folder of per-image region masks (a field of view, or "don't care" areas): pixels
    outside the region are ignored in loss and metrics; see data.region_suffix and data.region_marks.
    With a list file, a third path on a line is that image's region mask.
    """

    images: Optional[str] = None  # the split's image folder, relative to data.root
    masks: Optional[str] = None  # the split's mask folder, relative to data.root
    regions: Optional[str] = None
    list: Optional[str] = None  # a list file of 'image mask' lines (a third path: the region mask) instead of folders

    @model_validator(mode="after")
    def _one_form(self) -> "SplitSource":
        _check_pairing(self.images, self.masks, self.list)
        if self.list is not None and self.regions is not None:
            raise ValueError("with 'list', give each image's region mask as a third path on its line, not 'regions'")
        return self


class RandomSplit(_Strict):
    """Split the train source at random when no val (or test) source is given."""

    # share of the train images drawn for validation when no val split is given
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.0, ge=0.0, lt=1.0)  # share drawn for testing when no test split is given
    seed: int = 0  # the draw's seed (split.json records what it drew)

    @model_validator(mode="after")
    def _sum(self) -> "RandomSplit":
        if self.val + self.test >= 1.0:
            raise ValueError("val + test must be below 1")
        return self


class SyntheticConfig(_Strict):
    """`data.kind: synthetic`: generated shapes on noise, for demos and tests."""
    num_train: int = Field(256, ge=1)  # images in the synthetic train split
    num_val: int = Field(64, ge=1)  # images in the synthetic validation split
    num_test: int = Field(64, ge=1)  # images in the synthetic test split
    size: tuple[int, int] = (96, 96)  # (height, width) of each image
    num_classes: int = Field(4, ge=2, le=6)  # classes, background included
    seed: int = 0  # the generator's seed


class StemPairing(_Strict):
    """Pairs image and mask files whose stems differ by a pattern (DRIVE: 21_training.tif + 21_manual1.gif):
    each regex must match a whole stem, and its one group is the key an image and its mask share. Files
    whose stems do not match are not images (or not masks)."""

    image: str  # a regex over image stems with one (group): the key an image shares with its mask
    mask: str  # a regex over mask stems with one (group)

    @field_validator("image", "mask")
    @classmethod
    def _one_group(cls, v: str) -> str:
        import re

        try:
            groups = re.compile(v).groups
        except re.error as exc:
            raise ValueError(f"{v!r} is not a valid regular expression ({exc})") from None
        if groups != 1:
            raise ValueError(f"{v!r} needs exactly one (group): the key an image and its mask share; it has {groups}")
        return v


class _MaskOptions(_Strict):
    """How masks are decoded beyond their encoding: the fields below, declared last in a folder dataset
    and in each merged source (so a resolved config lists them after the encoding).

    binary_threshold: binary masks are foreground where any channel is above it (in the mask's units). Unset:
    127 for 8-bit masks, any non-zero value for 16-bit ones (instance ids), {0,1} masks as they are; an 8-bit
    mask with flat regions of values below 127 is then refused (set the threshold, e.g. 0).
    binary_invert: for datasets whose class of interest is the dark one.
    unknown_colors: rgb masks' colours outside the palette are an error (default), or go to the nearest
    palette colour within color_tolerance (RGB distance; farther ones stay an error), or to ignore.
    """


    @model_validator(mode="after")
    def _one_pairing_rule(self) -> "_MaskOptions":
        if getattr(self, "mask_suffix", "") and getattr(self, "pair_stems", None) is not None:
            raise ValueError("give mask_suffix or pair_stems, not both")
        return self

    def pairing(self) -> dict[str, Any]:
        """Keyword arguments of pair_folders: how an image's mask is found."""
        p = self.pair_stems  # type: ignore[attr-defined]
        return {"mask_suffix": self.mask_suffix,  # type: ignore[attr-defined]
                "stems": (p.image, p.mask) if p is not None else None,
                "recursive": self.recursive}  # type: ignore[attr-defined]

    def mask_options(self) -> dict[str, Any]:
        """Keyword arguments of MaskDecoder."""
        return {"threshold": self.binary_threshold, "invert": self.binary_invert,
                "unknown_colors": self.unknown_colors, "tolerance": self.color_tolerance}


class SourceConfig(_MaskOptions):
    """One labelled source of a merged dataset (data.kind: merged) and the shared classes it annotates.

    `classes`: for a binary source, the shared name of its foreground; otherwise a mapping from the
    source's own class names to shared names ('background' allowed). Source classes left out of the
    mapping, and shared classes the source does not name, are unannotated: such pixels read as
    "background or an unannotated class".
    """

    name: str  # the source's name, in logs, split.json and the class counts
    split: Literal["train", "val", "test"] = "train"  # the split the source's images belong to
    images: Optional[str] = None  # the source's image folder, relative to data.root
    masks: Optional[str] = None  # the source's mask folder, relative to data.root
    mask_suffix: str = ""  # as data.mask_suffix
    # pair files in sub-folders too (Cityscapes: leftImg8bit/train/CITY/..., gtFine/train/CITY/...)
    recursive: bool = False
    pair_stems: Optional[StemPairing] = None  # as data.pair_stems
    # how the source's masks decode (binary: one class, its foreground)
    mask_encoding: Literal["index", "binary", "rgb"] = "binary"
    palette_file: Optional[str] = None  # rgb masks: the source's palette file
    class_names: Optional[List[str]] = None  # typing.List: `list` is a field here
    void_class: Optional[str] = "Void"  # as data.void_class
    binary_threshold: Optional[int] = Field(None, ge=0, le=65534)
    binary_invert: bool = False
    unknown_colors: Literal["error", "nearest", "ignore"] = "error"
    color_tolerance: float = Field(30.0, ge=0.0)  # as data.color_tolerance
    align: Literal["none", "resize_image_to_mask", "resize_mask_to_image"] = "none"  # as data.align
    classes: Union[str, dict[str, str]]
    # Optional fixed shared ids and colours for the classes this source names; sources must agree.
    ids: dict[str, int] = {}
    colors: dict[str, tuple[int, int, int]] = {}  # fixed shared colours (R, G, B) for the classes this source names
    list: Optional[str] = None  # a list file of 'image mask' lines instead of folders

    @model_validator(mode="after")
    def _form(self) -> "SourceConfig":
        _check_pairing(self.images, self.masks, self.list)
        if isinstance(self.classes, str) and self.mask_encoding != "binary":
            raise ValueError("a single class name fits a binary source; map the source's classes with a dict")
        if self.mask_encoding == "rgb" and self.palette_file is None:
            raise ValueError("mask_encoding 'rgb' needs palette_file (label_colors.txt or class_dict.csv)")
        return self

    def mapping(self) -> dict[str, str]:
        """Source class name -> shared class name."""
        return {"foreground": self.classes} if isinstance(self.classes, str) else dict(self.classes)


class DataConfig(_MaskOptions):
    """The `data` section: where images and masks are, how masks decode, the splits."""
    # folder: image and mask folders or list files under root; synthetic: built-in shapes (the demo); merged:
    # several single-class sources (data.sources) in one label space
    kind: Literal["folder", "synthetic", "merged"] = "synthetic"
    # the data folder; made absolute when the config is read, and recorded in split.json (--set data.root=NEW
    # relocates a run)
    root: str = "."
    # the train split's folders (images, masks, regions) or list file, relative to root
    train: Optional[SplitSource] = None
    # the validation split, as train; absent: data.random_split draws it from the train images
    val: Optional[SplitSource] = None
    test: Optional[SplitSource] = None  # the test split, as train; absent: data.random_split may draw it
    random_split: RandomSplit = RandomSplit()
    mask_suffix: str = ""  # a mask's file stem is its image's stem plus this (CamVid: _L)
    # pair files in sub-folders too (Cityscapes: leftImg8bit/train/CITY/..., gtFine/train/CITY/...)
    recursive: bool = False
    # images and masks whose stems differ: a regex for each with one (group), the key they share
    pair_stems: Optional[StemPairing] = None
    # region masks (train/val/test `regions:` folders) are found by the image's stem plus this suffix
    # (DRIVE: 21_training.tif -> 21_training_mask.gif with region_suffix: _mask)
    region_suffix: str = ""
    # what a region mask's non-zero pixels are: the pixels to score (a field of view) or the ones to ignore
    region_marks: Literal["valid", "ignore"] = "valid"
    # index / binary / rgb: one class per pixel; channels / class_folders: overlapping classes (one binary
    # mask per class, in a mask channel or a folder per class named as in class_names)
    mask_encoding: Literal["index", "binary", "rgb", "channels", "class_folders"] = "index"
    # rgb masks: the palette under root (label_colors.txt 'R G B Name', class_dict.csv or CVAT's labelmap.txt):
    # class names and colours
    palette_file: Optional[str] = None
    # the classes in index order (index and binary masks; rgb masks take them from the palette)
    class_names: Optional[list[str]] = None
    # the palette class whose colour decodes to ignore_index (not trained on or scored)
    void_class: Optional[str] = "Void"
    # the label of pixels neither trained on nor scored (multi-label masks need at least 2^classes)
    ignore_index: int = Field(255, ge=0, le=255)
    # index masks: mask value -> class id, class name or "ignore" (many to one; a value left out is refused),
    # inline or a YAML / JSON mapping or "value target" lines file under data.root (Cityscapes labelIds -> trainIds)
    label_map: Optional[Union[str, dict[int, Union[int, str]]]] = None
    # index masks whose 0 means "unlabelled" and classes start at 1 (ADE20K): 0 -> ignore, v -> v - 1
    reduce_zero_label: bool = False
    binary_threshold: Optional[int] = Field(None, ge=0, le=65534)
    binary_invert: bool = False
    unknown_colors: Literal["error", "nearest", "ignore"] = "error"
    # unknown_colors: nearest: the largest RGB distance at which a colour is taken as its nearest palette colour
    color_tolerance: float = Field(30.0, ge=0.0)
    # classes that may have no pixel in the train split (deliberately absent); any other class without one is
    # refused, as the model would never learn it (e.g. an `ignore` rule that took all of its pixels)
    absent_classes: list[str] = Field(default_factory=list)
    # images and masks of different sizes are refused (none), or the image is resized to its mask, or the mask
    # (nearest) to its image
    align: Literal["none", "resize_image_to_mask", "resize_mask_to_image"] = "none"
    in_channels: int = Field(3, ge=1, le=64)  # the model's input bands: 3 for RGB, 1 for grey, N for multi-band TIFFs
    # 16-bit and float images are divided by this (default: 65535 for 16-bit, 1 for float; 8-bit by 255):
    # one scale for the whole dataset, so absolute intensity survives; e.g. 4095 for 12-bit cameras
    image_max: Optional[float] = Field(None, gt=0)
    # a stored value that marks missing pixels (GeoTIFF nodata, e.g. -9999; .nan for float files): a pixel
    # holding it in any band is not trained on or scored, and its inputs take the band's mean (seglab init finds it)
    nodata: Optional[float] = None
    # larger image, mask and region files are refused as decompression bombs (12000x9000 = 108M fits)
    max_image_pixels: int = Field(200_000_000, ge=1)
    cache: bool = False  # keep decoded samples in memory after their first read (faster epochs, more memory)
    synthetic: SyntheticConfig = SyntheticConfig()
    # kind: merged: the sources, each with its own folders, mask format and the shared classes it annotates
    sources: Optional[list[SourceConfig]] = None
    # merged data: draw training samples from every source equally often, whatever their sizes
    balance_sources: bool = False

    @field_validator("label_map", mode="before")
    @classmethod
    def _label_map_once(cls, v):
        # before the keys become ints: two keys that are one value (10, '10', '010') would keep the last silently
        seen: dict[int, Any] = {}
        for key, target in (v.items() if isinstance(v, dict) else ()):
            text = str(key).strip()
            if isinstance(key, bool) or not text.isdigit():
                continue  # the schema's own check names it
            if int(text) in seen:
                raise ValueError(f"mask value {int(text)} is mapped twice ({seen[int(text)]!r} and {target!r}); keep one")
            seen[int(text)] = target
        return v

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, v: str, info: ValidationInfo) -> str:
        # absolute from the start: a run folder's config.yaml and split.json then work from any directory
        if info.data.get("kind") in ("folder", "merged"):
            return os.path.abspath(os.path.expanduser(v))
        return v

    @model_validator(mode="after")
    def _sources(self) -> "DataConfig":
        if self.kind == "folder" and self.train is None:
            raise ValueError("a folder dataset needs data.train")
        if self.kind == "merged":
            if not self.sources:
                raise ValueError("a merged dataset needs data.sources (one entry per labelled source)")
            names = [s.name for s in self.sources]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"source name {dup[0]!r} is used twice; names must be unique")
            if not any(s.split == "train" for s in self.sources):
                raise ValueError("no source has split 'train'")
        elif self.sources:
            raise ValueError("data.sources needs data.kind: merged")
        if self.mask_encoding in MULTILABEL_ENCODINGS:
            if self.kind != "folder":
                raise ValueError(f"mask_encoding '{self.mask_encoding}' (overlapping classes) needs data.kind: folder")
            if self.palette_file is not None:
                raise ValueError(f"mask_encoding '{self.mask_encoding}' takes class names from data.class_names, "
                                 "not a palette file; remove data.palette_file")
            if not self.class_names:
                raise ValueError(f"mask_encoding '{self.mask_encoding}' needs data.class_names: one name per "
                                 f"{'mask channel' if self.mask_encoding == 'channels' else 'class folder'}, in order")
        if self.mask_encoding == "rgb" and self.kind == "folder" and self.palette_file is None:
            raise ValueError("mask_encoding 'rgb' needs data.palette_file (label_colors.txt or class_dict.csv)")
        if self.label_map is not None or self.reduce_zero_label:
            key = "label_map" if self.label_map is not None else "reduce_zero_label"
            if self.label_map is not None and self.reduce_zero_label:
                raise ValueError("give label_map or reduce_zero_label, not both (a label_map can send 0 to ignore)")
            if self.kind != "folder" or self.mask_encoding != "index":
                raise ValueError(f"{key} remaps the values of index masks: it needs data.kind: folder and "
                                 f"mask_encoding: index (found {self.kind}, {self.mask_encoding})")
        return self


class AugmentConfig(_Strict):
    """The `augment` section: training geometry and colour, and the normalisation."""
    # (height, width) every training sample is resized to first; evaluation and prediction resize images to it
    # (the model's input size); null: native size
    resize: Optional[tuple[int, int]] = None
    scale: Optional[tuple[float, float]] = None  # random rescale factors [low, high], one per sample
    # (height, width) of a random crop after scaling; padded with the ignore label where the image is smaller
    crop: Optional[tuple[int, int]] = None
    # class-balanced crops (MMSegmentation's cat_max_ratio, e.g. 0.75): a crop in which one class covers this
    # share or more of the labelled pixels (or that holds one class only) is re-drawn, up to 10 draws
    cat_max_ratio: Optional[float] = Field(None, gt=0.0, le=1.0)
    hflip: float = Field(0.0, ge=0.0, le=1.0)  # probability of a horizontal flip
    rotate: float = Field(0.0, ge=0.0, le=180.0)  # largest random rotation in degrees (uncovered corners: ignore)
    # brightness, contrast and saturation jitter (hue a quarter of it), applied with probability 0.8
    color_jitter: float = Field(0.0, ge=0.0, le=1.0)
    # one value per input channel (data.in_channels); default ImageNet's for 3 channels, 0.5 / 0.25 otherwise
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None  # one value per input channel, as mean

    @field_validator("scale")
    @classmethod
    def _scale(cls, v):
        if v is not None and not (0 < v[0] <= v[1]):
            raise ValueError("scale must be [low, high] with 0 < low <= high")
        return v

    @model_validator(mode="after")
    def _fixed_size(self) -> "AugmentConfig":
        if self.scale is not None and self.crop is None and tuple(self.scale) != (1.0, 1.0):
            raise ValueError("scale: random scaling changes the image size; set augment.crop [h, w] so batches stack")
        if self.cat_max_ratio is not None and self.crop is None:
            raise ValueError("cat_max_ratio: balances random crops; set augment.crop [h, w] as well")
        return self
