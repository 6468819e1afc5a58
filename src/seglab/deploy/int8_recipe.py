"""What `seglab export --int8` is asked for (deploy/quantize.py does it); light enough for the CLI's parser."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import SeglabError

# onnxruntime's Entropy method was tried and left out: on the Weizmann Horse U-Net it chose the very scales
# MinMax chose (all 142 activation scales equal), so it offered nothing measured.
CALIBRATION_METHODS = ("minmax", "percentile")


@dataclass(frozen=True)
class Int8Recipe:
    """How `seglab export --int8` quantizes: calibration images, range method, FP32 first/last convolution."""

    calibration_images: int = 64
    calibration: str = "minmax"
    fp32_ends: bool = False

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATION_METHODS:
            raise SeglabError(f"--calibration: expected one of {', '.join(CALIBRATION_METHODS)}, "
                              f"got {self.calibration!r}")

    def describe(self) -> str:
        return f"{self.calibration} calibration" + (", first and last convolution in FP32" if self.fp32_ends else "")
