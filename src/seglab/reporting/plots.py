"""Matplotlib figures of a run, saved as PNG (atomically)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..config.metric_names import HEADLINE  # noqa: E402
from ..data.labels import LabelSpace  # noqa: E402
from ..data.masks import display_rgb  # noqa: E402
from ..fileio import atomic_path  # noqa: E402
from .tables import is_missing  # noqa: E402


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["epoch"], r[key]) for r in history if not is_missing(r.get(key))]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_loss_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Train and validation loss over epochs -> PNG at `path`."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        x, y = _series(history, key)
        if x:
            ax.plot(x, y, marker="o", ms=3, label=label)
    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_metric_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Validation mIoU, pixel accuracy and Boundary IoU over epochs and over time -> PNG at `path`."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for mt in HEADLINE:
        x, y = _series(history, mt.column)
        if x:
            ax.plot(x, y, marker="o", ms=3, label=mt.label)
    ax.set(xlabel="epoch", ylabel="validation score", title="Validation metrics", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_comparison_curves(histories: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Validation mIoU of several runs over training time (minutes) and over epochs, side by side."""
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for name, hist in histories.items():
        pts = [(r["elapsed_seconds"] / 60, r["val_miou"]) for r in hist
               if r.get("elapsed_seconds") is not None and not is_missing(r.get("val_miou"))]
        line = ax_t.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=2.5, label=name)[0] if pts else None
        x, y = _series(hist, "val_miou")
        if x:
            ax_e.plot(x, y, marker="o", ms=2.5, label=name, color=line.get_color() if line is not None else None)
    ax_t.set(xlabel="training time (min)", ylabel="validation mIoU", title="Over training time", ylim=(0, 1))
    ax_e.set(xlabel="epoch", title="Over epochs")
    for ax in (ax_t, ax_e):
        ax.grid(alpha=0.3)
    ax_e.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_per_class(names: Sequence[str], iou: Sequence[float], biou: Sequence[float], path: Path) -> Path:
    """Per-class IoU and Boundary IoU bars -> PNG at `path`."""
    y = np.arange(len(names))
    vals = lambda v: [0.0 if is_missing(x) else x for x in v]  # noqa: E731
    fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(names) + 1.4))
    for offset, v, label in ((-0.2, iou, "IoU"), (0.2, biou, "Boundary IoU")):
        bars = ax.barh(y + offset, vals(v), height=0.4, label=label)
        ax.bar_label(bars, labels=["–" if is_missing(x) else f"{x:.2f}" for x in v], fontsize=7, padding=2)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.08), xlabel="score", title="Per-class IoU")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _save(fig, path)


def plot_confusion(matrix: np.ndarray, names: Sequence[str], path: Path) -> Path:
    """Rows = ground truth, normalised to sum 1; (K, 2, 2) per-class matrices of overlapping classes as K
    small absent / present matrices."""
    m = np.asarray(matrix, np.float64)
    if m.ndim == 3:
        return _plot_binary_confusions(m, names, path)
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    n = len(names)
    fig, ax = plt.subplots(figsize=(0.5 * n + 2.5, 0.5 * n + 2))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set(xlabel="predicted", ylabel="ground truth", title="Confusion matrix (row-normalised)")
    if n <= 16:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def _plot_binary_confusions(m: np.ndarray, names: Sequence[str], path: Path) -> Path:
    k = len(names)
    fig, axes = plt.subplots(1, k, figsize=(2.3 * k + 0.5, 2.6), squeeze=False)
    ticks = ["absent", "present"]
    for c, ax in enumerate(axes[0]):
        rows = m[c].sum(1, keepdims=True)
        norm = np.divide(m[c], rows, out=np.zeros_like(m[c]), where=rows > 0)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(2), ticks, fontsize=7)
        ax.set_yticks(range(2), ticks, fontsize=7, rotation=90, va="center")
        ax.set_title(names[c], fontsize=9)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    axes[0][0].set(ylabel="ground truth")
    fig.suptitle("Per-class confusion (row-normalised; columns: predicted)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def color_legend(labels: LabelSpace, maps: Sequence[np.ndarray] = ()) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) of each class as the pictures draw it; for overlapping classes also each combination
    found in the label `maps` shown (at most 12, the commonest first)."""
    items = [(n, tuple(int(v) for v in c)) for n, c in zip(labels.names, labels.palette)]
    if labels.multilabel and maps:
        counts = sum(np.bincount(m.ravel().astype(np.uint8), minlength=256) for m in maps)
        lut = labels.colorize(np.arange(256, dtype=np.uint8)[None])[0]
        combos = [v for v in np.argsort(-counts, kind="stable")
                  if counts[v] and v < 1 << labels.num_classes and bin(int(v)).count("1") > 1][:12]
        items += [(" + ".join(n for k, n in enumerate(labels.names) if v >> k & 1), tuple(int(x) for x in lut[v]))
                  for v in combos]
    return items


def plot_grid(rows: list[list[np.ndarray]], titles: Sequence[str], path: Path, row_labels: Sequence[str] = (),
              legend: Sequence[tuple[str, tuple[int, int, int]]] = ()) -> Path:
    """A grid of images: one list of panels per row, one title per column; `legend`: colour swatches below."""
    nr, nc = len(rows), len(titles)
    fig, axes = plt.subplots(max(nr, 1), nc, figsize=(2.6 * nc, 2.2 * max(nr, 1)), squeeze=False)
    if legend:
        from matplotlib.patches import Patch

        # below the panels: the tight bounding box of _save takes it in
        fig.legend(handles=[Patch(color=np.asarray(c) / 255.0, label=n) for n, c in legend], loc="upper center",
                   ncol=min(len(legend), 6), fontsize=7, frameon=False,
                   bbox_to_anchor=(0.5, axes[-1][0].get_position().y0 - 0.005))
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            ax = axes[i][j]
            ax.imshow(panel.squeeze() if panel.ndim == 3 and panel.shape[-1] == 1 else panel,
                      cmap="gray" if panel.ndim == 2 or panel.shape[-1] == 1 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=9)
            if j == 0 and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=7)
    return _save(fig, path)


def plot_samples(samples, labels: LabelSpace, path: Path, overlay_fn) -> Path:
    """Input, ground truth, prediction and overlay for each (image, gt, pred) sample."""
    rows = []
    for image, gt, pred in samples:
        color = labels.colorize(pred)
        rows.append([display_rgb(image), labels.colorize(gt), color, overlay_fn(image, color)])
    return plot_grid(rows, ["input", "ground truth", "prediction", "overlay"], path,
                     legend=color_legend(labels, [m for _, gt, pred in samples for m in (gt, pred)]))


def error_map(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, ignore_index: int) -> np.ndarray:
    """The image dimmed, with wrongly predicted pixels in red and ignored ones in grey: (H, W, 3) uint8."""
    rgb = display_rgb(image)
    if rgb.shape[:2] != gt.shape:
        import cv2

        rgb = cv2.resize(rgb, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_AREA)
    out = (rgb.astype(np.float32) * 0.35).astype(np.uint8)
    out[gt == ignore_index] = (128, 128, 128)
    out[(gt != ignore_index) & (gt != pred)] = (255, 32, 32)
    return out


def plot_worst(worst, labels: LabelSpace, path: Path) -> Path:
    """Input, ground truth, prediction and error map of each (row, image, gt, pred), labelled by name and mIoU."""
    rows = [[display_rgb(image), labels.colorize(gt), labels.colorize(pred), error_map(image, gt, pred, labels.ignore_index)]
            for _, image, gt, pred in worst]
    names = [f"{r['name']}  mIoU {r['miou']:.3f}" for r, *_ in worst]
    return plot_grid(rows, ["input", "ground truth", "prediction", "errors (red)"], path, row_labels=names,
                     legend=color_legend(labels, [m for _, _, gt, pred in worst for m in (gt, pred)]))


def plot_histogram(values: Sequence[float], path: Path, xlabel: str = "per-image mIoU") -> Path:
    """A histogram of values in [0, 1] (NaNs left out), with the mean marked."""
    v = np.asarray([x for x in values if not is_missing(x)], dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.hist(v, bins=np.linspace(0, 1, 21), color="#4c72b0", edgecolor="white")
    if v.size:
        ax.axvline(v.mean(), color="#c44e52", linestyle="--", label=f"mean {v.mean():.3f}")
        ax.legend(loc="upper left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    return _save(fig, path)
