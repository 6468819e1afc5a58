"""The per-class table in its three forms (HTML report, per_class.md, per_class.csv) and the one test for a
missing value: every table and plot of seglab renders through here."""
from __future__ import annotations

import csv
import io
import math
from typing import Any

from ..config.metric_names import HEADLINE

PER_CLASS_KEYS = ("iou", "boundary_iou", "dice", "precision", "recall")
PER_CLASS_HEADER = ["class", "IoU %", "Boundary IoU %", "Dice %", "precision %", "recall %"]


def is_missing(v: Any) -> bool:
    """None or NaN: a class absent from ground truth and prediction, an epoch without validation."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def percent(v: Any, missing: str = "") -> str:
    """A fraction as a percentage with 2 decimals."""
    return missing if is_missing(v) else f"{100 * v:.2f}"


def per_class_values(names: list[str], m: dict[str, Any]) -> list[list[Any]]:
    """Rows [name, iou, boundary_iou, dice, precision, recall] of an evaluation's metrics.json."""
    return [[n] + [m.get(k, [None] * len(names))[i] for k in PER_CLASS_KEYS] for i, n in enumerate(names)]


def per_class_csv(names: list[str], m: dict[str, Any]) -> str:
    """per_class.csv: one row per class (IoU, Boundary IoU, Dice, precision, recall)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["class", *PER_CLASS_KEYS])
    for row in per_class_values(names, m):
        w.writerow([row[0]] + ["" if is_missing(v) else v for v in row[1:]])
    return buf.getvalue()


def per_image_csv(names: list[str], rows: list[dict[str, Any]]) -> str:
    """One line per image: its mIoU, pixel accuracy, mean Boundary IoU and IoU per class (empty where a
    class is in neither its ground truth nor its prediction)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image", *(mt.name for mt in HEADLINE), *(f"iou_{n}" for n in names)])
    for r in rows:
        values = [*(r[mt.name] for mt in HEADLINE), *r["iou"]]
        w.writerow([r["name"]] + ["" if is_missing(v) else f"{v:.6f}" for v in values])
    return buf.getvalue()


def per_class_markdown(names: list[str], m: dict[str, Any]) -> str:
    """The per-class table as Markdown, with the means last."""
    lines = ["| " + " | ".join(PER_CLASS_HEADER) + " |", "|" + "---|" * len(PER_CLASS_HEADER)]
    lines += [f"| {row[0]} | " + " | ".join(percent(v) for v in row[1:]) + " |" for row in per_class_values(names, m)]
    lines.append(f"| **mean** | {percent(m['miou'])} | {percent(m['mean_boundary_iou'])} | {percent(m['mean_dice'])} | | |")
    return "\n".join(lines) + "\n"
