"""LabelSpace: class names, colours and the ignore value; palette-file parsing."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .multilabel import MAX_MULTILABEL_CLASSES, blend_palette

# colours of overlapping classes, far apart so their means (the overlaps) stay readable
MULTILABEL_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240),
                      (245, 130, 48)]


def default_palette(n: int) -> list[tuple[int, int, int]]:
    """The Pascal VOC bit-interleaved colour map: distinct colours for any class count."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


@dataclass
class LabelSpace:
    """Class names and colours, index i = class i; `void_colors` decode to `ignore_index`."""

    names: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int = 255
    void_colors: list[tuple[int, int, int]] = field(default_factory=list)
    # overlapping classes: a label map holds one bit per class (data/multilabel.py), the model one sigmoid each
    multilabel: bool = False

    def __post_init__(self) -> None:
        if len(self.names) != len(self.palette):
            raise ValueError("names and palette differ in length")
        if len(self.names) < 2:
            raise DataError(f"a label space needs at least 2 classes, got {self.names}")
        if self.multilabel and (len(self.names) > MAX_MULTILABEL_CLASSES or self.ignore_index < 1 << len(self.names)):
            raise DataError(f"{len(self.names)} overlapping classes: at most {MAX_MULTILABEL_CLASSES} fit one byte "
                            f"per pixel, with an ignore value of at least 2^classes (data.ignore_index is "
                            f"{self.ignore_index})")
        if len(self.names) >= 255 or self.ignore_index < len(self.names):
            raise DataError(
                f"{len(self.names)} classes do not fit with ignore index {self.ignore_index} (at most 254 classes)"
            )

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) index mask -> (H, W, 3) uint8 colours; ignored pixels are black. Multi-label maps: a
        class's own colour, overlapping classes the mean of theirs, no class black."""
        if self.multilabel:
            lut = blend_palette(self.palette)
        else:
            lut = np.zeros((256, 3), np.uint8)
            lut[: self.num_classes] = np.asarray(self.palette, np.uint8)
        return lut[mask.astype(np.uint8)]

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "palette": [list(c) for c in self.palette],
            "ignore_index": self.ignore_index,
            "void_colors": [list(c) for c in self.void_colors],
            "multilabel": self.multilabel,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LabelSpace":
        return cls(
            names=list(d["names"]),
            palette=[tuple(int(v) for v in c) for c in d["palette"]],
            ignore_index=int(d["ignore_index"]),
            void_colors=[tuple(int(v) for v in c) for c in d.get("void_colors", [])],
            multilabel=bool(d.get("multilabel", False)),
        )


def read_palette_file(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """Parse CamVid `label_colors.txt` ("R G B<whitespace>Name"), `class_dict.csv` ("name,r,g,b") or CVAT's
    `labelmap.txt` ("name:r,g,b:parts:actions", from its Segmentation mask export)."""
    if not path.is_file():
        raise DataError(f"{path}: palette file not found")
    text = path.read_text(errors="replace")
    rows: list[tuple[str, tuple[int, int, int]]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.reader(text.splitlines())
        for lineno, row in enumerate(reader, 1):
            row = [c.strip() for c in row]
            if not row or not any(row):
                continue
            if lineno == 1 and len(row) >= 2 and not row[1].lstrip("-").isdigit():
                continue  # header such as "name,r,g,b"
            if len(row) < 4:
                raise DataError(f"{path}:{lineno}: expected 'name,r,g,b', got {','.join(row)!r}")
            rows.append((row[0], _rgb(row[1:4], path, lineno)))
    elif _is_cvat_labelmap(text):
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split(":")
            if len(fields) < 2:
                raise DataError(f"{path}:{lineno}: expected CVAT's 'name:r,g,b:parts:actions', got {line.strip()!r}")
            rows.append((fields[0].strip(), _rgb(fields[1].split(","), path, lineno)))
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) < 4:
                raise DataError(f"{path}:{lineno}: expected 'R G B Name', got {line.strip()!r}")
            rows.append((" ".join(parts[3:]), _rgb(parts[:3], path, lineno)))
    if not rows:
        raise DataError(f"{path}: palette file has no classes")
    colors = [c for _, c in rows]
    dup = {c for c in colors if colors.count(c) > 1}
    if dup:
        raise DataError(f"{path}: colour {sorted(dup)[0]} is given to more than one class")
    names = [n.lower() for n, _ in rows]
    dup_names = sorted({n for n, _ in rows if names.count(n.lower()) > 1})
    if dup_names:
        raise DataError(f"{path}: class name {dup_names[0]!r} is listed more than once (with colours "
                        f"{[c for n, c in rows if n.lower() == dup_names[0].lower()]}); give each class one line")
    return rows


def _is_cvat_labelmap(text: str) -> bool:
    """CVAT's labelmap.txt: a '# label:color_rgb:parts:actions' header, or every line 'name:r,g,b:...'."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines and lines[0].startswith("#") and "color_rgb" in lines[0]:
        return True
    body = [ln for ln in lines if not ln.startswith("#")]
    return bool(body) and all(ln.count(":") >= 1 and ln.split(":")[1].count(",") == 2 for ln in body)


def _rgb(values: list[str], path: Path, lineno: int) -> tuple[int, int, int]:
    try:
        rgb = tuple(int(v) for v in values)
    except ValueError:
        raise DataError(f"{path}:{lineno}: colour values must be integers 0-255, got {values}") from None
    if any(not 0 <= v <= 255 for v in rgb):
        raise DataError(f"{path}:{lineno}: colour values must be integers 0-255, got {values}")
    return rgb  # type: ignore[return-value]
