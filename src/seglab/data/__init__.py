"""Datasets: mask decoding, image-mask pairing, label spaces, splits, transforms, synthetic data.

The names below load on first use (PEP 562), so `seglab convert` and `inspect`'s first line do not wait
for torch and albumentations, which datasets.py needs.
"""
from __future__ import annotations

from ..lazy import lazy_getattr

_HOMES = {"DataBundle": "datasets", "EpochSampler": "datasets", "EvalDataset": "datasets", "TrainDataset": "datasets",
          "build_data": "datasets", "build_labels": "datasets", "build_split": "datasets", "LabelSpace": "labels",
          "read_palette_file": "labels", "MaskDecoder": "mask_formats", "read_image": "masks"}
__all__ = list(_HOMES)


__getattr__ = lazy_getattr(__name__, _HOMES, globals())
