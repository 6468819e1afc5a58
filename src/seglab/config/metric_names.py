"""The one list of summary metric names. `train.best_metric`, `tune.metric`, metrics.csv's validation
columns, the final evaluation's tracked values, the comparison table and cross-validation all read it.
Adding a metric: compute it in `metrics/` (a pure function over the accumulated counts), return it from
`evaluation.evaluate.run_evaluation` under its name, and add the name here."""
from __future__ import annotations

# higher is better for every score; `val_loss` (lower is better) is the one other selectable value
SCORES = ("miou", "pixel_accuracy", "mean_accuracy", "mean_dice", "fwiou", "mean_boundary_iou")
SELECTABLE = (*SCORES, "val_loss")
# the validation values every validated epoch logs (metrics.csv, TensorBoard, trackers, the tune pruner)
VALIDATION_COLUMNS = ("val_loss", *(f"val_{name}" for name in SCORES))


def check_metric_name(name: str) -> str:
    """`name` if it is a selectable metric, else ValueError listing them (the schema names the key)."""
    if name not in SELECTABLE:
        raise ValueError(f"expected one of {', '.join(SELECTABLE)}")
    return name


def validation_column(name: str) -> str:
    """The metrics.csv column of a selectable metric: val_loss stays, miou -> val_miou."""
    return name if name.startswith("val_") else f"val_{name}"
