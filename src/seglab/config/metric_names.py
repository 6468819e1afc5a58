"""The metric vocabulary: each summary metric's name, label and direction, in one place. `train.best_metric`
(and which epoch is best, and early stopping), `tune.metric` (and the study's direction), metrics.csv's
validation columns, the final evaluation's tracked values, the report's cards and curves, the comparison table
and cross-validation all read it. Adding a metric: compute it in `metrics/` (a pure function over the
accumulated counts), return it from `evaluation.evaluate.run_evaluation` under its name, and add it here."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """name: the key in metrics.json and the configs; label: how reports and plots title it; short: a table
    header's; higher_is_better: its direction (what `best`, early stopping and a study optimise)."""

    name: str
    label: str
    short: str
    higher_is_better: bool = True

    @property
    def column(self) -> str:
        """Its metrics.csv column: val_loss stays, miou -> val_miou."""
        return self.name if self.name.startswith("val_") else f"val_{self.name}"

    def better(self, a: float, b: float) -> bool:
        """Whether value `a` beats value `b` in this metric's direction."""
        return a > b if self.higher_is_better else a < b


# the scores the evaluation computes (higher is better for each), in the order tables show them
MIOU = Metric("miou", "mIoU", "mIoU")
PIXEL_ACCURACY = Metric("pixel_accuracy", "pixel accuracy", "pixel acc.")
MEAN_BOUNDARY_IOU = Metric("mean_boundary_iou", "mean Boundary IoU", "mean BIoU")
MEAN_ACCURACY = Metric("mean_accuracy", "mean class accuracy", "mean acc.")
MEAN_DICE = Metric("mean_dice", "mean Dice", "mean Dice")
FWIOU = Metric("fwiou", "frequency-weighted IoU", "fwIoU")
VAL_LOSS = Metric("val_loss", "validation loss", "val loss", higher_is_better=False)

SCORE_METRICS = (MIOU, PIXEL_ACCURACY, MEAN_ACCURACY, MEAN_DICE, FWIOU, MEAN_BOUNDARY_IOU)
HEADLINE = (MIOU, PIXEL_ACCURACY, MEAN_BOUNDARY_IOU)  # what reports, curves and comparisons lead with
REPORTED = (*HEADLINE, MEAN_ACCURACY, MEAN_DICE, FWIOU)  # a report's cards, in order
SCORES = tuple(m.name for m in SCORE_METRICS)
# selectable as train.best_metric / tune.metric: every score, and the validation loss (lower is better)
SELECTABLE = (*SCORES, VAL_LOSS.name)
_BY_NAME = {m.name: m for m in (*SCORE_METRICS, VAL_LOSS)}
# the validation values every validated epoch logs (metrics.csv, TensorBoard, trackers, the tune pruner)
VALIDATION_COLUMNS = (VAL_LOSS.column, *(m.column for m in SCORE_METRICS))


def metric(name: str) -> Metric:
    """The vocabulary's entry for a selectable name (KeyError otherwise; configs are checked when read)."""
    return _BY_NAME[name]


def check_metric_name(name: str) -> str:
    """`name` if it is a selectable metric, else ValueError listing them (the schema names the key)."""
    if name not in SELECTABLE:
        raise ValueError(f"expected one of {', '.join(SELECTABLE)}")
    return name


def validation_column(name: str) -> str:
    """The metrics.csv column of a selectable metric: val_loss stays, miou -> val_miou."""
    return metric(name).column
