"""Interactive Plotly charts for the HTML reports; plotly.js is inlined once per page (works offline).

The pages inline plotly's basic partial bundle (scatter and bar traces, all the reports draw: 1.2 MB,
assets/plotly-basic.min.js, plotly.js-basic-dist-min 4.1.1, fetched from npm at install time, MIT licence
beside it) instead of the
full 4.8 MB plotly.js, so a comparison page and the run pages written with it stay small and self-contained."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]


BUNDLE = Path(__file__).parent / "assets" / "plotly-basic.min.js"


def plotly_script() -> str:
    """The <script> element holding plotly.js, to place once in the page head: the basic partial bundle
    (`make install` fetches it: scripts/fetch_plotly_bundle.py), else plotly's full bundle."""
    if BUNDLE.is_file():
        return f'<script type="text/javascript">{BUNDLE.read_text(encoding="utf-8")}</script>'
    from plotly.offline import get_plotlyjs

    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


def _clean(values: Sequence[Any]) -> list[Optional[float]]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            out.append(None)
            continue
        out.append(None if math.isnan(f) else f)
    return out


BUNDLED_TRACES = {"scatter", "bar"}  # what the basic bundle draws; another trace type needs another bundle


def _figure_html(fig, div_id: str) -> str:
    missing = {t.type for t in fig.data} - BUNDLED_TRACES
    if missing:
        raise ValueError(f"trace types {sorted(missing)} are not in the inlined plotly bundle ({BUNDLE.name})")
    fig.update_layout(template="plotly_white", margin=dict(l=50, r=20, t=40, b=40), height=340,
                      legend=dict(orientation="h", y=-0.2), font=dict(size=12))
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def line_chart(div_id: str, title: str, series: list[dict[str, Any]], *, xlabel: str = "epoch", ylabel: str = "",
               yrange: Optional[tuple[float, float]] = None) -> str:
    """series: [{"name", "x", "y", optional "dash"}]; None / NaN points are gaps."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, s in enumerate(series):
        fig.add_trace(go.Scatter(x=list(s["x"]), y=_clean(s["y"]), name=s["name"], mode="lines+markers",
                                 connectgaps=True, marker=dict(size=5),
                                 line=dict(color=s.get("color", PALETTE[i % len(PALETTE)]), dash=s.get("dash", "solid"))))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, hovermode="x unified")
    xs = [x for s in series for x in s["x"]]
    if xlabel == "epoch" and xs:  # whole epochs only
        fig.update_xaxes(tickformat="d", dtick=max(1, math.ceil(max(xs) / 10)))
    if yrange:
        fig.update_yaxes(range=list(yrange))
    return _figure_html(fig, div_id)


def bar_chart(div_id: str, title: str, categories: Sequence[str], series: list[dict[str, Any]], *, ylabel: str = "",
              yrange: Optional[tuple[float, float]] = None) -> str:
    """Grouped bars: one trace per series over the same categories."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, s in enumerate(series):
        fig.add_trace(go.Bar(x=list(categories), y=_clean(s["y"]), name=s["name"], marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(title=title, yaxis_title=ylabel, barmode="group")
    if yrange:
        fig.update_yaxes(range=list(yrange))
    return _figure_html(fig, div_id)
