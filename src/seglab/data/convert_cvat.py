"""CVAT / Datumaro "Segmentation mask 1.1" exports -> a seglab mask folder (`seglab convert cvat DIR`).

The export (CVAT's and Datumaro's `voc_segmentation` layout): `labelmap.txt` ("name:r,g,b:parts:actions"
lines; absent: the 21 Pascal VOC classes and their colour map), `SegmentationClass/NAME.png` (each pixel the
colour of its label; unlabelled pixels are background, (0, 0, 0)), `ImageSets/Segmentation/SUBSET.txt` (the
names of each subset) and, when exported with images, `JPEGImages/NAME.*`. Every colour is decoded exactly:
a colour the label map does not list is refused, naming the file, the colour and its pixel count. Classes keep
the label map's order, including a class listed but never drawn (the printed config names it in
`absent_classes`, so training accepts it). Writes OUT/masks/NAME.png (palette PNGs whose indices are the class
ids), OUT/label_colors.txt (the label map's names and colours), OUT/SUBSET.txt list files ("IMAGE MASK" lines)
when the images are found, and OUT/convert.json."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from ..errors import DataError
from .convert import IGNORE, ConvertSummary, _finish, prepare_out, save_index_png, write_list
from .labels import default_palette, read_palette_file

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
VOC_VOID = (224, 224, 192)  # Pascal VOC's object borders and "difficult" areas: not scored
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# subset names of ImageSets/Segmentation -> seglab's splits (any other subset, CVAT's "default" among them, trains)
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def is_cvat_export(folder: Path) -> bool:
    """Whether `folder` looks like a Segmentation mask export: SegmentationClass/ with labelmap.txt or ImageSets/."""
    folder = Path(folder)
    return (folder / "SegmentationClass").is_dir() and (
        (folder / "labelmap.txt").is_file() or (folder / "ImageSets" / "Segmentation").is_dir())


def read_labelmap(folder: Path, notes: list[str]) -> tuple[list[tuple[str, tuple[int, int, int]]], dict[int, int]]:
    """The classes (name, colour) in id order and the colour code (r << 16 | g << 8 | b) -> class id (or IGNORE)."""
    path = folder / "labelmap.txt"
    if path.is_file():
        rows = read_palette_file(path)
    else:
        rows = list(zip(VOC_CLASSES, default_palette(len(VOC_CLASSES))))
        notes.append("no labelmap.txt: the 21 Pascal VOC classes and colours (CVAT's default)")
    if (0, 0, 0) not in [c for _, c in rows]:
        rows = [("background", (0, 0, 0))] + rows
        notes.append("the label map gives no class the colour (0, 0, 0), which CVAT paints unlabelled pixels with: "
                     "added as class 0 'background'")
    code = {_code(c): k for k, (_, c) in enumerate(rows)}
    if not path.is_file():
        code[_code(VOC_VOID)] = IGNORE
    return rows, code


def _code(c) -> int:
    return (int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2])


def decode_color_mask(path: Path, code: dict[int, int], labelmap: str) -> np.ndarray:
    """A colour mask -> (H, W) uint8 class ids, every colour looked up exactly; an unlisted colour is refused."""
    try:
        with Image.open(path) as im:
            im.load()
            rgb = np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    flat = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    values, inverse, counts = np.unique(flat.ravel(), return_inverse=True, return_counts=True)
    ids = np.empty(len(values), np.uint8)
    for k, v in enumerate(values):
        if int(v) not in code:
            colour = ((int(v) >> 16) & 255, (int(v) >> 8) & 255, int(v) & 255)
            raise DataError(f"{path}: colour {colour} ({counts[k]} px) is not in {labelmap}; add its class there or "
                            "repaint those pixels")
        ids[k] = code[int(v)]
    return ids[inverse].reshape(flat.shape)


def _subsets(folder: Path, names: list[str]) -> dict[str, list[str]]:
    """SUBSET -> item names, from ImageSets/Segmentation/*.txt (absent: one subset 'default' of every mask)."""
    sets = folder / "ImageSets" / "Segmentation"
    files = sorted(sets.glob("*.txt")) if sets.is_dir() else []
    if not files:
        return {"default": names}
    out = {}
    for f in files:
        items = [ln.split()[0] for ln in f.read_text().splitlines() if ln.strip()]
        missing = [n for n in items if n not in names]
        if missing:
            raise DataError(f"{f}: lists {missing[0]!r}, which has no mask SegmentationClass/{missing[0]}.png")
        out[f.stem] = items
    return out


def _find_image(name: str, folders: list[Path]) -> Optional[Path]:
    for base in folders:
        for suffix in IMAGE_SUFFIXES:
            for cand in (base / f"{name}{suffix}", base / f"{name}{suffix.upper()}"):
                if cand.is_file():
                    return cand
    return None


def convert_cvat(folder: Path, out: Path, *, images: Optional[Path] = None, overwrite: bool = False) -> ConvertSummary:
    """A CVAT / Datumaro Segmentation mask export -> mask folder, list files per subset, label_colors.txt."""
    folder = Path(folder)
    if not (folder / "SegmentationClass").is_dir():
        raise DataError(f"{folder}: not a CVAT / Datumaro Segmentation mask export (no SegmentationClass/ folder); "
                        "export the task as 'Segmentation mask 1.1'")
    notes: list[str] = []
    rows, code = read_labelmap(folder, notes)
    classes = [n for n, _ in rows]
    masks = sorted((folder / "SegmentationClass").rglob("*.png"))
    if not masks:
        raise DataError(f"{folder / 'SegmentationClass'}: no .png masks")
    names = [str(p.relative_to(folder / "SegmentationClass").with_suffix("")) for p in masks]
    subsets = _subsets(folder, names)
    image_dirs = [Path(images)] if images else [folder / "JPEGImages", folder / "images", folder]
    summary = ConvertSummary(classes=classes, class_pixels={n: 0 for n in classes}, notes=notes)
    prepare_out(out, overwrite)
    labelmap = str(folder / "labelmap.txt") if (folder / "labelmap.txt").is_file() else "the Pascal VOC colour map"
    found: dict[str, Path] = {}
    for path, name in zip(masks, names):
        labels = decode_color_mask(path, code, labelmap)
        hist = np.bincount(labels.ravel(), minlength=256)
        for k, n in enumerate(classes):
            summary.class_pixels[n] += int(hist[k])
        summary.ignored_pixels += int(hist[IGNORE])
        save_index_png(out / "masks" / f"{name}.png", labels, [c for _, c in rows])
        summary.mask_files.append(f"{name}.png")
        summary.masks += 1
        image = _find_image(name, image_dirs)
        if image is not None:
            found[name] = image.resolve()
    lost = [n for n in names if n not in found]
    if images and lost:
        raise DataError(f"--images {images}: no image for {len(lost)} masks (e.g. {lost[0]}.*)")
    if not lost:
        _write_lists(summary, out, subsets, found)
    else:
        notes.append(f"images not found beside the export (JPEGImages/) for {len(lost)} of {len(names)} masks: "
                     "no list files written; pass --images DIR")
    return _finish(summary, out, [c for _, c in rows])


def _write_lists(summary: ConvertSummary, out: Path, subsets: dict[str, list[str]], found: dict[str, Path]) -> None:
    """OUT/SPLIT.txt of 'IMAGE MASK' lines per seglab split; subsets that are not train / val / test go to train."""
    lines: dict[str, list[tuple[Path, str]]] = {}
    for subset, items in subsets.items():
        split = SPLIT_NAMES.get(subset.lower(), "train")
        if split == "train" and subset.lower() not in SPLIT_NAMES:
            summary.notes.append(f"subset {subset!r} ({len(items)} images) trains (not named train, val or test)")
        lines.setdefault(split, []).extend((found[n], f"{n}.png") for n in items)
    for split, pairs in lines.items():
        write_list(summary, out, split, pairs)

