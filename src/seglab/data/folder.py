"""Pairing images with masks: by file stem across two folders, or from 'image mask' list files."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Optional

from ..errors import DataError
from .masks import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class Sample:
    image: str
    mask: str
    source: str = ""  # the data.sources entry of a merged dataset


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def pair_folders(
    images: Path, masks: Path, mask_suffix: str = "", problems: Optional[list[str]] = None
) -> list[Sample]:
    """Pair every image with the mask of the same stem (plus `mask_suffix`), any image extension.

    An image without a mask raises, or is skipped and listed in `problems` when a list is given.
    """
    by_stem: dict[str, Path] = {}
    for m in _images_in(masks):
        by_stem.setdefault(m.stem, m)
    samples = []
    image_files = _images_in(images)
    for img in image_files:
        mask = by_stem.get(img.stem + mask_suffix)
        if mask is None:
            msg = f"{img}: no mask '{img.stem}{mask_suffix}.*' in {masks}"
            if problems is None:
                raise DataError(msg)
            problems.append(msg)
            continue
        samples.append(Sample(str(img), str(mask)))
    if not samples:
        if image_files:
            raise DataError(f"{masks}: no mask for any of the {len(image_files)} images in {images} "
                            f"({len(by_stem)} mask files; expected NAME{mask_suffix}.png or another image extension)")
        raise DataError(f"{images}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return samples


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
    """Read 'image mask' lines; missing absolute paths are resolved by name inside `root`."""
    if not list_file.is_file():
        raise DataError(f"{list_file}: split list file not found")
    index = _NameIndex(root)
    samples = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{list_file}:{lineno}: expected 'IMAGE MASK', got {line!r}")
        img, mask = (index.resolve(x, list_file, lineno) for x in parts)
        samples.append(Sample(str(img), str(mask)))
    if not samples:
        raise DataError(f"{list_file}: split list is empty")
    return samples
