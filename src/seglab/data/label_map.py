"""data.label_map and data.reduce_zero_label: mask values -> class ids or ignore, before any check of the ids
(Cityscapes labelIds -> trainIds, ADE20K's 0 = unlabelled)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from ..errors import DataError
from .labels import LabelSpace

Target = Union[int, str]
IGNORE_WORDS = ("ignore", "void")


def read_label_map(path: Path) -> dict[int, Target]:
    """A label-map file: a YAML / JSON mapping (value: target), or lines 'VALUE TARGET' / 'VALUE,TARGET'
    (# comments); a target is a class id, a class name or 'ignore'."""
    if not path.is_file():
        raise DataError(f"{path}: label map file not found (data.label_map)")
    text = path.read_text(errors="replace")
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        import yaml

        from ..config.loading import read_yaml

        def pairs_of_json(pairs: list) -> dict:
            keys = [k for k, _ in pairs]
            twice = next((k for k in keys if keys.count(k) > 1), None)
            if twice is not None:
                raise DataError(f"{path}: key {twice!r} is given twice; keep one of them (data.label_map)")
            return dict(pairs)

        try:
            raw = json.loads(text, object_pairs_hook=pairs_of_json) if path.suffix.lower() == ".json" else read_yaml(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise DataError(f"{path}: not a readable label map ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise DataError(f"{path}: a label map is a mapping 'mask value: class id, class name or ignore'")
        rows = [(str(k), v, f"{path}: key {k!r}") for k, v in raw.items()]
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            parts = line.split("#", 1)[0].replace(",", " ").split()
            if not parts:
                continue
            if len(parts) != 2:
                raise DataError(f"{path}:{lineno}: expected 'VALUE TARGET', got {line.strip()!r}")
            rows.append((parts[0], parts[1], f"{path}:{lineno}"))
    out: dict[int, Target] = {}
    first: dict[int, str] = {}
    for key, target, where in rows:
        if not key.strip().isdigit():
            raise DataError(f"{where}: mask value {key!r} is not a whole number from 0")
        target = int(target) if isinstance(target, str) and target.strip().lstrip("-").isdigit() else target
        value = int(key)
        if value in first:  # the last would win silently and the first's class lose its pixels
            raise DataError(f"{where}: mask value {value} is mapped twice ({first[value]} -> {out[value]!r}, "
                            f"here -> {target!r}); keep one of them")
        first[value], out[value] = where, target
    return out


def resolve_label_map(mapping: dict[int, Target], labels: LabelSpace, where: str) -> dict[int, int]:
    """mask value -> class id or the ignore value; class names are matched case-insensitively."""
    by_name = {n.lower(): i for i, n in enumerate(labels.names)}
    ignore, k = labels.ignore_index, labels.num_classes
    out: dict[int, int] = {}
    for value, target in mapping.items():
        if not 0 <= int(value) <= 65535:
            raise DataError(f"{where}: mask value {value} is outside 0..65535 (8- and 16-bit masks)")
        if isinstance(target, bool) or not isinstance(target, (int, str)):
            raise DataError(f"{where}: value {value} -> {target!r}: give a class id, a class name or ignore")
        if isinstance(target, str):
            name = target.strip().lower()
            if name in IGNORE_WORDS:
                out[int(value)] = ignore
            elif name in by_name:
                out[int(value)] = by_name[name]
            else:
                raise DataError(f"{where}: value {value} -> {target!r} is not a class name ({', '.join(labels.names)}) "
                                "nor ignore")
        elif 0 <= target < k or target == ignore or target == -1:  # -1: the ignore of Cityscapes' trainId tables
            out[int(value)] = ignore if target == -1 else target
        else:
            raise DataError(f"{where}: value {value} -> {target}: class ids are 0..{k - 1} (data.class_names), or "
                            f"{ignore} / ignore")
    if not out:
        raise DataError(f"{where}: the label map is empty")
    return out


def zero_label_remap(ignore_index: int) -> dict[int, int]:
    """reduce_zero_label: 0 -> ignore, v -> v - 1 (values above the ignore value are left to the id check)."""
    return {0: ignore_index, **{v: v - 1 for v in range(1, ignore_index)}}
