"""Datasets: mask decoding, image-mask pairing, label spaces, splits, transforms, synthetic data.

The names below load on first use (PEP 562), so `seglab convert` and `inspect`'s first line do not wait
for torch and albumentations, which datasets.py needs.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"DataBundle": "datasets", "EpochSampler": "datasets", "EvalDataset": "datasets", "TrainDataset": "datasets",
          "build_data": "datasets", "build_labels": "datasets", "build_split": "datasets", "LabelSpace": "labels",
          "read_palette_file": "labels", "MaskDecoder": "masks", "read_image": "masks"}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'seglab.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value
