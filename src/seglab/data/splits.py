"""Which samples train, validate and test a run (a typed `Split`, saved as the run folder's split.json),
random splits by ratio and seed, and k-fold splits for cross-validation."""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, TypeVar, Union

from ..errors import ConfigError, DataError
from ..fileio import atomic_write_text

T = TypeVar("T")

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """An image file and its mask file (paths as given or resolved from the config)."""

    image: str
    mask: str
    source: str = ""  # the data.sources entry of a merged dataset
    region: str = ""  # the image's region mask (field of view / don't care), if the split has them


@dataclass(frozen=True)
class SyntheticItem:
    """A built-in synthetic sample: index `index` of the generator's `stream` (train, val or test)."""

    stream: str
    index: int


Item = Union[Sample, SyntheticItem]


@dataclass
class Split:
    """The items of each of train / val / test; `kind` is the data.kind they come from (folder, merged,
    synthetic). In split.json a sample is [image, mask], [image, mask, source] or [image, mask, "", region],
    its paths relative to the data root recorded beside them (`root`), so that a run folder works from any
    directory and `--set data.root=` relocates moved data; a synthetic item is its index, or "stream/index"
    when some item sits outside its own stream (k-fold)."""

    kind: str
    train: list[Item] = field(default_factory=list)
    val: list[Item] = field(default_factory=list)
    test: list[Item] = field(default_factory=list)

    def items(self, name: str) -> list[Item]:
        """The items of split `name`; an empty split is an error."""
        items = getattr(self, name)
        if not items:
            raise DataError(f"the {name} split is empty")
        return items

    def present(self) -> list[str]:
        """The names of the non-empty splits, in train, val, test order."""
        return [name for name in SPLIT_NAMES if getattr(self, name)]

    def to_json(self, root: Optional[str] = None) -> dict[str, Any]:
        """Plain JSON; sample paths under the absolute folder `root` are written relative to it."""
        tagged = any(isinstance(it, SyntheticItem) and it.stream != name
                     for name in SPLIT_NAMES for it in getattr(self, name))
        under = root.rstrip(os.sep) + os.sep if root else None

        def rel(path: str) -> str:
            return path[len(under):] if under and path.startswith(under) else path

        def plain(it: Item) -> Any:
            if isinstance(it, SyntheticItem):
                return f"{it.stream}/{it.index}" if tagged else it.index
            paths = [rel(it.image), rel(it.mask)]
            return paths + ([it.source, rel(it.region)] if it.region else [it.source] if it.source else [])

        head = {"kind": self.kind, **({"root": root} if root and self.kind != "synthetic" else {})}
        return {**head, **{name: [plain(it) for it in getattr(self, name)] for name in SPLIT_NAMES}}

    @classmethod
    def from_json(cls, raw: Any, where: str = "split", root: Optional[str] = None) -> "Split":
        """Read what `to_json` wrote, relative paths under `root` (default: the root it recorded); anything
        else fails naming `where`, a data root that is not there names data.root."""
        if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str):
            raise DataError(f"{where}: not a seglab split (a mapping with kind, train, val, test expected)")
        base = raw.get("root")
        if base is not None and raw["kind"] != "synthetic":
            if not isinstance(base, str):
                raise DataError(f"{where}: root is {base!r}, not a folder path")
            moved = root is not None and os.path.abspath(root) != base
            base = os.path.abspath(root) if root is not None else base
            if not os.path.isdir(base):
                hint = ("" if moved else "; if the data has moved, pass --set data.root=FOLDER (where it is now): "
                        "the split's paths are relative to it")
                raise DataError(f"{where}: the run's data folder {base} (data.root) is not there{hint}")
        out = cls(raw["kind"])
        for name in SPLIT_NAMES:
            items = raw.get(name) or []
            try:
                setattr(out, name, [_item_from_json(it, name, raw["kind"], base) for it in items])
            except (TypeError, ValueError, IndexError):
                raise DataError(f"{where}: the {name} split holds an entry that is not a sample "
                                f"({str(items)[:80]})") from None
        return out

    def folds(self, k: int, seed: int) -> list["Split"]:
        """K splits whose val parts are disjoint folds of the train + val pool; test is left as it is."""
        pool = list(self.train) + list(self.val)
        if len(pool) < k:
            raise ConfigError(f"k_folds: {k} folds need at least {k} train + val samples, found {len(pool)}")
        order = list(range(len(pool)))
        random.Random(seed).shuffle(order)
        folds = [sorted(order[i::k]) for i in range(k)]
        out = []
        for i in range(k):
            held = set(folds[i])
            out.append(Split(self.kind, train=[pool[j] for j in range(len(pool)) if j not in held],
                             val=[pool[j] for j in folds[i]], test=list(self.test)))
        return out


def _item_from_json(it: Any, name: str, kind: str, base: Optional[str] = None) -> Item:
    if kind == "synthetic":
        if isinstance(it, str):
            stream, _, index = it.partition("/")
            if stream not in SPLIT_NAMES:
                raise ValueError(it)
            return SyntheticItem(stream, int(index))
        if isinstance(it, bool) or not isinstance(it, int):
            raise TypeError(it)
        return SyntheticItem(name, it)
    if not isinstance(it, list) or not 2 <= len(it) <= 4 or not all(isinstance(v, str) for v in it):
        raise TypeError(it)
    under = (lambda p: os.path.join(base, p) if p else p) if base else (lambda p: p)
    return Sample(under(it[0]), under(it[1]), it[2] if len(it) > 2 else "", under(it[3]) if len(it) > 3 else "")


def random_split_sizes(n: int, val: float, test: float) -> tuple[int, int]:
    """(val, test) sample counts that data.random_split draws from `n` (each non-empty ratio gets >= 1, and
    train keeps >= 1), or a DataError when `n` is too few."""
    n_val = max(1, round(n * val)) if val > 0 else 0
    n_test = max(1, round(n * test)) if test > 0 else 0
    if n_val + n_test >= n:
        raise DataError(f"cannot split {n} sample{'s' if n != 1 else ''} into train/val/test with ratios val={val} test={test}")
    return n_val, n_test


def random_split(items: Sequence[T], *, val: float, test: float, seed: int) -> dict[str, list[T]]:
    """Shuffle with `seed` and cut into train / val / test by ratio (each non-empty ratio gets >= 1)."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val, n_test = random_split_sizes(len(items), val, test)
    val_idx, test_idx = order[:n_val], order[n_val : n_val + n_test]
    train_idx = order[n_val + n_test :]
    pick = lambda idx: [items[i] for i in sorted(idx)]  # noqa: E731
    return {"train": pick(train_idx), "val": pick(val_idx), "test": pick(test_idx)}


def save_split(path: Path, split: Split, root: Optional[str] = None) -> None:
    """Write split.json, sample paths relative to the absolute data root `root` (data.root)."""
    atomic_write_text(path, json.dumps(split.to_json(root), indent=1))


def load_split(path: Path, root: Optional[str] = None) -> Split:
    """Read split.json; `root` (data.root, when a --set moved it) replaces the data root it recorded."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path}: not a valid split file (JSON expected)") from None
    return Split.from_json(raw, str(path), root)
