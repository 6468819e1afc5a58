"""What `seglab export --int8` is asked for (deploy/quantize.py does it); light enough for the CLI's parser."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import SeglabError

# The first convolutions (the stem and the first block: they read the image and write the widest, full-detail
# activations) stay FP32 by default: on the Weizmann Horse and CamVid U-Net Lite0 runs, quantizing them cost 2.0
# and 4.0 mIoU points, keeping the first 3 FP32 cost 0.07 and nothing (docs/benchmarks.md, 2026-12-03).
DEFAULT_FP32_FIRST = 3

# onnxruntime's Entropy method was tried and left out: on the Weizmann Horse U-Net it chose the very scales
# MinMax chose (all 142 activation scales equal), so it offered nothing measured.
CALIBRATION_METHODS = ("minmax", "percentile")
DEFAULT_CALIBRATION = "minmax"  # percentile bought 0.02 points on Horse for a slower model (docs/benchmarks.md)
DEFAULT_CALIBRATION_IMAGES = 64


@dataclass(frozen=True)
class Int8Recipe:
    """How `seglab export --int8` quantizes: calibration images, range method, how many of the first
    convolutions (in graph order) stay FP32."""

    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    calibration: str = DEFAULT_CALIBRATION
    fp32_first: int = DEFAULT_FP32_FIRST

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATION_METHODS:
            raise SeglabError(f"--calibration: expected one of {', '.join(CALIBRATION_METHODS)}, "
                              f"got {self.calibration!r}")
        if self.fp32_first < 0:
            raise SeglabError(f"--fp32-first: expected 0 or more convolutions, got {self.fp32_first}")

    def describe(self) -> str:
        return f"{self.calibration} calibration" + self.describe_fp32()

    def describe_fp32(self) -> str:
        """', first N convolutions in FP32' (empty when every convolution is quantized)."""
        if not self.fp32_first:
            return ""
        return f", first {self.fp32_first} convolution{'s' if self.fp32_first > 1 else ''} in FP32"
