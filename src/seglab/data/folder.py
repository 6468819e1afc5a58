"""Pairing images with masks: by file stem across two folders, or from 'image mask' list files."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable, Optional

from ..errors import DataError
from .masks import IMAGE_EXTENSIONS
from .splits import Sample

log = logging.getLogger("seglab")


def _images_in(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files of `folder` (and of its sub-folders, e.g. Cityscapes' one folder per city, when
    `recursive`), sorted by path."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _stem_key(pattern: Optional[str], stem: str) -> Optional[str]:
    m = re.fullmatch(pattern, stem) if pattern is not None else None
    return m.group(1) if m else None


def marked_mask_key(stem: str, mask_suffix: str = "", stems: Optional[tuple[str, str]] = None) -> Optional[str]:
    """The pairing key of a file marked as a mask by `mask_suffix` or the mask regex of `stems`; None for a
    file the rule does not mark (so in a shared folder it is an image)."""
    if stems is not None:
        return _stem_key(stems[1], stem)
    if mask_suffix and stem.endswith(mask_suffix) and len(stem) > len(mask_suffix):
        return stem[: -len(mask_suffix)]
    return None


def pair_folders(
    images: Path, masks: Path, mask_suffix: str = "", problems: Optional[list[str]] = None,
    stems: Optional[tuple[str, str]] = None, regions: Optional[Path] = None, region_suffix: str = "",
    notes: Optional[list[str]] = None, recursive: bool = False,
) -> list[Sample]:
    """Pair every image with its mask, any image extension: the mask of the same stem plus `mask_suffix`,
    or, with `stems` = (image regex, mask regex), the mask whose stem shares the regexes' one group.

    Images and masks may share a folder (CamSeq01: NAME.png beside NAME_L.png): files marked as masks
    by the suffix or the mask regex are never listed as images. An image without a mask, and two images
    or two masks of one key (a.png, a.jpg), raise, or are left out and listed in `problems` when a list
    is given. Masks without an image are left out and listed in `notes` (logged without it).

    With `regions`, each image also gets the region mask whose stem is the image's stem plus
    `region_suffix` (a region folder shared with the images needs the suffix, so regions are not images).
    `recursive` looks in sub-folders too (stems must then be unique across them).
    """
    same = images.resolve() == masks.resolve() if images.is_dir() else False
    if same and not mask_suffix and stems is None:
        raise DataError(f"{images}: images and masks are the same folder; set data.mask_suffix (e.g. _L) or "
                        "data.pair_stems so masks can be told from images")
    region_files = _region_index(images, regions, region_suffix, recursive) if regions is not None else None
    regions_shared = region_files is not None and images.is_dir() and images.resolve() == regions.resolve()  # type: ignore[union-attr]

    def mask_key(stem: str) -> Optional[str]:
        return marked_mask_key(stem, mask_suffix, stems) if (stems is not None or mask_suffix) else stem

    def refuse(msg: str) -> None:
        if problems is None:
            raise DataError(msg)
        problems.append(msg)

    def image_key(stem: str) -> Optional[str]:
        if (same and mask_key(stem) is not None) or (regions_shared and stem.endswith(region_suffix)):
            return None  # a mask, or a region mask, in a folder shared with the images
        return _stem_key(stems[0], stem) if stems is not None else stem

    by_key, ambiguous = _index_files(masks, mask_key, refuse, "a second mask for the image", recursive)
    # two images of one key would both train on its one mask
    image_of, ambiguous_images = _index_files(images, image_key, refuse, "a second image for the mask", recursive)
    ambiguous |= ambiguous_images
    _note_unpaired_masks(masks, images, by_key, image_of, notes)
    image_files = [(img, key) for key, img in image_of.items() if key not in ambiguous]
    samples = []
    expected = (f"with a stem matching '{stems[1]}' and key '{{key}}'" if stems is not None
                else f"'{{stem}}{mask_suffix}.*'")
    for img, key in image_files:
        mask = by_key.get(key)
        missing = f"no mask {expected.format(key=key, stem=img.stem)} in {masks}" if mask is None else ""
        region = region_files.get(img.stem + region_suffix) if region_files is not None else None
        if not missing and region_files is not None and region is None:
            missing = f"no region mask '{img.stem}{region_suffix}.*' in {regions}"
        if missing:
            refuse(f"{img}: {missing}")
            continue
        samples.append(Sample(str(img), str(mask), region=str(region) if region is not None else ""))
    if not samples:
        raise _no_samples(images, masks, len(image_files), len(by_key), mask_suffix, stems)
    return samples


def _note_unpaired_masks(masks: Path, images: Path, by_key: dict, image_of: dict, notes: Optional[list[str]]) -> None:
    """Masks without an image are left out, said in `notes` (logged as a warning without it)."""
    unpaired = sorted(set(by_key) - set(image_of))
    if not unpaired:
        return
    msg = (f"{masks}: {len(unpaired)} mask file(s) without an image in {images}, left out: "
           f"{', '.join(by_key[k].name for k in unpaired[:3])}{' ...' if len(unpaired) > 3 else ''}")
    if notes is None:
        log.warning(msg)
    else:
        notes.append(msg)


def _no_samples(images: Path, masks: Path, num_images: int, num_masks: int, mask_suffix: str,
                stems: Optional[tuple[str, str]]) -> DataError:
    """The one-line error of a folder pair that gave no sample: no image at all, or no image's mask."""
    if num_images:
        rule = f"mask stems matching '{stems[1]}'" if stems is not None else f"NAME{mask_suffix}.png or another extension"
        return DataError(f"{masks}: no mask for any of the {num_images} images in {images} "
                         f"({num_masks} mask files; expected {rule})")
    what = f" with a stem matching '{stems[0]}'" if stems is not None else ""
    return DataError(f"{images}: no images{what} ({', '.join(IMAGE_EXTENSIONS)})")


def _index_files(folder: Path, key_of: Callable[[str], Optional[str]], refuse: Callable[[str], None],
                 second: str, recursive: bool = False) -> tuple[dict[str, Path], set[str]]:
    """The image files of `folder` by key (files whose key is None are skipped), and the keys held by two
    files (a.png and a.jpg: which one is meant is not ours to guess), each refused once per extra file."""
    by_key: dict[str, Path] = {}
    ambiguous: set[str] = set()
    for f in _images_in(folder, recursive):
        key = key_of(f.stem)
        if key is None:
            continue
        if key in by_key:
            refuse(f"{f}: {second} '{key}' ({by_key[key].name} and {f.name}); keep one of them")
            ambiguous.add(key)
            continue
        by_key[key] = f
    return by_key, ambiguous


def _region_index(images: Path, regions: Path, region_suffix: str, recursive: bool = False) -> dict[str, Path]:
    """Region mask files by stem."""
    if images.is_dir() and regions.is_dir() and images.resolve() == regions.resolve() and not region_suffix:
        raise DataError(f"{regions}: images and region masks are the same folder; set data.region_suffix "
                        "(e.g. _mask) so region masks can be told from images")
    files: dict[str, Path] = {}
    for r in _images_in(regions, recursive):
        files.setdefault(r.stem, r)
    return files


class _NameIndex:
    """Finds a file listed with a path from another machine by its trailing path parts under root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_name: Optional[dict[str, list[Path]]] = None

    def resolve(self, listed: str, list_file: Path, lineno: int) -> Path:
        p = Path(listed)
        if not p.is_absolute():
            for base in (self.root, list_file.parent):
                if (base / p).is_file():
                    return base / p
        elif p.is_file():
            return p
        pure = PureWindowsPath(listed) if "\\" in listed else PurePosixPath(listed)
        parts = [x for x in pure.parts if x not in ("/", "\\") and not x.endswith(":\\")]
        for k in range(2, len(parts) + 1):  # e.g. /segpie/CamVid/trainannot/x.png -> root/trainannot/x.png
            cand = self.root.joinpath(*parts[-k:])
            if cand.is_file():
                return cand
        hits = self._names().get(parts[-1], []) if parts else []
        if len(hits) == 1:
            return hits[0]
        what = "matches several files" if hits else "not found"
        raise DataError(f"{list_file}:{lineno}: {listed!r} {what} under {self.root}")

    def _names(self) -> dict[str, list[Path]]:
        if self._by_name is None:
            self._by_name = {}
            for dirpath, _, files in os.walk(self.root):
                for f in files:
                    self._by_name.setdefault(f, []).append(Path(dirpath) / f)
        return self._by_name


def read_list_file(list_file: Path, root: Path) -> list[Sample]:
    """Read 'IMAGE MASK' or 'IMAGE MASK REGION' lines (REGION: the image's region mask); missing absolute
    paths are resolved by name inside `root`."""
    if not list_file.is_file():
        raise DataError(f"{list_file}: split list file not found")
    index = _NameIndex(root)
    samples = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) not in (2, 3):
            raise DataError(f"{list_file}:{lineno}: expected 'IMAGE MASK' or 'IMAGE MASK REGION', got {line!r}")
        paths = [str(index.resolve(x, list_file, lineno)) for x in parts]
        samples.append(Sample(paths[0], paths[1], region=paths[2] if len(paths) == 3 else ""))
    if not samples:
        raise DataError(f"{list_file}: split list is empty")
    return samples
