"""A predictor for Python and notebooks (`seglab.load_model`): a checkpoint, an ONNX or a TorchScript export
in memory, predicting numpy arrays, PIL images or files with exactly the steps `seglab predict` takes
(the model's normalisation, its eval section's sliding window / TTA, threshold and multi-label rules)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..data.masks import read_image, scale_image
from ..errors import DataError
from .inference import InferenceSettings, class_probabilities
from .model_files import Predictor
from .predict import check_threshold, class_map, sized_image_logits

ImageLike = Union[np.ndarray, str, Path, Any]  # Any: a PIL image


def scale_array(arr: np.ndarray, image_max: Optional[float], nodata: Optional[float] = None) -> np.ndarray:
    """An (H, W, C) array as predict reads a file of its dtype, or a one-line refusal where the array cannot be
    what such a file gives (the model would see other values than in training, silently)."""
    kind, name = arr.dtype.kind, arr.dtype.name
    if kind not in "uif":
        raise DataError(f"the array's dtype is {name}; give uint8 (0..255), uint16 / int16 (as 16-bit files) or float")
    if kind == "f" and not np.isfinite(arr).all():
        scale_image(arr, image_max, "the array", "replace them (e.g. with 0 or the band's minimum)", nodata)
    values = arr if nodata is None or math.isnan(nodata) else arr[arr != nodata]  # the stored data, gaps left out
    top = float(np.nanmax(values, initial=0))
    if kind in "iu" and arr.dtype.itemsize > 1 and image_max is None and 0 <= float(values.min(initial=0)) and top <= 255:
        raise DataError(f"the {name} array holds 0..{top:g}, 8-bit values, which as {name} are read as 16-bit data "
                        "(divided by 65535, as seglab reads such files); pass arr.astype(np.uint8)")
    if kind == "f" and image_max is None and top > 1.5:
        raise DataError(f"the {name} array holds values up to {top:g}; seglab reads float images as 0..1 (the model "
                        "sets no data.image_max): pass uint8 for 0..255 data or divide it to 0..1 (a file: pass its path)")
    return scale_image(arr, image_max, "the array", "replace them", nodata)


class SegmentationPredictor:
    """`predict(image)`: (H, W) uint8 class ids at the image's own size (multi-label models: one bit per
    class); `probabilities(image)`: (K, H, W) float32 (softmax, or each class's sigmoid). An image is an
    (H, W, C) / (H, W) numpy array, a PIL image or a path; a list of them gives a list back. Arrays are scaled
    as `seglab predict` scales files of their dtype (`data.masks.scale_image`: uint8 as is; other integers and
    floats divided by the model's data.image_max, else by 65535 and 1); an array that cannot be such a file's
    (non-finite values, 8-bit values in a wider integer type, float values beyond 0..1 without image_max) is
    refused in one line."""

    def __init__(self, model: Predictor, settings: Optional[InferenceSettings], threshold: Optional[float] = None):
        check_threshold(threshold, model.labels)
        self.model, self.settings, self.threshold = model, settings, threshold

    @property
    def device(self) -> str:
        return str(self.model.device)

    @property
    def class_names(self) -> list[str]:
        return list(self.model.labels.names)

    def __repr__(self) -> str:
        return f"SegmentationPredictor({len(self.class_names)} classes on {self.device})"

    def image(self, image: ImageLike) -> np.ndarray:
        """An input as the (H, W, C) array predict reads from a file (C = the model's input channels)."""
        c = self.model.in_channels
        if isinstance(image, (str, Path)):
            return read_image(Path(image), c, self.model.image_max, nodata=self.model.nodata)
        if not isinstance(image, np.ndarray):
            try:
                from PIL import Image
            except ImportError:  # pragma: no cover - Pillow is a dependency
                Image = None
            if Image is None or not isinstance(image, Image.Image):
                raise DataError(f"expected a numpy array, a PIL image or a path, got {type(image).__name__}")
            image = np.asarray(image.convert("L" if c == 1 else "RGB"))
        arr = image[..., None] if image.ndim == 2 else image
        if arr.ndim != 3:
            raise DataError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
        if arr.shape[2] == 1 and c == 3:
            arr = np.repeat(arr, 3, axis=2)
        if arr.shape[2] == 4 and c == 3:  # RGBA: the alpha band is not an input
            arr = arr[..., :3]
        if arr.shape[2] != c:
            raise DataError(f"the image has {arr.shape[2]} channels, the model takes {c}")
        return scale_array(arr, self.model.image_max, self.model.nodata)

    def _one(self, image: ImageLike) -> tuple[np.ndarray, Any]:
        arr = self.image(image)
        where = str(image) if isinstance(image, (str, Path)) else "the image"
        return arr, sized_image_logits(self.model, arr, self.settings, where)

    def predict(self, images: Union[ImageLike, Sequence[ImageLike]]) -> Union[np.ndarray, list[np.ndarray]]:
        if isinstance(images, (list, tuple)):
            return [self.predict(im) for im in images]  # type: ignore[misc]
        _, logits = self._one(images)
        return class_map(logits, self.model.labels, self.threshold)

    def probabilities(self, images: Union[ImageLike, Sequence[ImageLike]]) -> Union[np.ndarray, list[np.ndarray]]:
        if isinstance(images, (list, tuple)):
            return [self.probabilities(im) for im in images]  # type: ignore[misc]
        _, logits = self._one(images)
        return class_probabilities(logits, self.model.labels.multilabel)[0].float().cpu().numpy()
