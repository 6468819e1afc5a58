"""Region metrics of overlapping classes: one binary (absent / present) confusion matrix per class.

matrix[k, t, p] counts labelled pixels where class k's truth is t and its prediction p (0 absent, 1 present),
from label maps packed one bit per class (data/multilabel.py). Per-class values follow torchmetrics'
multi-label conventions: IoU, Dice, precision and recall of each class's presence; pixel accuracy is the
mean over classes of each class's binary accuracy ("macro").
"""
from __future__ import annotations

import torch

from .confusion import ConfusionMatrix, labelled_pixels, nanmean, safe_divide


def multilabel_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """(K, 2, 2) int64 counts over packed integer maps `pred` and `target` of one shape (ignored target
    pixels left out); on the CPU."""
    t, p = labelled_pixels(pred, target, ignore_index)
    if t.numel() and int(t.max()) >= 1 << num_classes:
        raise ValueError(f"target holds values outside the {num_classes}-class bit patterns 0..{(1 << num_classes) - 1}")
    out = torch.empty(num_classes, 2, 2, dtype=torch.int64)
    for k in range(num_classes):
        out[k] = torch.bincount(((t >> k) & 1) * 2 + ((p >> k) & 1), minlength=4).reshape(2, 2).cpu()
    return out


class MultilabelConfusion(ConfusionMatrix):
    """Accumulates `multilabel_counts` in a (K, 2, 2) `matrix`; updating, adding and summing over ranks as
    ConfusionMatrix."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__(num_classes, ignore_index)
        self.matrix = torch.zeros(num_classes, 2, 2, dtype=torch.int64)

    def image_counts(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(K, 2, 2) counts of packed maps (see `multilabel_counts`)."""
        return multilabel_counts(pred, target, self.num_classes, self.ignore_index)

    @staticmethod
    def summarize(counts: torch.Tensor) -> dict:
        return summarize_multilabel(counts)


def _parts(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return m[:, 1, 1], m[:, 0, 1], m[:, 1, 0], m[:, 0, 0]  # tp, fp, fn, tn


def multilabel_iou(m: torch.Tensor) -> torch.Tensor:
    """(K,) IoU of each class's presence; NaN for a class absent from truth and prediction."""
    tp, fp, fn, _ = _parts(m)
    return safe_divide(tp, tp + fp + fn)


def multilabel_pixel_accuracy(m: torch.Tensor) -> float:
    """Mean over classes of the share of labelled pixels whose presence of that class is right."""
    tp, fp, fn, tn = _parts(m)
    return nanmean(safe_divide(tp + tn, tp + fp + fn + tn))


def summarize_multilabel(m: torch.Tensor) -> dict:
    """The keys of `summarize_confusion`, for (K, 2, 2) per-class counts."""
    tp, fp, fn, _ = _parts(m)
    iou, dice = multilabel_iou(m), safe_divide(2 * tp, 2 * tp + fp + fn)
    prec, rec = safe_divide(tp, tp + fp), safe_divide(tp, tp + fn)
    freq = (tp + fn).double()
    ok = freq > 0
    fw = float((freq[ok] / freq.sum() * iou[ok].nan_to_num(0.0)).sum()) if ok.any() else float("nan")
    return {
        "pixel_accuracy": multilabel_pixel_accuracy(m),
        "mean_accuracy": nanmean(rec),
        "miou": nanmean(iou),
        "mean_dice": nanmean(dice),
        "fwiou": fw,
        "iou": iou.tolist(),
        "dice": dice.tolist(),
        "precision": prec.tolist(),
        "recall": rec.tolist(),
    }
