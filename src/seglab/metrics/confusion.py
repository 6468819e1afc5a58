"""One confusion-matrix accumulator and pure functions deriving every region metric from it.

matrix[t, p] counts pixels of ground-truth class t predicted as p; ignored pixels are never counted.
Per-class values are NaN where undefined (e.g. IoU of a class absent from ground truth and prediction)
and means skip NaN.
"""
from __future__ import annotations

import torch

from ..collectives import all_reduce_tensor


def labelled_pixels(pred: torch.Tensor, target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat int64 (target, pred) values of the pixels whose target is not `ignore_index`."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    t = target.reshape(-1).to(torch.int64)
    p = pred.reshape(-1).to(torch.int64)
    valid = t != ignore_index
    return t[valid], p[valid]


def confusion_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """(K, K) int64 counts, rows = target class, columns = predicted class, over the pixels of integer
    tensors `pred` and `target` of one shape (ignored target pixels left out); on the CPU."""
    t, p = labelled_pixels(pred, target, ignore_index)
    if t.numel() and (int(t.max()) >= num_classes or int(t.min()) < 0):
        raise ValueError(f"target holds class ids outside 0..{num_classes - 1}")
    n = num_classes
    return torch.bincount(t * n + p, minlength=n * n).reshape(n, n).cpu()


class ConfusionMatrix:
    """Accumulates (K, K) counts; `image_counts` and `summarize` are the kind's pure functions, so an
    evaluation loop serves any kind of accumulator (metrics/multilabel.py's too) without asking which."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def image_counts(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Counts of one prediction, to `add` (see `confusion_counts`)."""
        return confusion_counts(pred, target, self.num_classes, self.ignore_index)

    @staticmethod
    def summarize(counts: torch.Tensor) -> dict:
        """Every region metric of a counts matrix (`summarize_confusion`)."""
        return summarize_confusion(counts)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: integer tensors of the same shape, e.g. (N, H, W)."""
        self.add(self.image_counts(pred, target))

    def add(self, counts: torch.Tensor) -> None:
        """Add (K, K) counts from `confusion_counts`."""
        self.matrix += counts

    def all_reduce(self) -> None:
        """Sum the matrix over distributed ranks (no-op without a process group)."""
        self.matrix = all_reduce_tensor(self.matrix)


def safe_divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / b in float64, NaN where b is 0."""
    a, b = a.double(), b.double()
    out = torch.full_like(a, float("nan"))
    ok = b > 0
    out[ok] = a[ok] / b[ok]
    return out


def _parts(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tp = m.diag()
    return tp, m.sum(0) - tp, m.sum(1) - tp  # tp, fp, fn


def iou_from_confusion(m: torch.Tensor) -> torch.Tensor:
    """Per-class IoU = TP / (TP + FP + FN)."""
    tp, fp, fn = _parts(m)
    return safe_divide(tp, tp + fp + fn)


def dice_from_confusion(m: torch.Tensor) -> torch.Tensor:
    """Per-class Dice = F1 = 2TP / (2TP + FP + FN)."""
    tp, fp, fn = _parts(m)
    return safe_divide(2 * tp, 2 * tp + fp + fn)


def precision_from_confusion(m: torch.Tensor) -> torch.Tensor:
    """(K, K) confusion (rows target, columns prediction) -> (K,) precision, NaN where undefined."""
    tp, fp, _ = _parts(m)
    return safe_divide(tp, tp + fp)


def recall_from_confusion(m: torch.Tensor) -> torch.Tensor:
    """Per-class recall, also called class accuracy."""
    tp, _, fn = _parts(m)
    return safe_divide(tp, tp + fn)


def pixel_accuracy_from_confusion(m: torch.Tensor) -> float:
    """Share of the labelled pixels predicted right."""
    total = int(m.sum())
    return float(m.diag().sum()) / total if total else float("nan")


def fwiou_from_confusion(m: torch.Tensor) -> float:
    """Frequency-weighted IoU: sum over classes of (ground-truth share) x IoU."""
    freq = m.sum(1).double()
    if freq.sum() == 0:
        return float("nan")
    iou = iou_from_confusion(m)
    ok = freq > 0
    return float((freq[ok] / freq.sum() * iou[ok].nan_to_num(0.0)).sum())


def nanmean(values: torch.Tensor) -> float:
    """Mean over the values that are not NaN (NaN when all are)."""
    v = values[~torch.isnan(values)]
    return float(v.mean()) if v.numel() else float("nan")


def summarize_confusion(m: torch.Tensor) -> dict:
    """All region metrics as plain floats / lists (NaN for undefined classes)."""
    iou, dice = iou_from_confusion(m), dice_from_confusion(m)
    prec, rec = precision_from_confusion(m), recall_from_confusion(m)
    return {
        "pixel_accuracy": pixel_accuracy_from_confusion(m),
        "mean_accuracy": nanmean(rec),
        "miou": nanmean(iou),
        "mean_dice": nanmean(dice),
        "fwiou": fwiou_from_confusion(m),
        "iou": iou.tolist(),
        "dice": dice.tolist(),
        "precision": prec.tolist(),
        "recall": rec.tolist(),
    }
