"""Datasets: mask decoding, image-mask pairing, label spaces, splits, transforms, synthetic data."""
from .datasets import DataBundle, EpochSampler, EvalDataset, TrainDataset, build_data, build_labels, build_split
from .labels import LabelSpace, read_palette_file
from .masks import MaskDecoder, read_image

__all__ = [
    "DataBundle", "EpochSampler", "EvalDataset", "TrainDataset", "build_data", "build_labels", "build_split",
    "LabelSpace", "read_palette_file", "MaskDecoder", "read_image",
]
