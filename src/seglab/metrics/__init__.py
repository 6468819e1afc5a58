"""Metrics: confusion-matrix accumulators (one class per pixel, or per-class binary for overlapping classes)
with pure derivations, and Boundary IoU."""
from .boundary import BoundaryIoU, boundary_band, boundary_dilation
from .confusion import (
    ConfusionMatrix, confusion_counts, dice_from_confusion, fwiou_from_confusion, iou_from_confusion, nanmean,
    pixel_accuracy_from_confusion, precision_from_confusion, recall_from_confusion, summarize_confusion,
)
from .multilabel import (MultilabelConfusion, multilabel_counts, multilabel_iou, multilabel_pixel_accuracy,
                         summarize_multilabel)

__all__ = [
    "BoundaryIoU", "boundary_band", "boundary_dilation", "ConfusionMatrix", "confusion_counts", "dice_from_confusion",
    "fwiou_from_confusion", "iou_from_confusion", "nanmean", "pixel_accuracy_from_confusion",
    "precision_from_confusion", "recall_from_confusion", "summarize_confusion", "MultilabelConfusion",
    "multilabel_counts", "multilabel_iou", "multilabel_pixel_accuracy", "summarize_multilabel",
]
