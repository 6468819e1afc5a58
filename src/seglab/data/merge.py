"""Merging labelled sources (e.g. several single-class datasets) into one shared label space.

Every sample keeps the set of shared classes its source annotates. In its mask, 0 means "none of
the annotated classes": background, or a class this source does not label. Losses decide what that
means (naive: background; marginal: background or any unannotated class).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import DataConfig, SourceConfig
from ..errors import ConfigError, DataError
from .labels import LabelSpace, default_palette
from .mask_formats import build_label_space
from .mask_formats import MaskDecoder

BACKGROUND = "background"


@dataclass
class MergedSource:
    """A source ready for loading: its own decoder and the lookup table into shared ids."""

    name: str
    config: SourceConfig
    decoder: MaskDecoder
    lut: np.ndarray  # (256,) uint8: source class index (or ignore) -> shared id (or ignore)
    labelled: np.ndarray  # (K,) bool: shared classes this source annotates; [0] (background) always True

    def decode(self, path: Path) -> np.ndarray:
        return self.lut[self.decoder(path)]

    @property
    def annotated(self) -> list[int]:
        return [int(c) for c in np.flatnonzero(self.labelled) if c > 0]


def _source_space(src: SourceConfig, root: Path, ignore_index: int) -> tuple[LabelSpace, dict[int, int]]:
    palette = None
    if src.palette_file is not None:
        p = Path(src.palette_file)
        palette = p if p.is_absolute() else root / p
    try:
        return build_label_space(encoding=src.mask_encoding, palette_file=palette, class_names=src.class_names,
                                 void_class=src.void_class, ignore_index=ignore_index)
    except DataError as exc:
        raise DataError(f"data.sources[{src.name}]: {exc}") from None


def _agree(store: dict, names: list[str], cls: str, value, source: str, what: str) -> None:
    """Record `value` for `cls` from `source`, or fail when another source gave it a different one."""
    if cls not in names:
        raise ConfigError(f"data.sources[{source}]: {cls!r} is not a class of the merged label space ({', '.join(names)})")
    if cls in store and store[cls][0] != value:
        raise ConfigError(f"{what}, but source {store[cls][1]!r} gives it {store[cls][0]}; sources must agree")
    store.setdefault(cls, (value, source))


def build_merged(data: DataConfig, root: Path) -> tuple[LabelSpace, list[MergedSource]]:
    """The shared label space (background first) and one MergedSource per configured source."""
    assert data.sources
    ignore = data.ignore_index
    spaces = {s.name: _source_space(s, root, ignore) for s in data.sources}
    names = _pin_ids(data, _shared_names(data, spaces))
    labels = LabelSpace(names, _shared_palette(data, spaces, names), ignore)
    return labels, [_merged_source(data, s, *spaces[s.name], names) for s in data.sources]


def _shared_names(data: DataConfig, spaces: dict[str, tuple[LabelSpace, dict[int, int]]]) -> list[str]:
    """data.class_names when given (checked against the sources), else background plus the names the
    sources map to, in order of appearance."""
    named: list[str] = []
    for s in data.sources:
        own = spaces[s.name][0].names
        for key, shared in s.mapping().items():
            if key not in own:
                raise ConfigError(f"data.sources[{s.name}].classes: {key!r} is not a class of this source; "
                                  f"its classes: {', '.join(own)}")
            if shared != BACKGROUND and shared not in named:
                named.append(shared)
    if not named:
        raise ConfigError("data.sources: no source annotates any class other than background")
    if data.class_names is not None:
        names = list(data.class_names)
        if not names or names[0] != BACKGROUND:
            raise ConfigError(f"data.class_names: a merged label space starts with '{BACKGROUND}', got {names}")
        for n in names[1:]:
            if n not in named:
                raise ConfigError(f"data.class_names: class {n!r} is named in no source; sources name: {', '.join(named)}")
        missing = [n for n in named if n not in names]
        if missing:
            raise ConfigError(f"data.class_names: sources name {missing} but data.class_names leaves them out")
    else:
        names = [BACKGROUND] + named
    return names


def _pin_ids(data: DataConfig, names: list[str]) -> list[str]:
    """The names reordered so the ids the sources pin hold; every source that pins an id must agree."""
    pinned: dict[str, tuple[int, str]] = {}
    for s in data.sources:
        for cls, cid in s.ids.items():
            _agree(pinned, names, cls, cid, s.name, f"data.sources[{s.name}].ids: class {cls!r} gets id {cid}")
    if pinned:
        if BACKGROUND in pinned and pinned[BACKGROUND][0] != 0:
            raise ConfigError(f"data.sources[{pinned[BACKGROUND][1]}].ids: '{BACKGROUND}' is id 0")
        by_id: dict[int, str] = {}
        for cls, (cid, src) in pinned.items():
            if not 0 <= cid < len(names):
                raise ConfigError(f"data.sources[{src}].ids: id {cid} for {cls!r} is outside 0..{len(names) - 1}")
            if cid in by_id and by_id[cid] != cls:
                raise ConfigError(f"data.sources[{src}].ids: id {cid} is given to both {by_id[cid]!r} and {cls!r}")
            by_id[cid] = cls
        by_id[0] = BACKGROUND
        rest = iter(n for n in names if n not in by_id.values())
        names = [by_id[i] if i in by_id else next(rest) for i in range(len(names))]
    return names


def _shared_palette(data: DataConfig, spaces: dict[str, tuple[LabelSpace, dict[int, int]]],
                    names: list[str]) -> list[tuple[int, int, int]]:
    """A colour per shared class: from palette files (for mapped classes) or explicit `colors`, on which
    the sources must agree; the default palette for the rest."""
    colours: dict[str, tuple[tuple[int, int, int], str]] = {}
    for s in data.sources:
        given: dict[str, tuple[int, int, int]] = {}
        if s.palette_file is not None:
            own_palette = dict(zip(spaces[s.name][0].names, spaces[s.name][0].palette))
            for key, shared in s.mapping().items():
                if shared != BACKGROUND:
                    given[shared] = tuple(own_palette[key])  # type: ignore[assignment]
        given.update({k: tuple(v) for k, v in s.colors.items()})  # type: ignore[misc]
        for cls, rgb in given.items():
            _agree(colours, names, cls, rgb, s.name, f"data.sources[{s.name}]: class {cls!r} has colour {rgb}")
    fallback = iter(c for c in default_palette(len(names) + 16) if c not in {v[0] for v in colours.values()})
    return [colours[n][0] if n in colours else next(fallback) for n in names]


def _merged_source(data: DataConfig, s: SourceConfig, own: LabelSpace, remap: dict[int, int],
                   names: list[str]) -> MergedSource:
    """A source's decoder and its lookup table from its own class ids to the shared ones."""
    mapping = s.mapping()
    lut = np.zeros(256, np.uint8)  # unmapped source classes: "none of the annotated classes"
    lut[data.ignore_index] = data.ignore_index
    labelled = np.zeros(len(names), bool)
    labelled[0] = True
    for i, n in enumerate(own.names):
        if n in mapping:
            lut[i] = names.index(mapping[n])
            labelled[lut[i]] = True
    decoder = MaskDecoder(s.mask_encoding, own, remap, **s.mask_options(), max_pixels=data.max_image_pixels)
    return MergedSource(s.name, s, decoder, lut, labelled)


def source_summary(labels: LabelSpace, sources: list[MergedSource]) -> list[dict]:
    """Per source: which shared classes it annotates and which it leaves unannotated."""
    out = []
    for s in sources:
        out.append({
            "source": s.name,
            "split": s.config.split,
            "encoding": s.config.mask_encoding,
            "annotates": [labels.names[c] for c in s.annotated],
            "unannotated": [n for c, n in enumerate(labels.names) if c > 0 and not s.labelled[c]],
        })
    return out


def source_index(sources: list[MergedSource], name: str, where: Optional[str] = None) -> int:
    """The index of source `name` in `sources`; DataError naming `where` when it is not there."""
    for i, s in enumerate(sources):
        if s.name == name:
            return i
    raise DataError(f"{where or 'split'}: source {name!r} is not in data.sources "
                    f"({', '.join(s.name for s in sources)})")
