"""What a data folder holds, found by looking (`seglab init`): where images and masks are and how they pair,
the given splits, palette files, the mask format from the pixel values of sampled masks, and the images'
channels, bit depth and sizes. Where the files leave a choice open, it raises one line that names the option
that settles it, instead of guessing."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import DataError
from .labels import read_palette_file
from .masks import DEFAULT_MAX_IMAGE_PIXELS, IMAGE_EXTENSIONS, NODATA_MARKERS, _open, _read_tiff, missing_pixels
from .splits import random_split_sizes

SPLITS = {"train": ("train", "training", "trn"), "val": ("val", "valid", "validation", "dev"),
          "test": ("test", "testing", "tst")}
IMAGE_DIRS = ("images", "image", "imgs", "img", "rgb", "input", "inputs", "jpegimages", "x")
MASK_DIRS = ("masks", "mask", "labels", "label", "annotations", "annotation", "annot", "gt", "groundtruth",
             "ground_truth", "segmentations", "segmentationclass", "figure_ground", "y", "targets")
MASK_SUFFIXES = ("_mask", "_masks", "_L", "_label", "_labels", "_gt", "_seg", "_segmentation", "_annot", "-mask", "_m")
PALETTE_FILES = ("label_colors.txt", "label_colours.txt", "class_dict.csv", "labels.txt", "labelmap.txt")
VOID_NAMES = {"void", "unlabelled", "unlabeled", "ignore", "background_ignore", "other"}
SAMPLE = 24  # masks / images read per split to decide formats


class AmbiguousLayout(DataError):
    """The folder allows more than one reading; the message names the option that settles it."""


@dataclass
class Detected:
    """A data folder as `seglab init` found it: config values plus what it noticed and could not decide."""

    root: Path
    splits: dict[str, dict[str, str]]  # train / val / test -> {images, masks} or {list}
    mask_suffix: str = ""
    mask_encoding: str = "index"
    palette_file: Optional[str] = None
    void_class: Optional[str] = None
    class_names: Optional[list[str]] = None
    in_channels: int = 3
    image_max: Optional[int] = None
    nodata: Optional[float] = None  # the stored value marking missing pixels (GeoTIFF nodata; NaN for floats)
    binary_threshold: Optional[int] = None  # 0 for 8-bit instance ids (every non-zero id is foreground)
    mean: Optional[list[float]] = None  # per-band statistics of non-8-bit or multi-band images (augment.mean / std)
    std: Optional[list[float]] = None
    align: str = "none"
    image_size: tuple[int, int] = (256, 256)  # median (H, W) of the sampled masks
    sizes_vary: bool = False  # the sampled masks are not all one size
    num_images: dict[str, int] = field(default_factory=dict)
    found: list[str] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)

    def data_section(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": "folder", "root": str(self.root)}
        data.update({name: dict(s) for name, s in self.splits.items()})
        if "val" not in self.splits:
            data["random_split"] = {"val": 0.15, "test": 0.0 if "test" in self.splits else 0.15, "seed": 0}
        if self.mask_suffix:
            data["mask_suffix"] = self.mask_suffix
        data["mask_encoding"] = self.mask_encoding
        if self.palette_file:
            data["palette_file"] = self.palette_file
        if self.void_class:
            data["void_class"] = self.void_class
        if self.class_names and not self.palette_file:
            data["class_names"] = self.class_names
        if self.in_channels != 3:
            data["in_channels"] = self.in_channels
        if self.image_max:
            data["image_max"] = self.image_max
        if self.nodata is not None:
            data["nodata"] = int(self.nodata) if float(self.nodata).is_integer() else self.nodata
        if self.binary_threshold is not None:
            data["binary_threshold"] = self.binary_threshold
        if self.align != "none":
            data["align"] = self.align
        return data


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS) \
        if folder.is_dir() else []


def _subdir(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """Sub-folders of `folder` whose lower-case name is one of `names`, in `names`' order."""
    if not folder.is_dir():
        return []
    by_name = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    return [by_name[n] for n in names if n in by_name]


def _pick(candidates: list[Path], what: str, option: str) -> Optional[Path]:
    with_files = [c for c in candidates if _files(c)]
    if len(with_files) > 1:
        names = ", ".join(c.name for c in with_files)
        raise AmbiguousLayout(f"{with_files[0].parent}: {len(with_files)} folders could hold the {what} ({names}); "
                              f"give {option} with the one to use")
    return with_files[0] if with_files else None


def _stem_overlap(images: Path, masks: Path, suffix: str = "") -> float:
    img = {p.stem for p in _files(images)}
    msk = {p.stem[: len(p.stem) - len(suffix)] if suffix and p.stem.endswith(suffix) else p.stem for p in _files(masks)}
    return len(img & msk) / max(1, min(len(img), len(msk)))


def _mask_suffix_of(images: Path, masks: Path) -> Optional[str]:
    """'' when stems match, a suffix masks add to the image stem (CamSeq01 `_L`), None when neither pairs them."""
    if _stem_overlap(images, masks) >= 0.5:
        return ""
    for suffix in MASK_SUFFIXES:
        if _stem_overlap(images, masks, suffix) >= 0.5:
            return suffix
    return None


def _split_folders(root: Path, mask_dir: Optional[str]) -> dict[str, tuple[Path, Path]]:
    """train / val / test -> (images folder, masks folder) for the layouts people have."""
    mask_names = (mask_dir.lower(),) if mask_dir else MASK_DIRS
    out: dict[str, tuple[Path, Path]] = {}
    for split, aliases in SPLITS.items():
        for alias in aliases:
            # SPLIT/{images,masks}
            for d in _subdir(root, (alias,)):
                images, masks = _pick(_subdir(d, IMAGE_DIRS), "images", "--images"), \
                    _pick(_subdir(d, mask_names), "masks", "--masks")
                if images and masks:
                    out[split] = (images, masks)
            # {images,masks}/SPLIT
            for images_top in _subdir(root, IMAGE_DIRS):
                for masks_top in _subdir(root, mask_names):
                    i, m = _subdir(images_top, (alias,)), _subdir(masks_top, (alias,))
                    if i and m and _files(i[0]) and _files(m[0]):
                        out.setdefault(split, (i[0], m[0]))
            # SPLIT + SPLITannot / SPLIT_labels (CamVid)
            for d in _subdir(root, (alias,)):
                if split in out or not _files(d):
                    continue
                kinds = (mask_dir,) if mask_dir else ("annot", "annotations", "labels", "label", "masks", "mask", "gt")
                names = tuple(f"{alias}{sep}{kind}".lower() for kind in kinds for sep in ("", "_", "-"))
                masks = _pick(_subdir(root, names), "masks", "--masks")
                if masks:
                    out[split] = (d, masks)
            if split in out:
                break
    return out


def _flat_folders(root: Path, mask_dir: Optional[str]) -> Optional[tuple[Path, Path]]:
    """(images, masks) of a dataset without given splits: IMAGES/ + MASKS/, or two folders of pairing stems."""
    masks_named = [d for d in _subdir(root, (mask_dir.lower(),) if mask_dir else MASK_DIRS) if _files(d)]
    images_named = [d for d in _subdir(root, IMAGE_DIRS) if _files(d)]
    if len(masks_named) > 1:
        pairs = [m for m in masks_named if images_named and _mask_suffix_of(images_named[0], m) is not None]
        if len(pairs) > 1:
            raise AmbiguousLayout(f"{root}: {len(pairs)} folders could hold the masks "
                                  f"({', '.join(p.name for p in pairs)}); give --masks with the one to use")
        masks_named = pairs or masks_named[:1]
    if images_named and masks_named:
        return images_named[0], masks_named[0]
    folders = [d for d in sorted(root.iterdir()) if d.is_dir() and _files(d)]
    pairs = [(a, b) for a in folders for b in folders if a != b and _mask_suffix_of(a, b) is not None]
    if not pairs:
        return None
    # the masks are the folder whose files hold fewer distinct values
    a, b = pairs[0]
    return (a, b) if _distinct_values(_files(a)[:4]) > _distinct_values(_files(b)[:4]) else (b, a)


def _distinct_values(files: list[Path]) -> int:
    """The most distinct pixel values (or colours) in one of `files`."""
    most = 0
    for f in files:
        arr = np.asarray(_open(f))
        most = max(most, len(np.unique(arr.reshape(-1, *arr.shape[2:]), axis=0)))
    return most


def _one_folder(folder: Path) -> Optional[str]:
    """The mask suffix of a folder that holds images and masks side by side (NAME.png + NAME_L.png)."""
    stems = {p.stem for p in _files(folder)}
    for suffix in MASK_SUFFIXES:
        marked = [s for s in stems if s.endswith(suffix) and s[: -len(suffix)] in stems]
        if len(marked) >= max(1, len(stems) // 3):
            return suffix
    return None


def _find_layout(root: Path, det: Detected, mask_dir: Optional[str]) -> list[tuple[Path, Path]]:
    """Fill det.splits (and mask_suffix); the (images, masks) folders to sample, train first."""
    found = _split_folders(root, mask_dir)
    if found:
        rel = {s: (i.relative_to(root).as_posix(), m.relative_to(root).as_posix()) for s, (i, m) in found.items()}
        det.splits = {s: {"images": i, "masks": m} for s, (i, m) in rel.items()}
        det.found.append("given splits: " + ", ".join(f"{s} ({i} + {m})" for s, (i, m) in rel.items()))
        suffixes = {_mask_suffix_of(i, m) for i, m in found.values()}
        det.mask_suffix = next(iter(suffixes)) or ""
        return list(found.values())
    lists = {s: root / f"{s}.txt" for s in SPLITS if (root / f"{s}.txt").is_file()}
    if "train" in lists:
        det.splits = {s: {"list": p.name} for s, p in lists.items()}
        det.found.append("list files: " + ", ".join(p.name for p in lists.values()))
        return []
    flat = _flat_folders(root, mask_dir)
    if flat:
        images, masks = flat
        det.splits = {"train": {"images": images.relative_to(root).as_posix(), "masks": masks.relative_to(root).as_posix()}}
        det.mask_suffix = _mask_suffix_of(images, masks) or ""
        det.found.append(f"images in {images.name}/, masks in {masks.name}/, no given split: drawn at random "
                         "(data.random_split, seed 0)")
        return [flat]
    for folder in [root] + [d for d in sorted(root.iterdir()) if d.is_dir()]:
        suffix = _one_folder(folder)
        if suffix:
            rel = folder.relative_to(root).as_posix() if folder != root else "."
            det.splits = {"train": {"images": rel, "masks": rel}}
            det.mask_suffix = suffix
            det.found.append(f"images and masks side by side in {rel}/, masks marked by '{suffix}', no given split")
            return [(folder, folder)]
    raise DataError(f"{root}: no images paired with masks found (looked for train/val/test folders, images/ + masks/, "
                    "two folders of matching file names, NAME + NAME_mask files and train.txt lists); write the "
                    "config by hand from the layout table in docs/data.md")


def _sample_pairs(folders: list[tuple[Path, Path]], suffix: str) -> list[tuple[Path, Path]]:
    images, masks = folders[0]
    mask_of = {}
    for p in _files(masks):
        stem = p.stem[: len(p.stem) - len(suffix)] if suffix and p.stem.endswith(suffix) else p.stem
        if images != masks or (suffix and p.stem.endswith(suffix)):
            mask_of[stem] = p
    pairs = [(i, mask_of[i.stem]) for i in _files(images) if i.stem in mask_of and i != mask_of[i.stem]]
    step = max(1, len(pairs) // SAMPLE)
    return pairs[::step][:SAMPLE]


def _palette(root: Path, det: Detected, palette: Optional[Path]) -> Optional[list[tuple[str, tuple[int, int, int]]]]:
    files = [palette] if palette else [root / n for n in PALETTE_FILES if (root / n).is_file()]
    if not files:
        return None
    # --palette PATH is where the user typed it (the current folder), else a name inside the data folder
    path = files[0].resolve() if files[0].is_absolute() or files[0].exists() else root / files[0]
    rows = read_palette_file(path)
    det.palette_file = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    det.found.append(f"palette file {det.palette_file}: {len(rows)} classes")
    void = [name for name, _ in rows if name.lower() in VOID_NAMES]
    if void:
        det.void_class = void[0]
        det.found.append(f"'{void[0]}' pixels are ignored (data.void_class)")
    return rows


def _instance_ids(masks: list[Path]) -> bool:
    """Whether 8-bit grey masks hold instance ids rather than classes: many distinct values (more than 30 over
    the sample) and, in nearly every mask, each non-zero value one connected blob (an object), where a class's
    pixels come in several regions or values stay few."""
    import cv2

    values: set[int] = set()
    single = pairs = 0
    for path in masks:
        arr = np.asarray(_open(path))
        if arr.dtype != np.uint8 or arr.ndim != 2:
            return False
        present = [int(v) for v in np.unique(arr) if v not in (0, 255)]
        values.update(present)
        for v in present:
            count = cv2.connectedComponents((arr == v).astype(np.uint8), connectivity=8)[0] - 1
            single += count == 1
            pairs += 1
    return len(values) > 30 and pairs > 0 and single >= 0.9 * pairs


def _sample_masks(masks: list[Path]) -> tuple[set[int], np.ndarray, set[tuple[int, ...]], set[str], bool]:
    """What the sampled masks hold: grey values, the 8-bit grey histogram, colours (of masks whose channels
    differ), image modes, and whether any is deeper than 8 bits."""
    values: set[int] = set()
    hist = np.zeros(256, np.int64)  # pixel counts of 8-bit grey masks
    colours: set[tuple[int, ...]] = set()
    modes, deep = set(), False
    for path in masks:
        im = _open(path)
        modes.add(im.mode)
        arr = np.asarray(im)
        if arr.ndim == 3 and arr.shape[2] >= 3 and not (np.array_equal(arr[..., 0], arr[..., 1])
                                                        and np.array_equal(arr[..., 0], arr[..., 2])):
            colours.update(map(tuple, np.unique(arr[..., :3].reshape(-1, 3), axis=0).tolist()))
            continue
        arr = arr[..., 0] if arr.ndim == 3 else arr
        deep = deep or arr.dtype.itemsize > 1
        values.update(np.unique(arr).astype(int).tolist())
        if arr.dtype == np.uint8:
            hist += np.bincount(arr.ravel(), minlength=256)
    return values, hist, colours, modes, deep


def _mask_format(det: Detected, masks: list[Path], palette_rows: Optional[list]) -> None:
    values, hist, colours, modes, deep = _sample_masks(masks)
    jpeg = any(m.suffix.lower() in (".jpg", ".jpeg") for m in masks)
    where = masks[0].parent
    if colours:
        if palette_rows:
            det.mask_encoding = "rgb"
            det.found.append(f"colour masks ({len(colours)} colours in {len(masks)} sampled): decoded by the palette "
                             "(mask_encoding: rgb)")
            if jpeg or len(colours) > len(palette_rows) + 2:
                det.undecided.append("the masks hold more colours than the palette (JPEG or anti-aliased edges?): "
                                     "add unknown_colors: nearest if inspect reports unknown colours")
            return
        if len(colours) <= 2 and (0, 0, 0) in colours:
            det.mask_encoding, det.class_names = "binary", ["background", "foreground"]
            det.found.append("colour masks with one colour on black: binary (any non-black pixel is foreground)")
            return
        raise AmbiguousLayout(f"{where}: colour masks with {len(colours)} colours and no palette file; give "
                              "--palette FILE (label_colors.txt 'R G B name' lines or class_dict.csv)")
    soft = not deep and (jpeg or len(values) > 32) and _bimodal(hist)  # JPEG or anti-aliased binary masks
    if "1" in modes or values <= {0, 1} or values <= {0, 255} or soft:
        det.mask_encoding = "binary"
        det.class_names = ["background", "foreground"]
        det.found.append(f"binary masks (values {_show(values)}): mask_encoding: binary, threshold 127"
                         + (" (soft edges or JPEG: values between 0 and 255 split at 127)" if soft else ""))
        return
    if deep and max(values) > 254:
        det.mask_encoding, det.class_names = "binary", ["background", "foreground"]
        det.found.append(f"16-bit masks with {len(values)} distinct ids up to {max(values)}: instance ids, read as "
                         "binary (every non-zero id is foreground)")
        det.undecided.append("whether the 16-bit ids are instances (binary, as written) or classes (set "
                             "mask_encoding: index and class_names)")
        return
    if not palette_rows and not deep and _instance_ids(masks):
        det.mask_encoding, det.class_names, det.binary_threshold = "binary", ["background", "foreground"], 0
        det.found.append(f"8-bit masks with {len(values)} distinct values, each one blob in its mask: instance ids, "
                         "read as binary with binary_threshold 0 (every non-zero id is foreground)")
        det.undecided.append("whether the ids are instances (binary, as written) or classes (set mask_encoding: "
                             "index and class_names)")
        return
    det.mask_encoding = "index"
    present = sorted(v for v in values if v != 255)
    if palette_rows:
        det.found.append(f"index masks (values {_show(values)}) named by the palette file")
        if present and present[-1] >= len(palette_rows):
            raise AmbiguousLayout(f"{where}: mask value {present[-1]} but the palette file names {len(palette_rows)} "
                                  "classes; give --palette with the file that names them all")
        return
    n = (present[-1] + 1) if present else 2
    det.class_names = [f"class_{i}" for i in range(max(n, 2))]
    det.found.append(f"index masks (values {_show(values)}): {len(det.class_names)} classes, named class_0.. "
                     "(rename them in data.class_names)")
    if 255 in values:
        det.found.append("value 255 is the ignore index (not scored)")
    det.undecided.append("whether value 0 is a class or 'unlabelled' (then set reduce_zero_label: true)")


def _bimodal(hist: np.ndarray) -> bool:
    """Binary masks saved as JPEG or with soft edges: nearly every pixel near 0 or near 255, both present."""
    total = hist.sum()
    low, high = hist[:32].sum(), hist[224:].sum()
    return bool(total) and low > 0 and high > 0 and (low + high) >= 0.95 * total


def _show(values: set[int]) -> str:
    v = sorted(values)
    return "{" + ", ".join(map(str, v)) + "}" if len(v) <= 8 else f"{len(v)} distinct, {v[0]}..{v[-1]}"


def _raw_image(path: Path) -> np.ndarray:
    """An image's pixels as stored (H, W) / (H, W, C): TIFFs of any band count and type through tifffile, as
    training reads them; other files through Pillow."""
    if path.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(path, DEFAULT_MAX_IMAGE_PIXELS)[0]
    return np.asarray(_open(path))


def _images(det: Detected, pairs: list[tuple[Path, Path]]) -> None:
    sizes, channels, mismatched, arrays = [], set(), 0, []
    for image, mask in pairs:
        arr, m = _raw_image(image), _open(mask)
        # 4 bands: RGBA for 8-bit pictures (alpha is not an input), R G B near-infrared for 16-bit / float rasters
        channels.add(1 if arr.ndim == 2 else 3 if arr.shape[2] == 4 and arr.dtype == np.uint8 else arr.shape[2])
        if arr.dtype.itemsize > 1 or arr.dtype.kind == "f":
            arrays.append(arr)
        sizes.append((m.height, m.width))  # the label grid: what training and scoring run at
        mismatched += arr.shape[:2] != (m.height, m.width)
    det.image_size = (int(statistics.median(s[0] for s in sizes)), int(statistics.median(s[1] for s in sizes)))
    det.sizes_vary = len(set(sizes)) > 1
    if len(channels) == 1:
        det.in_channels = channels.pop()
    else:
        det.undecided.append(f"images with {sorted(channels)} channels: data.in_channels set to 3")
    if det.in_channels != 3:
        det.found.append(f"{det.in_channels}-channel images")
    if arrays:
        _nodata(det, arrays)
        kept = [a[~missing_pixels(a, det.nodata)] for a in arrays]  # the data, pixels without it left out
        tops = [float(np.nanmax(v)) for v in kept if v.size]
        top, kind = max(tops), "float" if arrays[0].dtype.kind == "f" else f"{arrays[0].dtype.itemsize * 8}-bit"
        integer = arrays[0].dtype.kind in "iu"
        # 8-bit data stored in 16 bits would reach 255 / 65535 at most: read it as 8-bit; 12-bit cameras: 4095
        det.image_max = (255 if top <= 255 else 4095 if top <= 4095 else None) if integer else None
        scale = det.image_max or (65535 if integer else 1)
        note = {255: ": image_max 255, 8-bit data in 16-bit files", 4095: ": image_max 4095, 12-bit data"}.get(
            det.image_max or 0, f": divided by {scale}")
        det.found.append(f"{kind} images (largest value {top:g}{note})")
        if det.in_channels != 3 or not integer or top > 4095:
            _band_statistics(det, arrays, scale)
    if mismatched:
        det.align = "resize_image_to_mask"
        det.found.append(f"{mismatched} of {len(pairs)} sampled images differ in size from their masks: images are "
                         "resized to their mask (align: resize_image_to_mask)")
    det.found.append(f"masks about {det.image_size[1]}x{det.image_size[0]} (median of {len(pairs)} sampled)")


def _nodata(det: Detected, arrays: list[np.ndarray]) -> None:
    """The value marking missing pixels in non-8-bit images, if one does: NaN in float files, else their
    smallest value when it is a usual marker (-9999, -32768, float32's minimum, ...) or a negative value lying
    farther below the others than their whole range (a -9999 beside 0..3000 reflectances)."""
    if any(a.dtype.kind == "f" and np.isnan(a).any() for a in arrays):
        det.nodata = float("nan")
    else:
        low = min(float(a.min()) for a in arrays)
        rest = [a[a != low] for a in arrays]
        others = [float(r.min()) for r in rest if r.size], [float(r.max()) for r in rest if r.size]
        if not others[0]:
            return
        gap = min(others[0]) - low > max(others[1]) - min(others[0])
        if not (low in NODATA_MARKERS or (low < 0 and gap)):
            return
        det.nodata = low
    share = sum(int(missing_pixels(a, det.nodata).sum()) for a in arrays) / sum(a.shape[0] * a.shape[1] for a in arrays)
    shown = "NaN" if math.isnan(det.nodata) else f"{det.nodata:g}"
    det.found.append(f"value {shown} marks pixels without data ({100 * share:.2g}% of the sampled pixels): data.nodata "
                     "(not trained on or scored; left out of mean / std)")


def _band_statistics(det: Detected, arrays: list[np.ndarray], scale: float) -> None:
    """Per-band mean / std of the sampled images as training scales them: the default 0.5 / 0.25 assumes 8-bit
    photographs; multi-band or raw-valued data trained on it can learn nothing (issue 42 item 5)."""
    bands = [a[~missing_pixels(a, det.nodata)].reshape(-1, 1 if a.ndim == 2 else a.shape[2]).astype(np.float64) / scale
             for a in arrays]  # pixels without data left out
    if len({b.shape[1] for b in bands}) != 1:
        return
    pixels = np.concatenate(bands)
    det.mean = [round(float(v), 6) for v in pixels.mean(0)]
    det.std = [round(float(max(v, 1e-6)), 6) for v in pixels.std(0)]
    det.found.append(f"per-band mean / std of {len(arrays)} sampled images written to augment.mean / augment.std")


def detect_layout(root: Path, *, masks: Optional[str] = None, palette: Optional[Path] = None) -> Detected:
    """Look at a data folder and say how seglab should read it. `masks`: the mask folder's name, when several
    fit; `palette`: a palette file (else label_colors.txt / class_dict.csv in the folder)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    det = Detected(root=root, splits={})
    folders = _find_layout(root, det, masks)
    _say_cvat(root, det)
    rows = _palette(root, det, palette)
    if folders:
        pairs = _sample_pairs(folders, det.mask_suffix)
    else:
        from .folder import read_list_file

        pairs = [(Path(s.image), Path(s.mask)) for s in read_list_file(root / det.splits["train"]["list"], root)]
        pairs = pairs[:: max(1, len(pairs) // SAMPLE)][:SAMPLE]
    if not pairs:
        raise DataError(f"{root}: found {det.splits['train']} but no image there has a mask of the same name")
    _mask_format(det, [m for _, m in pairs], rows)
    _images(det, pairs)
    for split, spec in det.splits.items():
        if "list" in spec:
            lines = (root / spec["list"]).read_text().splitlines()
            det.num_images[split] = sum(1 for line in lines if line.strip() and not line.startswith("#"))
        else:
            files = _files(root / spec["images"])
            same = spec["images"] == spec["masks"]
            det.num_images[split] = sum(1 for f in files if not (same and f.stem.endswith(det.mask_suffix)))
    _say_random_split(det)
    return det


def _say_cvat(root: Path, det: Detected) -> None:
    """A CVAT / Datumaro Segmentation mask export reads as a folder with its labelmap.txt; its subsets lists
    (ImageSets/Segmentation) are names, not the 'image mask' lines seglab reads: convert keeps them."""
    from .convert_cvat import is_cvat_export

    if not is_cvat_export(root):
        return
    det.found.append("a CVAT / Datumaro 'Segmentation mask 1.1' export (labelmap.txt, SegmentationClass/)")
    subsets = sorted(p.stem for p in (root / "ImageSets" / "Segmentation").glob("*.txt"))
    if len(subsets) > 1:
        det.undecided.append(f"its subsets {', '.join(subsets)} (ImageSets/Segmentation/) are not read as splits here: "
                             f"`seglab convert cvat {root} --out DIR` writes them as list files")


def _say_random_split(det: Detected) -> None:
    """What data.random_split will draw from the train folder's images, said in counts, or that they are too few."""
    if "val" in det.splits:
        return
    split = det.data_section()["random_split"]
    n = det.num_images.get("train", 0)
    try:
        n_val, n_test = random_split_sizes(n, split["val"], split["test"])
    except DataError:
        det.undecided.append(f"how to split {n} image{'s' if n != 1 else ''}: too few to draw a val"
                             f"{' and a test' if split['test'] else ''} split and keep one to train; add images or "
                             "give val / test folders")
        return
    det.found.append(f"random split of {n} images: {n - n_val - n_test} train, {n_val} val, {n_test} test")
