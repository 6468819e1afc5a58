"""Comparison of finished runs: results.csv / results.md and one HTML page with overlaid curves."""
from __future__ import annotations

import csv
import html
import io
from pathlib import Path
from typing import Any, Optional, Sequence

from ..fileio import atomic_write_text
from ..config.metric_names import HEADLINE, MEAN_BOUNDARY_IOU, MEAN_DICE, MIOU, VAL_LOSS
from .interactive import bar_chart, line_chart
from .report import format_seconds, img_html, num_html, page, table_html
from ..artifacts.run_dir import REPORT, RESULTS_CSV, RESULTS_MD, RunDir

COMPARED = (*HEADLINE, MEAN_DICE)  # the scores results.csv holds, after the experiment, model and split
COLUMNS = ["experiment", "model", "split", *(mt.name for mt in COMPARED), "parameters",
           "gflops", "gflops_input", "train_seconds", "train_images_per_s", "eval_images_per_s", "epochs", "steps",
           "best_epoch", "budget_seconds", "planned_epochs", "estimated_seconds", "device", "hardware", "precision"]


def result_row(name: str, run: RunDir, split: str, gflops: Optional[float], gflops_input: str) -> dict[str, Any]:
    """One experiment's numbers from its run folder (summary.json, eval/<split>/metrics.json)."""
    summary = run.read_json(run.summary) or {}
    m = run.read_json(run.eval_metrics(split)) or {}
    timing = summary.get("timing", {})
    row: dict[str, Any] = {
        "experiment": name, "model": summary.get("model"), "split": split, **{mt.name: m.get(mt.name) for mt in COMPARED},
        "parameters": summary.get("parameters"), "gflops": gflops,
        "gflops_input": gflops_input, "train_seconds": timing.get("train_seconds"),
        "train_images_per_s": timing.get("train_images_per_s"),
        "eval_images_per_s": (m["num_images"] / m["seconds"]) if m.get("seconds") else None,
        "epochs": _epochs_completed(timing), "steps": timing.get("steps_run"), "best_epoch": summary.get("best_epoch"),
        "budget_seconds": timing.get("budget_seconds"), "planned_epochs": timing.get("planned_epochs"),
        "estimated_seconds": timing.get("estimated_seconds"),
        # timings mean little without these
        "device": summary.get("device"), "hardware": summary.get("hardware"), "precision": summary.get("precision"),
    }
    for cls, v in zip(m.get("class_names", []), m.get("iou", [])):
        row[f"iou_{cls}"] = v
    return row


def _epochs_completed(timing: dict[str, Any]) -> Optional[float]:
    """Epochs of training done: fractional when a time budget ended the run inside an epoch."""
    if not timing.get("steps_per_epoch") or timing.get("steps_run") is None:
        return timing.get("epochs_run")
    e = timing["steps_run"] / timing["steps_per_epoch"]
    return int(e) if e == int(e) else round(e, 2)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    extra: list[str] = []
    for r in rows:
        extra += [k for k in r if k.startswith("iou_") and k not in extra]
    return COLUMNS + extra


def results_csv(rows: list[dict[str, Any]]) -> str:
    """The comparison rows as results.csv text (COLUMNS, then per-class IoU columns)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_columns(rows), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in _columns(rows)})
    return buf.getvalue()


def _cells(r: dict[str, Any], classes: list[str]) -> list[str]:
    params = r.get("parameters")
    return ([r["experiment"], str(r.get("model") or "–")] + [num_html(r.get(mt.name), True) for mt in HEADLINE]
            + [num_html(r.get(f"iou_{c}"), True) for c in classes]
            + [f"{params / 1e6:.2f}M" if params else "–", f"{r['gflops']:.1f}" if r.get("gflops") is not None else "–",
               format_seconds(r.get("train_seconds")), num_html(r.get("epochs")), num_html(r.get("train_images_per_s")),
               num_html(r.get("eval_images_per_s"))])


def _header(classes: list[str]) -> list[str]:
    return (["experiment", "model", *(f"{mt.short} %" for mt in HEADLINE)] + [f"{c} IoU %" for c in classes]
            + ["params", "GFLOPs", "train time", "epochs", "train img/s", "eval img/s"])


def _classes(rows: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for r in rows:
        out += [k[4:] for k in r if k.startswith("iou_") and k[4:] not in out]
    return out


def results_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison rows as a Markdown table, best mIoU first, with its setting line."""
    classes = _classes(rows)
    lines = ["| " + " | ".join(_header(classes)) + " |", "|" + "---|" * len(_header(classes))]
    for r in rows:
        lines.append("| " + " | ".join(html.unescape(c) for c in _cells(r, classes)) + " |")
    split = rows[0]["split"] if rows else "?"
    gi = rows[0].get("gflops_input", "") if rows else ""
    return (setting_line(rows) + "\n\n" + "\n".join(lines)
            + f"\n\nMetrics on the {split} split at full resolution; GFLOPs per image at {gi}.\n")


def setting_line(rows: list[dict[str, Any]]) -> str:
    """What the numbers were measured under: the training budget(s), the hardware and the precision."""
    from ..durations import format_duration

    def distinct(key: str) -> list[Any]:
        return sorted({r.get(key) for r in rows if r.get(key) is not None}, key=str)

    budgets = distinct("budget_seconds")
    budget = ("no time budget (each experiment's own epochs)" if not budgets else
              f"training budget {format_duration(budgets[0])} per experiment" if len(budgets) == 1 else
              "training budgets " + ", ".join(format_duration(b) for b in budgets))
    hardware = ", ".join(f"{h}" for h in distinct("hardware")) or "hardware not recorded"
    precision = "/".join(distinct("precision")) or "?"
    return f"{budget[0].upper() + budget[1:]}; {hardware}; precision {precision}."


def write_comparison(out_dir: Path, rows: list[dict[str, Any]], runs: dict[str, RunDir],
                     predictions_png: Optional[Path] = None, title: str = "seglab comparison",
                     summary_rows: Sequence[dict[str, Any]] = ()) -> Path:
    """Write results.csv, results.md and report.html into out_dir; returns the report path.

    The tables in results.md and the page rank the experiments by mIoU; summary_rows (e.g. mean and std
    over folds) follow the ranked experiment rows in every table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / RESULTS_CSV, results_csv(rows + list(summary_rows)))
    ranked = sorted(rows, key=lambda r: -(r.get("miou") or -1))  # best first; results.csv keeps the given order
    atomic_write_text(out_dir / RESULTS_MD, results_markdown(ranked + list(summary_rows)))
    classes = _classes(rows)
    table = table_html(_header(classes), [_cells(r, classes) for r in ranked + list(summary_rows)])
    cards = _cards(rows, ranked)
    charts = _comparison_charts(rows, runs, classes)
    chart_html = "<div class='charts'>" + "".join(f"<div>{c}</div>" for c in charts) + "</div>"
    preds = img_html(predictions_png, "predictions") if predictions_png is not None else ""
    links = "".join(f"<li><a href='{html.escape(_rel(run.report, out_dir))}'>{html.escape(name)}</a> "
                    f"<small>{html.escape(str(run.path))}</small></li>" for name, run in runs.items())
    body = (f"<header><h1>{html.escape(title)}</h1><p>{len(rows)} experiments, metrics on the "
            f"{html.escape(str(rows[0]['split'] if rows else '?'))} split at full resolution</p></header><main>"
            f"<section><h2>Results</h2><p>{html.escape(setting_line(rows))}</p>{cards}{table}<p><small>GFLOPs per image at "
            f"{html.escape(str(rows[0].get('gflops_input', '')) if rows else '')}; train img/s is the mean over epochs; "
            f"files: results.csv, results.md</small></p></section>"
            f"<section><h2>Learning curves</h2>{chart_html}</section>"
            + (f"<section><h2>The same images, every model</h2>{preds}</section>" if preds else "")
            + f"<section><h2>Runs</h2><ul>{links}</ul></section></main>")
    report = out_dir / REPORT
    atomic_write_text(report, page(title, body, interactive=True))
    return report


def _cards(rows: list[dict[str, Any]], ranked: list[dict[str, Any]]) -> str:
    """The best, the fastest and the count of experiments, as cards above the table."""
    if not ranked:
        return ""
    best = ranked[0]
    fastest = max(rows, key=lambda r: r.get("eval_images_per_s") or 0)
    return (f"<div class='cards'><div class='card'><b>{html.escape(best['experiment'])}</b><span>best mIoU: "
            f"{num_html(best.get('miou'), True)} %</span></div><div class='card'><b>{html.escape(fastest['experiment'])}"
            f"</b><span>fastest inference: {num_html(fastest.get('eval_images_per_s'))} img/s</span></div>"
            f"<div class='card'><b>{len(rows)}</b><span>experiments</span></div></div><br>")


def _comparison_charts(rows: list[dict[str, Any]], runs: dict[str, RunDir], classes: list[str]) -> list[str]:
    """Learning curves of every run (over epochs and over training time) and per-class IoU bars."""
    histories = {name: run.read_history() for name, run in runs.items()}

    def curves(key: str, over_time: bool = False) -> list[dict[str, Any]]:
        out = []
        for name, hist in histories.items():
            if over_time:  # minutes of training at each epoch's end (runs from before it was recorded have none)
                pts = [(h["elapsed_seconds"] / 60, h.get(key)) for h in hist
                       if h.get(key) is not None and h.get("elapsed_seconds") is not None]
            else:
                pts = [(int(h["epoch"]), h.get(key)) for h in hist if h.get(key) is not None]
            if pts:
                out.append({"name": name, "x": [p[0] for p in pts], "y": [p[1] for p in pts]})
        return out

    charts = [
        line_chart("cmp_val_miou_time", f"Validation {MIOU.label} over training time", curves(MIOU.column, True),
                   xlabel="training time (min)", ylabel=MIOU.label, yrange=(0, 1)),
        line_chart("cmp_train_loss_time", "Training loss over training time", curves("train_loss", True),
                   xlabel="training time (min)", ylabel="loss"),
        line_chart("cmp_val_miou", f"Validation {MIOU.label}", curves(MIOU.column), ylabel=MIOU.label, yrange=(0, 1)),
        line_chart("cmp_train_loss", "Training loss", curves("train_loss"), ylabel="loss"),
        line_chart("cmp_val_loss", "Validation loss", curves(VAL_LOSS.column), ylabel="loss"),
        line_chart("cmp_val_biou", f"Validation {MEAN_BOUNDARY_IOU.label}", curves(MEAN_BOUNDARY_IOU.column),
                   ylabel="Boundary IoU", yrange=(0, 1)),
    ]
    if classes:
        charts.append(bar_chart("cmp_per_class", f"Per-class IoU ({rows[0]['split']} split)", classes,
                                [{"name": r["experiment"], "y": [r.get(f"iou_{c}") for c in classes]} for r in rows],
                                ylabel="IoU", yrange=(0, 1)))
    return charts


def _rel(target: Path, start: Path) -> str:
    import os

    try:
        return os.path.relpath(target, start)
    except ValueError:
        return str(target)
