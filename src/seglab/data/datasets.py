"""Datasets built from the config: label space, splits, sample loading, checks and samplers."""
from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..config import AugmentConfig, DataConfig, SourceConfig, SplitSource
from ..errors import ConfigError, DataError
from .folder import pair_folders, read_list_file
from .label_map import read_label_map, resolve_label_map, zero_label_remap
from .labels import LabelSpace
from .mask_formats import build_label_space
from .mask_formats import MaskDecoder, get_mask_format
from .masks import NODATA_MARKERS, read_image, read_region
from .merge import MergedSource, build_merged, source_index
from .multilabel import class_pixel_counts
from .splits import SPLIT_NAMES, Item, Sample, Split, SyntheticItem, random_split
from .synthetic import make_synthetic_sample, synthetic_labels
from .transforms import build_train_transform, prepare_eval_image, to_tensor

log = logging.getLogger("seglab")

# images with a side below this are refused (a 1x1 thumbnail or an empty crop, not a training image)
MIN_IMAGE_SIDE = 4


def resolve_path(root: Path, value: str) -> Path:
    """`value` as given when absolute, else under `root`."""
    p = Path(value)
    return p if p.is_absolute() else root / p


def data_root(data: DataConfig) -> Path:
    """The data section's root folder (absolute)."""
    root = Path(data.root)
    if data.kind in ("folder", "merged") and not root.is_dir():
        raise ConfigError(f"data.root: folder '{data.root}' not found (resolved to {root.resolve()})")
    return root


def build_labels(data: DataConfig) -> tuple[LabelSpace, dict[int, int]]:
    """The label space and raw-index remap of the configured dataset."""
    if data.kind == "synthetic":
        return synthetic_labels(data.synthetic.num_classes), {}
    if data.kind == "merged":
        return build_merged(data, data_root(data))[0], {}
    palette = resolve_path(data_root(data), data.palette_file) if data.palette_file else None
    labels, remap = build_label_space(
        encoding=data.mask_encoding,
        palette_file=palette,
        class_names=data.class_names,
        void_class=data.void_class,
        ignore_index=data.ignore_index,
    )
    if data.reduce_zero_label:
        return labels, zero_label_remap(labels.ignore_index)
    if isinstance(data.label_map, str):
        path = resolve_path(data_root(data), data.label_map)
        return labels, resolve_label_map(read_label_map(path), labels, str(path))
    if data.label_map is not None:  # replaces the palette's own remap (its Void row) as a whole
        return labels, resolve_label_map(dict(data.label_map), labels, "data.label_map")
    return labels, remap


def _read_source(src: Union[SplitSource, SourceConfig], root: Path, pairing: dict[str, Any],
                 problems: Optional[list[str]], notes: Optional[list[str]] = None,
                 encoding: str = "index", class_names: Sequence[str] = ()) -> list[Sample]:
    if src.list is not None:
        return read_list_file(resolve_path(root, src.list), root)
    regions = getattr(src, "regions", None)  # folder datasets' splits only
    if regions is not None:
        pairing = {**pairing, "regions": resolve_path(root, regions)}
    masks = get_mask_format(encoding).mask_folder(resolve_path(root, src.masks), class_names)
    return pair_folders(resolve_path(root, src.images), masks, problems=problems, notes=notes, **pairing)


def _merged_split(data: DataConfig, root: Path, problems: Optional[list[str]],
                  notes: Optional[list[str]]) -> Split:
    """Given-split sources are used whole; each train source is split at random on its own."""
    assert data.sources
    rs = data.random_split
    has = {name: any(s.split == name for s in data.sources) for name in ("val", "test")}
    if not has["val"] and rs.val == 0:
        raise ConfigError("data.random_split.val: 0 leaves no validation images and no source has split: val; "
                          "set a fraction (e.g. 0.15) or give a val source")
    out = Split("merged")
    for src in data.sources:
        try:
            items = [Sample(s.image, s.mask, src.name) for s in _read_source(src, root, src.pairing(), problems, notes,
                                                                         src.mask_encoding)]
        except DataError as exc:
            raise DataError(f"data.sources[{src.name}]: {exc}") from None
        if src.split != "train":
            getattr(out, src.split).extend(items)
            continue
        parts = random_split(items, val=0.0 if has["val"] else rs.val, test=0.0 if has["test"] else rs.test,
                             seed=rs.seed)
        for name in SPLIT_NAMES:
            getattr(out, name).extend(parts[name])
    return out


def build_split(data: DataConfig, problems: Optional[list[str]] = None,
                notes: Optional[list[str]] = None) -> Split:
    """Resolve train / val / test items: given folders or lists, else a seeded random split.

    Images without masks raise, or are left out and listed in `problems` when it is given; masks
    without images are left out and listed in `notes` (logged as warnings without it).
    """
    if data.kind == "synthetic":
        s = data.synthetic
        return Split("synthetic", *([SyntheticItem(name, i) for i in range(n)]
                                    for name, n in zip(SPLIT_NAMES, (s.num_train, s.num_val, s.num_test))))
    root = data_root(data)
    if data.kind == "merged":
        return _merged_split(data, root, problems, notes)
    assert data.train is not None
    pairing = {**data.pairing(), "region_suffix": data.region_suffix}
    fmt = (data.mask_encoding, data.class_names or [])
    train = _read_source(data.train, root, pairing, problems, notes, *fmt)
    val = _read_source(data.val, root, pairing, problems, notes, *fmt) if data.val else None
    test = _read_source(data.test, root, pairing, problems, notes, *fmt) if data.test else None
    rs = data.random_split
    if val is None:
        if rs.val == 0:
            raise ConfigError("data.random_split.val: 0 leaves no validation images and no data.val is given; "
                              "set a fraction (e.g. 0.15) or give data.val")
        try:
            parts = random_split(train, val=rs.val, test=0.0 if test is not None else rs.test, seed=rs.seed)
        except DataError as exc:
            raise DataError(f"{_source_name(data.train, root)}: {exc}; list more samples there, or give data.val") from None
        train, val = parts["train"], parts["val"]
        test = test if test is not None else parts["test"]
    return Split("folder", list(train), list(val), list(test or []))


def _source_name(src: SplitSource, root: Path) -> str:
    """'data.train (list /data/train.txt)' or 'data.train (images /data/images)': where a split's samples came from."""
    return (f"data.train (list {resolve_path(root, src.list)})" if src.list is not None
            else f"data.train (images {resolve_path(root, src.images)})")


def _label_map_name(data: DataConfig) -> Optional[str]:
    if data.label_map is None:
        return None
    return f"data.label_map ({data.label_map})" if isinstance(data.label_map, str) else "data.label_map"


class SampleReader:
    """Reads one split's aligned samples (image (H, W, C), mask (H, W) uint8 class ids) from their files or the
    synthetic generator; datasets and torch DataLoaders are built on top of it."""

    def __init__(self, data: DataConfig, labels: LabelSpace, remap: dict[int, int], split: str, items: list[Item],
                 sources: Optional[list[MergedSource]] = None):
        self.data = data
        self.split = split
        self.items = items
        self.labels = labels
        self.decoder = (MaskDecoder(data.mask_encoding, labels, remap, **data.mask_options(),
                                    max_pixels=data.max_image_pixels,
                                    remap_source=_label_map_name(data))
                        if data.kind != "merged" else None)
        self.sources = sources or []
        # per item: index into `sources` (merged data) or -1
        self.source_of = [source_index(self.sources, it.source, f"{split} split") if isinstance(it, Sample) and it.source
                          else -1 for it in items]
        self._all = np.ones(labels.num_classes, bool)
        self.image_kinds: Counter = Counter()  # files read per kind (RGB, L, P, RGBA, 16-bit, TIFF bands)
        self.image_peaks: dict[str, int] = {}  # the largest raw value per 16-bit (or wider) integer kind
        self.image_lows: dict[str, float] = {}  # the smallest raw value per non-8-bit kind (nodata markers show)
        self.region_ignored: Counter = Counter()  # labelled pixels that region masks or data.nodata turned to ignore
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def decoders(self) -> list[MaskDecoder]:
        return [self.decoder] if self.decoder is not None else [s.decoder for s in self.sources]

    def labelled(self, i: int) -> np.ndarray:
        """(K,) bool: the classes item i's source annotates (all of them outside merged data)."""
        k = self.source_of[i]
        return self.sources[k].labelled if k >= 0 else self._all

    def align_rule(self, i: int) -> str:
        k = self.source_of[i]
        return self.sources[k].config.align if k >= 0 else self.data.align

    def __len__(self) -> int:
        return len(self.items)

    def name(self, i: int) -> str:
        it = self.items[i]
        if isinstance(it, SyntheticItem):
            return f"{it.stream}/{it.index:05d}"
        return Path(it.image).name

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i in self._cache:
            return self._cache[i]
        it = self.items[i]
        if isinstance(it, SyntheticItem):
            s = self.data.synthetic
            pair = make_synthetic_sample(
                split=it.stream, index=it.index, size=tuple(s.size), num_classes=s.num_classes, seed=s.seed
            )
        else:
            pair = self._load_files(it, i)
        # read-only, cached or not: a transform or tensor conversion that wrote into a sample would corrupt every
        # later read of a cached one (and behave differently with and without data.cache)
        for a in pair:
            a.setflags(write=False)
        if self.data.cache:
            self._cache[i] = pair
        return pair

    def _load_files(self, s: Sample, i: int) -> tuple[np.ndarray, np.ndarray]:
        image = read_image(Path(s.image), self.data.in_channels, self.data.image_max, self.image_kinds,
                           self.data.max_image_pixels, self.image_peaks, self.data.nodata, self.image_lows)
        if min(image.shape[:2]) < MIN_IMAGE_SIDE:
            raise DataError(f"{s.image}: {image.shape[1]}x{image.shape[0]} pixels, too small to segment (sides below "
                            f"{MIN_IMAGE_SIDE}); remove it from the dataset")
        k = self.source_of[i]
        mask = self.sources[k].decode(Path(s.mask)) if k >= 0 else self.decoder(Path(s.mask))
        if s.region:
            mask = self._apply_region(mask, s)
        (ih, iw), (mh, mw) = image.shape[:2], mask.shape
        if (ih, iw) != (mh, mw):
            rule = self.align_rule(i)
            if rule == "none":
                key = f"data.sources[{self.sources[k].name}].align" if k >= 0 else "data.align"
                raise DataError(
                    f"{s.image} is {iw}x{ih} but its mask {s.mask} is {mw}x{mh}; "
                    f"set {key} to resize_image_to_mask or resize_mask_to_image"
                )
            if rule == "resize_image_to_mask":
                interp = cv2.INTER_AREA if mh * mw < ih * iw else cv2.INTER_LINEAR
                image = cv2.resize(image, (mw, mh), interpolation=interp)
                image = image[..., None] if image.ndim == 2 else image
            else:
                mask = cv2.resize(mask, (iw, ih), interpolation=cv2.INTER_NEAREST)
        if image.dtype != np.uint8 and self.data.nodata is not None:
            mask = self._ignore_missing(image, mask)
        return image, mask

    def _ignore_missing(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Pixels without data (data.nodata, NaN in the read image) become the ignore value: not trained on or
        scored; labelled ones are counted."""
        missing = np.isnan(image).any(-1)
        if not missing.any():
            return mask
        ignore = self.labels.ignore_index
        self.region_ignored["pixels without data (data.nodata) -> ignore"] += int((missing & (mask != ignore)).sum())
        out = mask.copy()
        out[missing] = ignore
        return out


    def _apply_region(self, mask: np.ndarray, s: Sample) -> np.ndarray:
        """Pixels outside the image's region mask become the ignore value (so loss and metrics skip them)."""
        keep = read_region(Path(s.region), self.data.region_marks, self.data.max_image_pixels)
        if keep.shape != mask.shape:
            raise DataError(f"{s.region}: region mask is {keep.shape[1]}x{keep.shape[0]} but the mask {s.mask} is "
                            f"{mask.shape[1]}x{mask.shape[0]}; region masks must have their mask's size")
        ignore = self.labels.ignore_index
        drop = ~keep & (mask != ignore)
        self.region_ignored["pixels outside the region masks -> ignore"] += int(drop.sum())
        out = mask.copy()
        out[~keep] = ignore
        return out


@dataclass
class SplitStats:
    """One split's counts from `check_split`: samples, sizes, class pixels, what decoding changed."""
    counts: np.ndarray  # pixels per class
    image_pixels: np.ndarray  # pixels of the images in which each class appears
    sizes: list[tuple[int, int]]  # (H, W) per readable sample
    ignored: int = 0
    changed: dict[str, int] = field(default_factory=dict)  # pixels decoded by a fallback rule, per rule
    image_kinds: dict[str, int] = field(default_factory=dict)  # images read per file kind
    # per band: sum and sum of squares of the input values (8-bit / 255, others as read and scaled), pixel count
    band_sums: Optional[np.ndarray] = None
    band_squares: Optional[np.ndarray] = None
    band_pixels: int = 0

    def add_image(self, image: np.ndarray) -> None:
        x = image.reshape(-1, image.shape[-1] if image.ndim == 3 else 1).astype(np.float64)
        if image.dtype == np.uint8:
            x /= 255.0
        else:  # pixels without data (data.nodata: NaN) are not inputs
            x = x[~np.isnan(x).any(1)]
        sums, squares = x.sum(0), (x * x).sum(0)
        if self.band_sums is None or self.band_sums.shape != sums.shape:
            self.band_sums, self.band_squares, self.band_pixels = sums, squares, 0
        else:
            self.band_sums, self.band_squares = self.band_sums + sums, self.band_squares + squares
        self.band_pixels += len(x)


def _changed_total(loader: "SampleReader") -> Counter:
    total: Counter = Counter(loader.region_ignored)
    for d in loader.decoders():
        total.update(d.changed)
    return total


def image_range_notes(loader: "SampleReader") -> list[str]:
    """Warnings for integer images wider than 8 bits whose values use a small part of the range they are divided
    by (8-bit or 12-bit data in 16-bit files): nearly black pictures and a network input squeezed near 0."""
    if loader.data.image_max is not None:
        return []
    notes = []
    for kind, peak in sorted(loader.image_peaks.items()):
        for bits, top in ((8, 255), (12, 4095)):
            if peak <= top:
                notes.append(f"{loader.split} split: its '{kind}' images hold values up to {peak} only ({bits}-bit data "
                             f"in wider files); divided by 65535 they fill 1/{65535 // top} of the input range and look "
                             f"black: set data.image_max: {top}")
                break
    return notes


def nodata_notes(loader: "SampleReader") -> list[str]:
    """Warnings for images whose smallest value is a usual nodata marker (-9999, ...) while data.nodata is
    unset: those pixels would be trained on and scored as if they held data."""
    if loader.data.nodata is not None:
        return []
    return [f"{loader.split} split: its '{kind}' images hold {low:g}, a usual mark of pixels without data, which would "
            f"be trained on and scored as a value: set data.nodata: {low:g} (seglab init finds it)"
            for kind, low in sorted(loader.image_lows.items()) if low in NODATA_MARKERS]


def input_notes(loader: "SampleReader", stats: SplitStats, mean: Sequence[float], std: Sequence[float]) -> list[str]:
    """What train logs and inspect lists about a split's image values: data.nodata and data.image_max first
    (the specific fixes), else, for the train split, inputs far from zero mean / unit variance."""
    specific = nodata_notes(loader) + image_range_notes(loader)
    return specific or (input_scale_notes(loader.split, stats, mean, std) if loader.split == "train" else [])


def input_scale_notes(split: str, stats: SplitStats, mean: Sequence[float], std: Sequence[float]) -> list[str]:
    """A warning when the split's inputs, normalised by augment.mean / std, are far from zero mean and unit
    variance in some band (raw-valued or multi-band data on the 0.5 / 0.25 default): a network learns little."""
    if stats.band_sums is None or not stats.band_pixels or len(mean) != len(stats.band_sums):
        return []
    m = stats.band_sums / stats.band_pixels
    sd = np.sqrt(np.maximum(stats.band_squares / stats.band_pixels - m * m, 0))
    z_mean, z_std = (m - np.asarray(mean)) / np.asarray(std), sd / np.asarray(std)
    bad = [k for k in range(len(m)) if abs(z_mean[k]) > 3 or z_std[k] > 10 or z_std[k] < 0.2]
    if not bad:
        return []
    k = bad[0]
    fmt = lambda v: "[" + ", ".join(f"{x:.4g}" for x in v) + "]"  # noqa: E731
    return [f"{split} split: normalised by augment.mean / augment.std, its inputs have mean {z_mean[k]:.3g} and std "
            f"{z_std[k]:.3g} in band {k} ({len(bad)} of {len(m)} bands far from 0 / 1): set augment.mean: {fmt(m)} and "
            f"augment.std: {fmt(np.maximum(sd, 1e-6))} (this split's own, as seglab init writes them)"]


IGNORE_RULE_SHARE = 0.01  # a fallback rule may turn this share of a split's pixels to ignore, no more


def _dropped_to_ignore(loader: "SampleReader", stats: SplitStats) -> Optional[str]:
    """data.unknown_colors: ignore taking more than 1% of the split's pixels (region masks' ignore is by design)."""
    total = sum(h * w for h, w in stats.sizes)
    from .mask_formats.rgb import IGNORED_COLOURS

    for rule, px in stats.changed.items():
        if rule == IGNORED_COLOURS and total and px / total > IGNORE_RULE_SHARE:
            empty = [n for n, c in zip(loader.labels.names, stats.counts) if c == 0]
            lost = f"; classes left with no pixel: {', '.join(empty)}" if empty else ""
            return (f"{loader.split} split: {rule} took {100 * px / total:.1f}% of its pixels ({px:,} px){lost}: more "
                    f"than {100 * IGNORE_RULE_SHARE:g}% is not noise; set data.unknown_colors: nearest with a "
                    "data.color_tolerance that reaches the colours (the refusal without ignore names how far they are), "
                    "or fix data.palette_file")
    return None


def _absent_classes(loader: "SampleReader", stats: SplitStats) -> Optional[str]:
    """Classes without a pixel in the train split (other than data.absent_classes): never learnt."""
    labels, data = loader.labels, loader.data
    if loader.split != "train" or labels.multilabel or data.kind != "folder" or not stats.sizes:
        return None
    allowed = {n.lower() for n in data.absent_classes}
    unknown = sorted(allowed - {n.lower() for n in labels.names})
    if unknown:
        return (f"data.absent_classes: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not among the "
                f"classes ({', '.join(labels.names)})")
    empty = [n for n, c in zip(labels.names, stats.counts) if c == 0 and n.lower() not in allowed]
    if not empty:
        return None
    return (f"train split: class{'es' if len(empty) > 1 else ''} {', '.join(empty)} "
            f"ha{'ve' if len(empty) > 1 else 's'} no pixel in its {len(stats.sizes)} masks, so the model would never "
            "learn them; check the masks, data.class_names and the palette, or list deliberately absent classes in "
            "data.absent_classes")


def label_problems(loader: "SampleReader", stats: SplitStats) -> list[str]:
    """What makes a decoded split unusable though every file decoded: all labelled pixels in one class
    (e.g. 0/255 binary masks read as index masks, where 255 is the ignore value)."""
    labels, data = loader.labels, loader.data
    present = np.flatnonzero(stats.counts)
    dropped = _dropped_to_ignore(loader, stats)
    if dropped:
        return [dropped]
    absent = _absent_classes(loader, stats)
    if absent and len(present) > 1:
        return [absent]
    if labels.multilabel:  # overlapping classes: one class alone is a fine split; no class at all is not
        return [] if not stats.sizes or len(present) else [
            f"{loader.split} split: none of its {len(stats.sizes)} images has a pixel of any class "
            f"({', '.join(labels.names)}): every mask reads as empty; check data.binary_threshold, "
            "data.binary_invert and data.mask_encoding"]
    if not stats.sizes or len(present) > 1 or data.kind == "synthetic":
        return []
    n, total = len(stats.sizes), sum(h * w for h, w in stats.sizes)
    if not len(present):
        return [f"{loader.split} split: every pixel of its {n} masks is the ignore value {labels.ignore_index} "
                "(void or outside a region mask): nothing to learn from or score; check data.void_class, "
                "data.mask_encoding and the masks"]
    only = f"class {present[0]} ('{labels.names[present[0]]}')"
    where = f"{loader.split} split: every labelled pixel of its {n} masks is {only}"
    hint = get_mask_format(data.mask_encoding).one_class_hint(where, stats.ignored / total, data) \
        if data.kind == "folder" else None
    if hint:
        return [hint]
    return [f"{where}: check data.mask_encoding, data.class_names or the palette file"]


def check_split(loader: SampleReader, problems: Optional[list[str]] = None) -> SplitStats:
    """Decode every pair and count class pixels.

    A bad file raises, or is skipped and described in `problems` when a list is given.
    """
    n = loader.labels.num_classes
    stats = SplitStats(np.zeros(n, np.int64), np.zeros(n, np.int64), [])
    before, kinds_before = _changed_total(loader), Counter(loader.image_kinds)
    from tqdm import tqdm

    # a bar on a terminal only (disable=None), gone when done: a large split takes minutes to decode
    for i in tqdm(range(len(loader)), desc=f"decoding the {loader.split} split", unit="file", leave=False,
                  disable=None, mininterval=0.5):
        try:
            image, mask = loader.load(i)
        except DataError as exc:
            if problems is None:
                raise
            problems.append(str(exc))
            continue
        hist = np.bincount(mask.ravel(), minlength=256)
        present = class_pixel_counts(hist, n) if loader.labels.multilabel else hist[:n]
        stats.counts += present
        stats.image_pixels += np.where(present > 0, mask.size, 0)
        stats.ignored += int(hist[loader.labels.ignore_index])
        stats.sizes.append(mask.shape)
        stats.add_image(image)
    stats.changed = {k: v for k, v in (_changed_total(loader) - before).items() if v}
    stats.image_kinds = dict(Counter(loader.image_kinds) - kinds_before)
    return stats


def init_loader_worker(worker_id: int) -> None:
    """A DataLoader worker decodes and augments on one thread (torch's and OpenCV's): N workers then use N
    cores instead of N x cores threads that slow each other down."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


class TrainDataset(Dataset):
    """Augmented training samples; a key (index, seed) makes the augmentation reproducible."""

    def __init__(self, loader: SampleReader, augment: AugmentConfig):
        self.loader = loader
        self.transform = build_train_transform(
            augment, loader.labels.ignore_index, loader.labels.num_classes if loader.labels.multilabel else 0)
        self.mean, self.std = augment.mean, augment.std

    def __len__(self) -> int:
        return len(self.loader)

    def __getitem__(self, key: Union[int, tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> image (C, H, W) float, mask (H, W) long, annotated classes (K,) bool."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, mask = self.loader.load(index)
        if seed is not None:
            self.transform.set_random_seed(seed)
        out = self.transform(image=image, mask=mask)
        return (to_tensor(out["image"], self.mean, self.std), torch.tensor(np.ascontiguousarray(out["mask"]), dtype=torch.long),
                torch.from_numpy(self.loader.labelled(index).copy()))


class EvalDataset(Dataset):
    """Deterministic samples: the image at the model's input size, the mask at full resolution."""

    def __init__(self, loader: SampleReader, augment: AugmentConfig, input_size: Optional[Sequence[int]] = None):
        """`input_size`: the model's (H, W) input, when it is not augment.resize (a checkpoint's)."""
        self.loader = loader
        self.input_size = tuple(input_size) if input_size is not None else augment.resize
        self.mean, self.std = augment.mean, augment.std

    def __len__(self) -> int:
        return len(self.loader)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.loader.load(index)
        return {
            "image": prepare_eval_image(image, self.input_size, self.mean, self.std),
            "mask": torch.tensor(np.ascontiguousarray(mask), dtype=torch.long),
            "raw": image,
            "index": index,
            "name": self.loader.name(index),
            "labelled": torch.from_numpy(self.loader.labelled(index).copy()),
        }


def collate_eval(batch: Any) -> Any:
    """A DataLoader collate that keeps items as they are (images of different sizes are not stacked)."""
    return batch


class EpochSampler(Sampler):
    """Yields (index, augmentation seed); order and seeds depend only on (seed, epoch).

    With `num_replicas` > 1 each rank takes every num_replicas-th item of the same permutation.
    With `groups` (a group id per item, e.g. its source), each of the n draws picks a group uniformly
    and then the next item of that group's own shuffled order, so small groups are seen as often as big ones.
    """

    def __init__(self, n: int, *, seed: int, shuffle: bool = True, rank: int = 0, num_replicas: int = 1,
                 groups: Optional[Sequence[int]] = None):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.num_replicas = rank, num_replicas
        self.groups = list(groups) if groups is not None else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        """The epoch's whole order, padded to a multiple of num_replicas (every rank sees the same list)."""
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        if self.groups is not None:
            return self._balanced(g)
        order = torch.randperm(self.n, generator=g).tolist() if self.shuffle else list(range(self.n))
        total = -(-self.n // self.num_replicas) * self.num_replicas
        return order + order[: total - len(order)]

    def _balanced(self, g: torch.Generator) -> list[int]:
        members: dict[int, list[int]] = {}
        for i, grp in enumerate(self.groups or []):
            members.setdefault(grp, []).append(i)
        keys = sorted(members)
        queues = {k: [members[k][j] for j in torch.randperm(len(members[k]), generator=g).tolist()] for k in keys}
        pos = {k: 0 for k in keys}
        total = -(-self.n // self.num_replicas) * self.num_replicas
        order = []
        for pick in torch.randint(len(keys), (total,), generator=g).tolist():
            k = keys[pick]
            order.append(queues[k][pos[k] % len(queues[k])])
            pos[k] += 1
        return order

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # Seeds belong to positions in the whole order, so N ranks together draw exactly the samples and
        # augmentations that one process would.
        rng = random.Random(self.seed * 7919 + self.epoch)
        pairs = [(i, rng.randrange(2**31)) for i in self._order()]
        yield from pairs[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        return -(-self.n // self.num_replicas)


@dataclass
class DataBundle:
    """The resolved data: label space, one SampleReader per split, the merged sources if any."""
    labels: LabelSpace
    split: Split
    readers: dict[str, SampleReader]  # per split: decodes its samples (not a torch DataLoader)
    sources: list[MergedSource] = field(default_factory=list)
    train_counts: Optional[np.ndarray] = None
    train_image_pixels: Optional[np.ndarray] = None


def build_data(data: DataConfig, augment: AugmentConfig, split: Optional[Split] = None,
               check: Sequence[str] = ()) -> DataBundle:
    """Labels and per-split sample readers of the `data` section; `split` (from split.json) replaces resolving
    its sources; `augment` (the normalisation and input size) only for what checking a split says.

    Splits named in `check` are decoded in full up front so a bad file fails before any run output.
    """
    sources: list[MergedSource] = []
    if data.kind == "merged":
        labels, sources = build_merged(data, data_root(data))
        remap: dict[int, int] = {}
    else:
        labels, remap = build_labels(data)
    split = split if split is not None else build_split(data)
    readers = {}
    for name in split.present():
        readers[name] = SampleReader(data, labels, remap, name, split.items(name), sources)
    bundle = DataBundle(labels, split, readers, sources)
    for name in check:
        if name not in readers:
            raise DataError(f"the {name} split is empty")
        stats = check_split(readers[name])
        refused = label_problems(readers[name], stats)
        if refused:
            raise DataError(refused[0])
        for note in input_notes(readers[name], stats, augment.mean, augment.std):
            log.warning(note)
        sizes = sorted(set(stats.sizes))
        if name == "train" and len(sizes) > 1 and augment.resize is None and augment.crop is None:
            shown = ", ".join(f"{w}x{h}" for h, w in sizes[:3])
            raise DataError(f"the train split's masks come in {len(sizes)} sizes ({shown}{' ...' if len(sizes) > 3 else ''}) "
                            "and a batch needs one: set augment.resize or augment.crop")
        if name == "train":
            bundle.train_counts, bundle.train_image_pixels = stats.counts, stats.image_pixels
    return bundle
