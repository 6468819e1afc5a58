"""Random train/val/test splits by ratio and seed, saved as split.json in the run folder."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Sequence, TypeVar

from ..errors import DataError
from ..fileio import atomic_write_text

T = TypeVar("T")


def random_split(items: Sequence[T], *, val: float, test: float, seed: int) -> dict[str, list[T]]:
    """Shuffle with `seed` and cut into train / val / test by ratio (each non-empty ratio gets >= 1)."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n = len(items)
    n_val = max(1, round(n * val)) if val > 0 else 0
    n_test = max(1, round(n * test)) if test > 0 else 0
    if n_val + n_test >= n:
        raise DataError(f"cannot split {n} samples into train/val/test with ratios val={val} test={test}")
    val_idx, test_idx = order[:n_val], order[n_val : n_val + n_test]
    train_idx = order[n_val + n_test :]
    pick = lambda idx: [items[i] for i in sorted(idx)]  # noqa: E731
    return {"train": pick(train_idx), "val": pick(val_idx), "test": pick(test_idx)}


def save_split(path: Path, split: dict) -> None:
    atomic_write_text(path, json.dumps(split, indent=1))


def load_split(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found") from None
    except json.JSONDecodeError:
        raise DataError(f"{path}: not a valid split file (JSON expected)") from None
