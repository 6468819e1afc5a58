"""Polygon annotations -> seglab mask folders: COCO segmentation JSON and LabelMe JSON (`seglab convert`).

Writes OUT/masks/<image stem>.png (palette PNGs whose indices are class ids: 0 background, 1..K the
classes), OUT/label_colors.txt ("R G B Name", read with `mask_encoding: index, palette_file:`) and
OUT/convert.json (pixels per class, overlapping pixels, what was skipped).

Rasterisation follows each format's own tool: COCO regions cover the pixels whose centres lie inside
(pycocotools' area convention); LabelMe shapes are drawn as labelme's own shape_to_mask draws them (PIL,
outline included).
Overlaps: `smaller` (default: smaller regions drawn on top, so an object inside another, a window in a
facade, stays visible whatever order it was drawn in) or `later` (the later annotation wins, as labelme's
converter does); convert.json gives, per class, the pixels each rule takes from it. COCO crowd regions
(iscrowd) and the classes named `__ignore__` (labelme's "don't care") become the ignore value 255; classes
named `_background_` / `background` are drawn as background 0. A Roboflow export's category 0 (the dataset
name: no annotations, the supercategory of the others, often a real class's name too) is dropped.
"""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from PIL import Image

from ..errors import DataError
from ..fileio import atomic_path, atomic_write_text
from .labels import default_palette

IGNORE = 255
OVERLAP_RULES = ("smaller", "later")
# class names that mean background (labelme2coco, labelme's labels.txt) or "don't care" (labelme's __ignore__)
BACKGROUND_NAMES = ("background", "_background_", "__background__")
IGNORE_NAMES = ("__ignore__", "_ignore_", "ignore")


@dataclass
class Region:
    """One annotated region of an image: its class (1..K, or IGNORE) and a (H, W) bool mask."""

    label: int
    mask: np.ndarray
    order: int  # position in the file (for the `later` rule)


@dataclass
class ConvertSummary:
    """What `seglab convert` wrote and what it could not convert."""
    classes: list[str]
    masks: int = 0
    class_pixels: dict[str, int] = field(default_factory=dict)
    overlapping_pixels: int = 0
    ignored_pixels: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    out_dir: str = ""
    overlap: str = "smaller"
    # per class: its annotated pixels that overlaps gave to another class, under each rule
    lost_in_overlaps: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # categories dropped, merged or read as background / ignore
    mask_files: list[str] = field(default_factory=list)  # the files written into masks/ (what --overwrite replaces)
    list_files: dict[str, str] = field(default_factory=dict)  # split -> its 'IMAGE MASK' list file in the folder


def prepare_out(out: Path, overwrite: bool) -> None:
    """An output folder convert may write: new or empty; or holding an earlier conversion, whose own files
    (convert.json lists them) `overwrite` removes. Anything else there is the user's and is refused."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"--out {out}: is a file; give a folder")
    present = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() or p.is_symlink())
    if not present:
        return
    try:
        earlier = json.loads((out / "convert.json").read_text())
        own = ({"convert.json", "label_colors.txt"} | {f"masks/{m}" for m in earlier["mask_files"]}
               | set(earlier.get("list_files", {}).values()))
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"--out {out}: holds {len(present)} files seglab convert did not write (e.g. {present[0]}); "
                        "give a new or empty folder") from None
    if not overwrite:
        raise DataError(f"--out {out}: holds an earlier conversion (convert.json); pass --overwrite to replace the "
                        "files it wrote (other files there stay), or give a new folder")
    for name in own:
        if (out / name).is_file() and not (out / name).is_symlink():
            (out / name).unlink()


def polygon_mask(points: np.ndarray, height: int, width: int, centres: bool) -> np.ndarray:
    """(N, 2) x, y vertices -> (H, W) bool. `centres`: a pixel is inside when its centre is (COCO, even-odd
    rule); otherwise as labelme draws it (PIL's polygon with its outline)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return np.zeros((height, width), bool)
    if not centres:
        return _pil_mask(height, width, lambda d: d.polygon([tuple(p) for p in pts], outline=1, fill=1))
    out = np.zeros((height, width), bool)
    x, y = pts[:, 0], pts[:, 1]
    x2, y2 = np.roll(x, -1), np.roll(y, -1)
    for row in range(max(0, int(np.floor(y.min()))), min(height, int(np.ceil(y.max())) + 1)):
        yc = row + 0.5
        cross = ((y <= yc) & (y2 > yc)) | ((y2 <= yc) & (y > yc))
        if not cross.any():
            continue
        xs = np.sort(x[cross] + (yc - y[cross]) * (x2[cross] - x[cross]) / (y2[cross] - y[cross]))
        for a, b in zip(xs[0::2], xs[1::2]):  # pixel centres col + 0.5 in [a, b)
            lo, hi = max(int(np.ceil(a - 0.5)), 0), min(int(np.ceil(b - 0.5)), width)
            if hi > lo:
                out[row, lo:hi] = True
    return out


def _pil_mask(height: int, width: int, draw: Any) -> np.ndarray:
    from PIL import ImageDraw

    im = Image.new("L", (width, height), 0)
    draw(ImageDraw.Draw(im))
    return np.asarray(im).astype(bool)


def rle_counts_from_string(s: str) -> list[int]:
    """Decode the compressed counts string of COCO RLE (pycocotools' format: 5-bit groups, offset 48,
    counts after the second stored as differences from the one two before)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_mask(rle: dict[str, Any], where: str) -> np.ndarray:
    """COCO RLE (uncompressed list or compressed string counts) -> (H, W) bool; runs are column-major."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    counts = rle_counts_from_string(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if sum(counts) != h * w or any(c < 0 for c in counts):
        raise DataError(f"{where}: RLE counts cover {sum(counts)} pixels, the size {h}x{w} has {h * w}")
    flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool)
    return flat.reshape(w, h).T


def paint(regions: list[Region], height: int, width: int, overlap: str) -> tuple[np.ndarray, int]:
    """Draw regions into a (H, W) uint8 class map, background 0; returns it and the overlapping pixels.
    `overlap`: 'smaller' regions on top (ties: the later), or the 'later' region on top; ignore regions on top
    of both."""
    # "don't care" regions (crowds, __ignore__) go on top under either rule: what they cover is not scored
    if overlap == "smaller":
        regions = sorted(regions, key=lambda r: (r.label == IGNORE, -int(r.mask.sum()), r.order))
    else:
        regions = sorted(regions, key=lambda r: (r.label == IGNORE, r.order))
    out = np.zeros((height, width), np.uint8)
    covered = np.zeros((height, width), np.int32)
    for r in regions:
        if r.mask.shape != (height, width):
            raise ValueError(f"region mask {r.mask.shape} differs from the image size {(height, width)}")
        out[r.mask] = r.label
        covered += r.mask
    return out, int((covered > 1).sum())


def save_index_png(path: Path, labels: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> None:
    """An index mask as a palette PNG: viewable in colour, and its indices are the class ids."""
    im = Image.fromarray(labels, mode="P")
    flat = [v for c in palette for v in c]
    flat += [0] * (768 - len(flat))
    flat[3 * IGNORE: 3 * IGNORE + 3] = [255, 255, 255]
    im.putpalette(flat)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def _class_ids(found: Iterable[str], classes: Optional[Sequence[str]], source: str) -> dict[str, int]:
    if classes is None:
        return {n: i + 1 for i, n in enumerate(found)}
    missing = [n for n in found if n not in classes]
    if missing:
        raise DataError(f"{source}: classes {missing} are not in --classes {list(classes)}; add them")
    return {n: i + 1 for i, n in enumerate(classes)}


def convert_coco(annotations: Path, out: Path, *, overlap: str = "smaller",
                 classes: Optional[Sequence[str]] = None, overwrite: bool = False) -> ConvertSummary:
    """COCO segmentation JSON (polygons and RLE; categories give names, ordered by id) -> mask folder."""
    data = _load_json(annotations)
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise DataError(f"{annotations}: not a COCO file (expected 'images', 'annotations' and 'categories')")
    notes: list[str] = []
    label_of, ids = _coco_labels(data, classes, str(annotations), notes)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in data["annotations"]:
        by_image.setdefault(int(a["image_id"]), []).append(a)
    stems = [Path(str(img["file_name"])).stem for img in data["images"]]
    dup = sorted({st for st in stems if stems.count(st) > 1})
    if dup:
        raise DataError(f"{annotations}: images {dup[0]!r}.* appear more than once; their masks would overwrite "
                        "each other")
    summary, written = _summary(ids, overlap, notes), set()
    prepare_out(out, overwrite)
    for img in data["images"]:
        h, w = int(img["height"]), int(img["width"])
        regions = []
        for k, a in enumerate(by_image.get(int(img["id"]), [])):
            where = f"{annotations}: annotation {a.get('id', k)} of image {img['file_name']}"
            if int(a["category_id"]) not in label_of:
                raise DataError(f"{where}: category_id {a['category_id']} is not in 'categories'")
            seg = a.get("segmentation")
            if isinstance(seg, dict):
                if [int(v) for v in seg["size"]] != [h, w]:
                    raise DataError(f"{where}: RLE size {seg['size']} differs from the image's {h}x{w}")
                mask = rle_mask(seg, where)
            elif isinstance(seg, list) and seg:
                mask = np.zeros((h, w), bool)
                for poly in seg:
                    mask |= polygon_mask(np.asarray(poly, np.float64).reshape(-1, 2), h, w, centres=True)
            else:
                summary.skipped["annotations without segmentation"] = summary.skipped.get(
                    "annotations without segmentation", 0) + 1
                continue
            label = IGNORE if a.get("iscrowd") else label_of[int(a["category_id"])]
            regions.append(Region(label, mask, k))
        _write(summary, out, Path(img["file_name"]).stem, regions, h, w, overlap, written)
    return _finish(summary, out)


def _coco_labels(data: dict[str, Any], classes: Optional[Sequence[str]], source: str,
                 notes: list[str]) -> tuple[dict[int, int], dict[str, int]]:
    """COCO category id -> class id (0 background, 1..K, IGNORE) and class name -> id; `notes` says what was
    dropped, merged or read as background / ignore."""
    cats = sorted(data["categories"], key=lambda c: int(c["id"]))
    used = {int(a["category_id"]) for a in data["annotations"]}
    names = [str(c["name"]) for c in cats]
    supers = {str(c.get("supercategory", "")) for c in cats}
    kept = []
    for c, name in zip(cats, names):
        # Roboflow: category 0 is the dataset's name, unused, the others' supercategory, often a class name too
        if int(c["id"]) not in used and (names.count(name) > 1 or name in supers):
            notes.append(f"category {c['id']} {name!r} dropped: no annotation uses it and it is "
                         f"{'the supercategory of the others' if name in supers else 'a second category of that name'}"
                         " (a Roboflow export's dataset name)")
            continue
        kept.append(c)
    label_of: dict[int, int] = {}
    real = []
    for c in kept:
        name = str(c["name"])
        if name.lower() in BACKGROUND_NAMES + IGNORE_NAMES:
            bg = name.lower() in BACKGROUND_NAMES
            label_of[int(c["id"])] = 0 if bg else IGNORE
            notes.append(f"category {c['id']} {name!r} drawn as {'background 0' if bg else 'the ignore value 255'}")
        else:
            real.append(c)
    real_names = [str(c["name"]) for c in real]
    dup = sorted({n for n in real_names if real_names.count(n) > 1})
    if dup and classes is None:
        both = [int(c["id"]) for c in real if c["name"] == dup[0]]
        raise DataError(f"{source}: category name {dup[0]!r} is used by category ids {', '.join(map(str, both))}: "
                        "pass --classes NAME ... (each name once) to merge them into one class, or rename one")
    for n in dup:
        notes.append(f"categories {', '.join(str(c['id']) for c in real if c['name'] == n)} named {n!r} merged into "
                     "one class")
    ids = _class_ids(list(dict.fromkeys(real_names)), classes, source)
    label_of.update({int(c["id"]): ids[str(c["name"])] for c in real})
    return label_of, ids


def convert_labelme(inputs: Sequence[Path], out: Path, *, overlap: str = "smaller",
                    classes: Optional[Sequence[str]] = None, overwrite: bool = False) -> ConvertSummary:
    """LabelMe JSON files (or folders of them) -> mask folder; class names sorted unless `classes` is given."""
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            files += sorted(p.glob("*.json"))
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not files:
        raise DataError(f"{', '.join(map(str, inputs))}: no LabelMe .json files")
    docs = []
    for f in files:
        d = _load_json(f)
        if not isinstance(d, dict) or "shapes" not in d:
            raise DataError(f"{f}: not a LabelMe file (no 'shapes')")
        docs.append((f, d))
    found = sorted({str(s["label"]) for _, d in docs for s in d["shapes"]})
    special = {n: (0 if n.lower() in BACKGROUND_NAMES else IGNORE) for n in found
               if n.lower() in BACKGROUND_NAMES + IGNORE_NAMES}
    notes = [f"label {n!r} drawn as {'background 0' if v == 0 else 'the ignore value 255'}" for n, v in special.items()]
    ids = _class_ids([n for n in found if n not in special], classes, ", ".join(map(str, inputs)))
    summary, written = _summary(ids, overlap, notes), set()
    prepare_out(out, overwrite)
    ids.update(special)
    for f, d in docs:
        h, w = _labelme_size(f, d)
        regions = []
        for k, s in enumerate(d["shapes"]):
            kind = s.get("shape_type") or "polygon"
            pts = np.asarray(s.get("points") or [], np.float64).reshape(-1, 2)
            if kind == "polygon":
                mask = polygon_mask(pts, h, w, centres=False)
            elif kind == "rectangle" and len(pts) == 2:
                box = [tuple(pts.min(0)), tuple(pts.max(0))]
                mask = _pil_mask(h, w, lambda d: d.rectangle(box, outline=1, fill=1))
            elif kind == "circle" and len(pts) == 2:
                (cx, cy), r = pts[0], float(np.hypot(*(pts[1] - pts[0])))
                mask = _pil_mask(h, w, lambda d: d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1))
            elif kind == "mask" and s.get("mask"):
                mask = _labelme_mask(s, pts, h, w, f)
            else:
                key = f"{kind} shapes (not regions)"
                summary.skipped[key] = summary.skipped.get(key, 0) + 1
                continue
            regions.append(Region(ids[str(s["label"])], mask, k))
        stem = Path(str(d.get("imagePath") or f.name).replace("\\", "/")).stem
        _write(summary, out, stem, regions, h, w, overlap, written)
    return _finish(summary, out)


def _labelme_size(f: Path, d: dict[str, Any]) -> tuple[int, int]:
    if d.get("imageHeight") and d.get("imageWidth"):
        return int(d["imageHeight"]), int(d["imageWidth"])
    if d.get("imageData"):
        im = Image.open(io.BytesIO(base64.b64decode(d["imageData"])))
        return im.height, im.width
    raise DataError(f"{f}: no imageHeight/imageWidth nor imageData: the mask size is unknown")


def _labelme_mask(s: dict[str, Any], pts: np.ndarray, h: int, w: int, f: Path) -> np.ndarray:
    """labelme >= 5.3 'mask' shapes: a base64 PNG of the box between the two points."""
    part = np.asarray(Image.open(io.BytesIO(base64.b64decode(s["mask"])))).astype(bool)
    x0, y0 = (int(round(v)) for v in pts.min(0))
    mask = np.zeros((h, w), bool)
    ph, pw = part.shape[:2]
    if y0 < 0 or x0 < 0 or y0 + ph > h or x0 + pw > w:
        raise DataError(f"{f}: mask shape {s.get('label')!r} of {pw}x{ph} at ({x0}, {y0}) leaves the {w}x{h} image")
    mask[y0:y0 + ph, x0:x0 + pw] = part if part.ndim == 2 else part.any(-1)
    return mask


def _summary(ids: dict[str, int], overlap: str, notes: list[str]) -> ConvertSummary:
    if overlap not in OVERLAP_RULES:
        raise DataError(f"overlap rule {overlap!r}: expected one of {', '.join(OVERLAP_RULES)}")
    classes = ["background"] + [n for n, _ in sorted(ids.items(), key=lambda kv: kv[1])]
    return ConvertSummary(classes=classes, class_pixels={n: 0 for n in classes}, overlap=overlap, notes=notes,
                          lost_in_overlaps={n: {r: 0 for r in OVERLAP_RULES} for n in classes[1:]})


def _count_overlap_losses(summary: ConvertSummary, regions: list[Region], painted: dict[str, np.ndarray]) -> None:
    """Per class, the pixels its regions cover that each overlap rule paints as something else."""
    for k, name in enumerate(summary.classes[1:], 1):
        own = [r.mask for r in regions if r.label == k]
        if not own:
            continue
        covered = np.logical_or.reduce(own)
        for rule, labels in painted.items():
            summary.lost_in_overlaps[name][rule] += int((covered & (labels != k)).sum())


def _write(summary: ConvertSummary, out: Path, stem: str, regions: list[Region], h: int, w: int, overlap: str,
           written: set[str]) -> None:
    if stem in written:
        raise DataError(f"{out / 'masks'}: two annotated images share the stem {stem!r}; rename one")
    written.add(stem)
    labels, overlapping = paint(regions, h, w, overlap)
    if overlapping:
        painted = {r: labels if r == overlap else paint(regions, h, w, r)[0] for r in OVERLAP_RULES}
        _count_overlap_losses(summary, regions, painted)
    hist = np.bincount(labels.ravel(), minlength=256)
    for i, n in enumerate(summary.classes):
        summary.class_pixels[n] += int(hist[i])
    summary.ignored_pixels += int(hist[IGNORE])
    summary.overlapping_pixels += overlapping
    target = out / "masks" / f"{stem}.png"
    if target.exists() or target.is_symlink():  # left by the user beside an earlier conversion
        raise DataError(f"{target}: exists and seglab convert did not write it; move it, or give a new --out folder")
    save_index_png(target, labels, default_palette(len(summary.classes)))
    summary.mask_files.append(target.name)
    summary.masks += 1


def write_list(summary: ConvertSummary, out: Path, split: str, pairs: list[tuple[Path, str]]) -> None:
    """OUT/SPLIT.txt: 'IMAGE MASK' lines (absolute image paths, masks relative to OUT) that data.SPLIT.list reads."""
    atomic_write_text(out / f"{split}.txt", "".join(f"{Path(image).resolve()} masks/{mask}\n" for image, mask in pairs))
    summary.list_files[split] = f"{split}.txt"


def _finish(summary: ConvertSummary, out: Path,
            palette: Optional[Sequence[tuple[int, int, int]]] = None) -> ConvertSummary:
    """label_colors.txt (the classes in id order, with `palette`'s colours, default the VOC map) and convert.json."""
    palette = palette or default_palette(len(summary.classes))
    atomic_write_text(out / "label_colors.txt",
                      "".join(f"{r} {g} {b}\t{n}\n" for n, (r, g, b) in zip(summary.classes, palette)))
    summary.out_dir = str(out)
    atomic_write_text(out / "convert.json", json.dumps(summary.__dict__, indent=1))
    return summary
