"""Label Studio JSON exports -> a seglab mask folder (`seglab convert labelstudio EXPORT.json`).

The export is a list of tasks: `data.image` (the image's URL: `/data/upload/P/HASH-NAME.jpg` for uploads,
`/data/local-files/?d=PATH` for local storage, or a cloud / web URL) and `annotations[].result[]` regions with
`original_width` / `original_height`:
- `brushlabels` with `value.format: rle`: Label Studio's brush RLE (the rle-pack bit stream: 32 bits the number of
  values, 5 bits the word size - 1, four 4-bit run-size classes - 1; then chunks: 1 bit repeated or literal, 2 bits
  the size class, that many bits the count - 1, then one word or that many words) of the RGBA canvas; a pixel is
  the region's where its alpha is at least 128 (the brush's anti-aliased edge: its partial-alpha pixels are counted);
- `polygonlabels`: `value.points` in percent of the image's width and height, drawn with the pixel-centre rule
  (as COCO regions are);
- other region kinds (rectangles, keypoints, choices) are skipped and counted.
A task's first annotation that was not cancelled is used; tasks without one are dropped, or with
`unlabelled='keep'` written as all-background masks. Masks are named by the image's own file name (an upload's
8-character hash prefix removed); with `images` every image is looked up there, by its local-files path or its name,
its size checked against the annotation's, and OUT/train.txt pairs each image with its mask ("IMAGE MASK" lines)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Sequence
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
from PIL import Image

from ..errors import DataError
from .convert import (BACKGROUND_NAMES, IGNORE, IGNORE_NAMES, Region, _class_ids, _finish, _load_json, _summary, _write,
                      polygon_mask, prepare_out, write_list)

UNLABELLED = ("drop", "keep")
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
ALPHA_THRESHOLD = 128
_SOFT = "partial-alpha brush pixels"


def decode_brush_rle(rle: Sequence[int], where: str) -> np.ndarray:
    """Label Studio's brush RLE (a list of bytes) -> the flat uint8 values it encodes (RGBA, row-major)."""
    try:
        bits = np.unpackbits(np.asarray(rle, dtype=np.uint8))
    except (ValueError, TypeError, OverflowError):
        raise DataError(f"{where}: 'rle' is not a list of bytes 0..255") from None
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > len(bits):
            raise DataError(f"{where}: brush RLE ends early (at bit {pos} of {len(bits)}); the export is cut or altered")
        value = 0
        for b in bits[pos:pos + n]:
            value = (value << 1) | int(b)
        pos += n
        return value

    num = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, np.uint8)
    i = 0
    while i < num:
        repeated = read(1)
        end = i + 1 + read(sizes[read(2)])
        if end > num:
            raise DataError(f"{where}: brush RLE runs past its {num} values; the export is cut or altered")
        if repeated:
            out[i:end] = read(word)
        else:
            out[i:end] = [read(word) for _ in range(end - i)]
        i = end
    return out


def brush_mask(value: dict[str, Any], height: int, width: int, where: str) -> tuple[np.ndarray, int]:
    """A brush region -> (H, W) bool (alpha >= 128) and its count of partial-alpha pixels."""
    flat = decode_brush_rle(value.get("rle") or [], where)
    if flat.size != height * width * 4:
        raise DataError(f"{where}: brush RLE holds {flat.size} values; a {width}x{height} RGBA canvas has "
                        f"{height * width * 4}")
    alpha = flat.reshape(height, width, 4)[..., 3]
    return alpha >= ALPHA_THRESHOLD, int(((alpha > 0) & (alpha < 255)).sum())


def image_name(url: str) -> tuple[str, Optional[str]]:
    """The image's file name from a task's `data.image`, and the local-files path (None for other kinds)."""
    parsed = urlparse(url)
    if parsed.path.endswith("/data/local-files/") or "local-files" in parsed.path:
        d = parse_qs(parsed.query).get("d")
        if d:
            path = unquote(d[0])
            return Path(path).name, path
    name = Path(unquote(parsed.path)).name
    if "/data/upload/" in parsed.path:
        name = _UPLOAD_PREFIX.sub("", name)
    return name, None


def _resolve_image(url: str, images: Path, index: dict[str, list[Path]], where: str) -> Path:
    name, local = image_name(url)
    if local:  # local storage: the path under the storage root, or any tail of it under --images
        parts = [x for x in Path(local).parts if x not in ("/", "\\")]
        for k in range(len(parts)):
            cand = images.joinpath(*parts[k:])
            if cand.is_file():
                return cand
    hits = index.get(name, [])
    if len(hits) == 1:
        return hits[0]
    what = "is not" if not hits else f"is there {len(hits)} times"
    raise DataError(f"{where}: image {url!r} ({name}) {what} under --images {images}")


def _regions(result: list[dict[str, Any]], ids: dict[str, int], h: int, w: int, where: str,
             counts: dict[str, int]) -> list[Region]:
    """The mask regions of one annotation; `counts` gathers what was skipped and the partial-alpha pixels."""
    regions = []
    for k, r in enumerate(result):
        kind, value = str(r.get("type", "")).lower(), r.get("value") or {}
        if kind == "brushlabels" and value.get("format", "rle") == "rle":
            mask, soft = brush_mask(value, h, w, f"{where}, region {r.get('id', k)}")
            counts[_SOFT] = counts.get(_SOFT, 0) + soft
        elif kind == "polygonlabels":
            pts = np.asarray(value.get("points") or [], np.float64).reshape(-1, 2) * [w / 100.0, h / 100.0]
            mask = polygon_mask(pts, h, w, centres=True)
        else:
            counts[f"{kind or 'untyped'} regions (not masks)"] = counts.get(f"{kind or 'untyped'} regions (not masks)", 0) + 1
            continue
        names = value.get(kind) or []
        if len(names) != 1:
            raise DataError(f"{where}, region {r.get('id', k)}: has labels {names}; seglab takes one label per region")
        regions.append(Region(ids[str(names[0])], mask, k))
    return regions


def _annotation(task: dict[str, Any]) -> Optional[list[dict[str, Any]]]:
    for a in task.get("annotations") or task.get("completions") or []:
        if not a.get("was_cancelled") and a.get("result"):
            return a["result"]
    return None


def convert_labelstudio(export: Path, out: Path, *, images: Optional[Path] = None, unlabelled: str = "drop",
                        overlap: str = "smaller", classes: Optional[Sequence[str]] = None,
                        overwrite: bool = False) -> Any:
    """A Label Studio JSON export -> mask folder (masks/NAME.png, label_colors.txt, convert.json)."""
    if unlabelled not in UNLABELLED:
        raise DataError(f"--unlabelled: expected one of {', '.join(UNLABELLED)}, got {unlabelled!r}")
    tasks = _load_json(Path(export))
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and "data" in t for t in tasks):
        raise DataError(f"{export}: not a Label Studio JSON export (a list of tasks with 'data'); export as JSON")
    results = [(t, _annotation(t)) for t in tasks]
    found = sorted({str(n) for _, res in results for r in res or [] for key in ("brushlabels", "polygonlabels")
                    for n in (r.get("value") or {}).get(key) or []})
    special = {n: (0 if n.lower() in BACKGROUND_NAMES else IGNORE) for n in found
               if n.lower() in BACKGROUND_NAMES + IGNORE_NAMES}
    ids = _class_ids([n for n in found if n not in special], classes, str(export))
    summary, written = _summary(ids, overlap, [f"label {n!r} drawn as {'background 0' if v == 0 else 'the ignore value 255'}"
                                               for n, v in special.items()]), set()
    ids.update(special)
    index: dict[str, list[Path]] = {}
    if images is not None:
        if not Path(images).is_dir():
            raise DataError(f"--images {images}: no such folder")
        for p in Path(images).rglob("*"):
            if p.is_file():
                index.setdefault(p.name, []).append(p)
    prepare_out(out, overwrite)
    pairs: list[tuple[Path, str]] = []
    for t, result in results:
        url = str((t.get("data") or {}).get("image") or next(iter((t.get("data") or {}).values()), ""))
        stem = Path(image_name(url)[0]).stem
        where = f"{export}: task {t.get('id', '?')}"
        if result is None and unlabelled == "drop":
            summary.skipped["unlabelled tasks"] = summary.skipped.get("unlabelled tasks", 0) + 1
            continue
        size = next(((int(r["original_height"]), int(r["original_width"])) for r in result or []
                     if "original_width" in r and "original_height" in r), None)
        if images is not None:
            path = _resolve_image(url, Path(images), index, where)
            with Image.open(path) as im:
                actual = (im.height, im.width)
            if size is not None and size != actual:
                raise DataError(f"{where}: annotated at {size[1]}x{size[0]}, but {path} is {actual[1]}x{actual[0]}")
            size = actual
            pairs.append((path, f"{stem}.png"))
        if size is None:
            raise DataError(f"{where}: no region gives original_width / original_height; pass --images DIR so the "
                            "mask size is read from the image")
        regions = _regions(result or [], ids, size[0], size[1], where, summary.skipped)
        _write(summary, out, stem, regions, size[0], size[1], overlap, written)
    if pairs:
        write_list(summary, out, "train", pairs)
    soft = summary.skipped.pop(_SOFT, 0)
    if soft:
        summary.notes.append(f"{soft} brush pixels had partial alpha (anti-aliased edges): those >= "
                             f"{ALPHA_THRESHOLD} were taken as the region's")
    return _finish(summary, out)
