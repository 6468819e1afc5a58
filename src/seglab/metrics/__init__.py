"""Metrics: a confusion-matrix accumulator with pure derivations, and Boundary IoU."""
from .boundary import BoundaryIoU, boundary_band, boundary_dilation
from .confusion import (
    ConfusionMatrix, confusion_counts, dice_from_confusion, fwiou_from_confusion, iou_from_confusion, nanmean,
    pixel_accuracy_from_confusion, precision_from_confusion, recall_from_confusion, summarize_confusion,
)

__all__ = [
    "BoundaryIoU", "boundary_band", "boundary_dilation", "ConfusionMatrix", "confusion_counts", "dice_from_confusion",
    "fwiou_from_confusion", "iou_from_confusion", "nanmean", "pixel_accuracy_from_confusion",
    "precision_from_confusion", "recall_from_confusion", "summarize_confusion",
]
