"""A self-contained HTML report of one run: plots inlined as data URIs, no external assets."""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Optional

from ..fileio import atomic_write_text
from ..config.metric_names import HEADLINE, REPORTED
from .interactive import line_chart, plotly_script
from ..artifacts.run_dir import RunDir, fmt_value
from .tables import PER_CLASS_HEADER, is_missing, per_class_values

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#b8c0d0;font-size:13px}
main{padding:20px 32px;max-width:1200px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin-bottom:18px;box-shadow:0 1px 3px #0002;overflow-x:auto}
h2{font-size:17px;margin:0 0 12px}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{background:#eef2fb;border-radius:6px;padding:10px 16px;min-width:130px}
.card b{display:block;font-size:22px}.card span{font-size:12px;color:#556}
table{border-collapse:collapse;font-size:13px}td,th{padding:4px 10px;border-bottom:1px solid #e3e6ec;text-align:right}
th{background:#f0f2f6}td:first-child,th:first-child{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}figure{margin:0}
.figs img{max-width:100%;border:1px solid #e3e6ec;border-radius:4px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:14px;width:100%}
pre{background:#f7f7f9;padding:10px;font-size:12px;overflow:auto;max-height:420px}
"""


def img_html(path: Path, alt: str) -> str:
    """A PNG embedded in the page (pages stay single files); "" when the file is missing."""
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def num_html(v: Any, pct: bool = False) -> str:
    """A table cell: a percentage with 2 decimals (`pct`) or 4 significant digits; a dash for missing or NaN."""
    if is_missing(v):
        return "–"
    return f"{100 * v:.2f}" if pct else (f"{v:.4g}" if isinstance(v, float) else html.escape(str(v)))


def table_html(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table; header cells are escaped, row cells are already HTML."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def per_class_rows(names: list[str], metrics: dict[str, Any]) -> list[list[str]]:
    """The per-class table's rows as HTML cells."""
    return [[html.escape(row[0])] + [num_html(v, pct=True) for v in row[1:]] for row in per_class_values(names, metrics)]


def _eval_section(run: RunDir, split: str, names: list[str]) -> str:
    m = run.read_json(run.eval_metrics(split))
    if not m:
        return ""
    cards = [(mt.label, m.get(mt.name)) for mt in REPORTED]
    card_html = "".join(f'<div class="card"><b>{num_html(v, pct=True)}</b><span>{k} (%)</span></div>' for k, v in cards)
    figs = "".join(img_html(run.plots / f"{f}_{split}.png", f) for f in ("per_class_iou", "confusion"))
    samples = img_html(run.plots / f"samples_{split}.png", "samples")
    hist = img_html(run.plots / f"per_image_miou_{split}.png", "per-image mIoU")
    worst = img_html(run.plots / f"worst_{split}.png", "worst images")
    per_image = (f"<h2>Per image</h2><p>mIoU of each image (every image's metrics: eval/{split}/per_image.csv); "
                 f"the worst ones below, wrong pixels in red.</p><div class='figs'>{hist}</div>{worst}"
                 if hist or worst else "")
    ckpt = html.escape(str(m.get("checkpoint", "")))
    return (
        f"<section><h2>{split} split: {m.get('num_images', '?')} images at full resolution "
        f"<small>({ckpt})</small></h2><div class='cards'>{card_html}</div><br>"
        f"{table_html(PER_CLASS_HEADER, per_class_rows(names, m))}<div class='figs'>{figs}</div>"
        f"{'<h2>Predictions</h2>' + samples if samples else ''}{per_image}</section>"
    )


def _history_rows(run: RunDir) -> tuple[list[str], list[list[str]]]:
    history = run.read_history()
    header = list(history[0]) if history else []
    return header, [[fmt_value(row[k]) for k in header] for row in history]


def build_report(run: RunDir, title: Optional[str] = None) -> Path:
    """Write run/report.html from the run folder's files; returns its path."""
    summary = run.read_json(run.summary) or {}
    names = summary.get("class_names", [])
    splits = sorted(p.name for p in (run.path / "eval").iterdir()) if (run.path / "eval").is_dir() else []
    timing = summary.get("timing", {})
    info = [("model", summary.get("model", "?")), ("parameters", f"{summary.get('parameters', 0):,}"),
            ("epochs run", timing.get("epochs_run")), ("total training time", format_seconds(timing.get("train_seconds"))),
            ("estimated before epoch 1", format_seconds(timing.get("estimated_seconds"))),
            ("time budget", format_seconds(timing.get("budget_seconds"))),
            ("mean epoch time", format_seconds(timing.get("mean_epoch_seconds"))),
            ("training images/s", num_html(timing.get("train_images_per_s"))),
            ("best epoch", summary.get("best_epoch")), ("device", summary.get("device")),
            ("hardware", summary.get("hardware"))]
    info = [(k, v) for k, v in info if v not in (None, "–") or k in ("best epoch",)]
    info_html = table_html(["", ""], [[html.escape(k), html.escape(str(v))] for k, v in info])
    header, hist = _history_rows(run)
    curves = _curves(header, hist)
    config = html.escape(run.config.read_text()) if run.config.is_file() else ""
    body = (
        f"<header><h1>{html.escape(title or run.path.name)}</h1><p>{html.escape(str(run.path.resolve()))}</p></header><main>"
        + "".join(_eval_section(run, s, names) for s in splits)
        + f"<section><h2>Training</h2>{info_html}<br>{curves}</section>"
        + (f"<section><h2>Per-epoch history</h2>{table_html(header, [[html.escape(c) for c in r] for r in hist])}"
           "</section>" if hist else "")
        + f"<section><h2>Resolved config</h2><pre>{config}</pre></section></main>"
    )
    atomic_write_text(run.report, page(f"seglab: {run.path.name}", body, interactive=bool(curves)))
    return run.report


def page(title: str, body: str, interactive: bool) -> str:
    """A whole HTML document; with `interactive`, plotly.js is inlined in the head (no network needed)."""
    script = plotly_script() if interactive else ""
    # charts drawn before the page finished its layout (scrollbar, grid) take their final width here
    fit = ("<script>window.addEventListener('load',function(){document.querySelectorAll('.plotly-graph-div')"
           ".forEach(function(d){Plotly.Plots.resize(d);});});</script>") if interactive else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style>{script}</head><body>{body}{fit}</body></html>")


def _curves(header: list[str], rows: list[list[str]]) -> str:
    """Interactive loss and validation-metric curves from metrics.csv rows."""
    if not rows:
        return ""
    col = {h: i for i, h in enumerate(header)}
    epochs = [int(float(r[col["epoch"]])) for r in rows]

    def series(key: str, name: str) -> dict:
        return {"name": name, "x": epochs, "y": [r[col[key]] if r[col[key]] != "" else None for r in rows]}

    loss = line_chart("curve_loss", "Loss", [series("train_loss", "train"), series("val_loss", "validation")], ylabel="loss")
    metrics = line_chart("curve_metrics", "Validation metrics", [series(mt.column, mt.label) for mt in HEADLINE],
                         ylabel="score", yrange=(0, 1))
    return f"<div class='charts'><div>{loss}</div><div>{metrics}</div></div>"


def format_seconds(v: Any) -> str:
    """Seconds as '95.0 s' or '12.3 min' (a dash when unknown)."""
    if v is None:
        return "–"
    v = float(v)
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"
