"""Plotly figure library for calibration, OOD, shift, selective prediction, σ-spectra and cost.

Every function returns a ``plotly.graph_objects.Figure`` drawn with one template (``"sve"``):
readable fonts, the Okabe–Ito colour-blind-safe palette, white background, axis titles with units.
Inputs follow :mod:`sve.metrics` (logits ``(N, M, C)`` or ``(N, C)``, labels ``(N,)``, uncertainty
scores with higher = more uncertain). Where several methods are compared, pass a mapping
``{method name: data}``; ``combine`` (how members' predictions are combined, ``"prob"`` or
``"logit"``) may then be a mapping ``{method name: combine}`` too. :func:`export` writes PNG/SVG/PDF
through kaleido and a system Chromium, all figures in one browser start.
"""

from __future__ import annotations

import os
import shutil
import textwrap
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from sve import metrics
from sve.errors import ConfigError, DataError, MissingAssetError, SVEError

#: Okabe & Ito (2008) colour-blind-safe palette, ordered for contrast on white
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
GAP_COLOR = "#D55E00"
NEUTRAL = "#7F7F7F"
_AXIS = dict(
    showgrid=True,
    gridcolor="#E6E6E6",
    showline=True,
    linecolor="#444444",
    ticks="outside",
    zeroline=False,
    automargin=True,
    title=dict(standoff=8),
)
pio.templates["sve"] = go.layout.Template(
    layout=dict(
        font=dict(family="Arial, 'DejaVu Sans', 'Liberation Sans', sans-serif", size=14, color="#222222"),
        title=dict(font=dict(size=17), x=0.02, xanchor="left"),
        colorway=PALETTE,
        paper_bgcolor="white",
        plot_bgcolor="white",
        xaxis=_AXIS,
        yaxis=_AXIS,
        legend=dict(bgcolor="rgba(255,255,255,0.8)"),
        colorscale=dict(sequential="Viridis", diverging="RdBu"),
        margin=dict(l=70, r=25, t=70, b=60),
    )
)

#: axis titles (with units) for the metric columns of sve.metrics.evaluate and cost tables
AXIS_TITLES = {
    "accuracy": "accuracy (fraction correct)",
    "nll": "NLL (nats per sample)",
    "brier": "Brier score (sum over classes)",
    "ece": "ECE (fraction, 15 bins)",
    "adaptive_ece": "adaptive ECE (fraction)",
    "mce": "MCE (fraction)",
    "classwise_ece": "class-wise ECE (fraction)",
    "aurc": "AURC (error rate × coverage)",
    "mean_msp": "mean 1 − max probability",
    "mean_entropy": "mean predictive entropy (nats)",
    "mean_mutual_info": "mean mutual information (nats)",
    "mean_expected_entropy": "mean expected entropy (nats)",
    "mean_energy": "mean energy (logit units)",
    "params": "trainable parameters (count)",
    "time_s": "time (s)",
    "memory_mb": "peak memory (MB)",
}
FORMATS = ("png", "svg", "pdf", "jpg", "jpeg", "webp")


def _finish(fig: go.Figure, title: str | None, width: int, height: int) -> go.Figure:
    fig.update_layout(template="sve", title_text=title, width=width, height=height)
    return fig


def _short(v: float) -> str:
    """Compact bar label: 1.2M, 45.3k, 0.812."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= size:
            return f"{v / size:.3g}{unit}"
    return f"{v:.3g}"


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _grid(k: int, max_cols: int = 3) -> tuple[int, int]:
    """(rows, cols) for ``k`` panels, at most ``max_cols`` wide and balanced: 4 → 2 × 2, 5 → 2 × 3."""
    rows = -(-k // max_cols)
    return rows, -(-k // rows)


def _named(data: Any, kind: str) -> dict[str, Any]:
    """``data`` as ``{name: item}``: a mapping passes through, anything else becomes ``{"model": data}``."""
    named = dict(data) if isinstance(data, Mapping) else {"model": data}
    if not named:
        raise DataError(f"{kind}: nothing to plot (an empty mapping was given).")
    return named


def _combine_of(combine: str | Mapping[str, str], name: str) -> str:
    """How method ``name``'s members are combined: ``combine`` itself, or its entry when a per-method
    mapping ``{method: "prob" | "logit"}`` is given (a run whose methods combine differently)."""
    if isinstance(combine, Mapping):
        if name not in combine:
            raise DataError(f"combine has no entry for {name!r}; give one for every method plotted "
                            f"(it has {sorted(combine)}).")
        return combine[name]
    return combine


def _pair(value: Any, name: str, what: str) -> tuple[Any, ...]:
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        raise DataError(f"{name!r}: expected a tuple {what}; got {type(value).__name__}.")
    return tuple(value)


# ----------------------------------------------------------------------------- calibration


def _reliability_data(data: Any, labels: Any, n_bins: int, scheme: str,
                      combine: str | Mapping[str, str]) -> dict[str, Any]:
    if labels is not None:
        data = (data, labels)
    out = {}
    for name, value in _named(data, "reliability_diagram").items():
        if isinstance(value, metrics.ReliabilityBins):
            out[name] = value
        else:
            logits, y = _pair(value, name, "(logits, labels) or a ReliabilityBins")[:2]
            out[name] = metrics.reliability_bins(logits, y, n_bins, scheme, _combine_of(combine, name))
    return out


def _bin_panel(fig: go.Figure, b: Any, row: int, col: int, first: bool) -> None:
    """Accuracy bars, hatched gap to the mean confidence, and counts (one row below) for one method."""
    centers, widths = (b.lower + b.upper) / 2, b.upper - b.lower
    hover = [f"bin [{lo:.3f}, {hi:.3f}]<br>n = {n}" for lo, hi, n in zip(b.lower, b.upper, b.count)]
    acc = go.Bar(
        x=centers,
        y=b.accuracy,
        width=widths,
        name="accuracy",
        legendgroup="acc",
        showlegend=first,
        marker=dict(color=PALETTE[0], line=dict(color="white", width=1)),
        hovertext=hover,
        hovertemplate="%{hovertext}<br>accuracy %{y:.3f}<extra></extra>",
    )
    gap = go.Bar(
        x=centers,
        y=-b.gap,
        base=b.accuracy,
        width=widths,
        name="gap to confidence",
        legendgroup="gap",
        showlegend=first,
        opacity=0.45,
        customdata=b.confidence,
        marker=dict(color=GAP_COLOR, pattern=dict(shape="/"), line=dict(color=GAP_COLOR, width=1)),
        hovertemplate="mean confidence %{customdata:.3f}<extra></extra>",
    )
    count = go.Bar(x=centers, y=b.count, width=widths, marker_color=NEUTRAL, name="count", showlegend=False)
    fig.add_trace(acc, row, col)
    fig.add_trace(gap, row, col)
    fig.add_trace(count, row + 1, col)


def _overlay_panel(fig: go.Figure, b: Any, name: str, i: int, k: int) -> None:
    """One method's accuracy-vs-confidence line, and its counts as one of ``k`` bars sharing each bin."""
    widths = b.upper - b.lower
    fig.add_trace(
        go.Scatter(
            x=b.confidence,
            y=b.accuracy,
            mode="lines+markers",
            name=f"{name} (ECE {b.ece:.3f})",
            line=dict(color=_color(i)),
            legendgroup=name,
        ),
        1,
        1,
    )
    fig.add_trace(
        go.Bar(
            x=(b.lower + b.upper) / 2,
            y=b.count,
            width=widths / k,
            offset=-widths / 2 + i * widths / k,
            marker_color=_color(i),
            showlegend=False,
            legendgroup=name,
            name=f"{name} count",
        ),
        2,
        1,
    )


def reliability_diagram(
    data: Any,
    labels: Any = None,
    *,
    n_bins: int = 15,
    scheme: str = "width",
    combine: str | Mapping[str, str] = "prob",
    overlay: bool = False,
    max_cols: int = 3,
    title: str | None = None,
) -> go.Figure:
    """Reliability diagram(s): per-bin accuracy against the diagonal, bin counts (log axis) underneath.

    ``data``: logits (with ``labels``), a :class:`sve.metrics.ReliabilityBins`, or a mapping
    ``{method: (logits, labels) | ReliabilityBins}``. Side by side (default): one panel per method (at
    most ``max_cols`` per row), accuracy bars with the gap to each bin's mean confidence hatched, ECE in
    the panel title. ``overlay=True``: one panel, one accuracy-vs-mean-confidence line per method (ECE
    in the legend). Empty bins are never drawn.
    """
    bins = _reliability_data(data, labels, n_bins, scheme, combine)
    k = len(bins)
    rows, cols = (1, 1) if overlay else _grid(k, max_cols)
    titles = None
    if not overlay and k > 1:
        names = [f"{n} · ECE {b.ece:.3f}" for n, b in bins.items()] + [""] * (rows * cols - k)
        titles = [t for r in range(rows) for t in names[r * cols : (r + 1) * cols] + [""] * cols]
    # per method row: accuracy panel, count panel, then an empty spacer row before the next one
    heights = ([0.68, 0.2, 0.12] * rows)[:-1]
    specs = [[{}] * cols if (r + 1) % 3 else [None] * cols for r in range(len(heights))]
    fig = make_subplots(
        rows=len(heights),
        cols=cols,
        row_heights=heights,
        specs=specs,
        vertical_spacing=0.02,
        horizontal_spacing=0.08,
        subplot_titles=titles,
    )
    for i, (name, b) in enumerate(bins.items()):
        if overlay:
            _overlay_panel(fig, b, name, i, k)
        else:
            _bin_panel(fig, b, 3 * (i // cols) + 1, i % cols + 1, i == 0)
    for i in range(1 if overlay else k):
        row, col = 3 * (i // cols) + 1, i % cols + 1
        fig.add_trace(
            go.Scatter(
                x=[0, 1],
                y=[0, 1],
                mode="lines",
                name="perfect calibration",
                legendgroup="diag",
                showlegend=i == 0,
                line=dict(color="#444444", dash="dash", width=1.5),
            ),
            row,
            col,
        )
        fig.update_xaxes(range=[0, 1], showticklabels=False, row=row, col=col)
        fig.update_xaxes(range=[0, 1], title_text="confidence (max probability)", row=row + 1, col=col)
        fig.update_yaxes(range=[0, 1.02], title_text="accuracy" if col == 1 else None, row=row, col=col)
        fig.update_yaxes(type="log", dtick=1, title_text="count" if col == 1 else None, row=row + 1, col=col)
    height = 160 + 420 * rows
    plot_height = height - 70 - 100  # minus the top and bottom margins set below
    legend = dict(orientation="h", x=0, y=-62 / plot_height, yanchor="top")  # 62 px under the x-axis title
    fig.update_layout(barmode="overlay", bargap=0, legend=legend, margin=dict(t=70, b=100))
    if title is None:
        first = next(iter(bins))
        title = f"Reliability · {first} · ECE {bins[first].ece:.3f}" if k == 1 else "Reliability diagrams"
    return _finish(fig, title, 680 if overlay else 110 + 330 * cols, height)


def confidence_histogram(
    data: Any,
    *,
    combine: str | Mapping[str, str] = "prob",
    n_bins: int = 20,
    log_y: bool = True,
    title: str | None = "Confidence histogram",
) -> go.Figure:
    """Share of samples per confidence bin (max probability; the equal-width bins of
    :func:`sve.metrics.calibration_bins`), one bar per method side by side, mean confidence in the
    legend. ``data``: logits or ``{method: logits}``. ``log_y``: log axis, so the sparse low-confidence
    bins stay visible next to the crowded top bin."""
    fig = go.Figure()
    for i, (name, logits) in enumerate(_named(data, "confidence_histogram").items()):
        conf = metrics.predictive_probs(logits, _combine_of(combine, name)).max(1)
        b = metrics.calibration_bins(conf, np.zeros_like(conf), n_bins)
        fig.add_trace(
            go.Bar(
                x=(b.lower + b.upper) / 2,
                y=100 * b.count / b.total,
                marker_color=_color(i),
                name=f"{name} (mean {conf.mean():.3f})",
                offsetgroup=str(i),
            )
        )
    fig.update_layout(
        barmode="group",
        bargap=0.1,
        xaxis_title="confidence (max probability)",
        yaxis_title="samples (%)" + (", log axis" if log_y else ""),
        xaxis_range=[0, 1],
        legend=dict(x=0.02, y=0.98),
    )
    if log_y:
        fig.update_yaxes(type="log", dtick=1)
    return _finish(fig, title, 680, 440)


# ----------------------------------------------------------------------------- OOD


def _score_pairs(scores: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        name: tuple(metrics.as_numpy(s).reshape(-1) for s in _pair(v, name, "(id_scores, ood_scores)")[:2])
        for name, v in _named(scores, "OOD scores").items()
    }


def ood_histograms(
    scores: Mapping[str, Any],
    *,
    nbins: int = 40,
    log_y: bool = False,
    title: str | None = "ID vs OOD uncertainty",
) -> go.Figure:
    """One panel per score: density histograms of the ID and the OOD scores, AUROC in the panel title.

    ``scores``: ``{score name: (id_scores, ood_scores)}`` (higher = more uncertain). ``log_y``: log
    density axis, for scores piled up at 0 (confident models).
    """
    pairs = _score_pairs(scores)
    rows, cols = _grid(len(pairs))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        horizontal_spacing=0.08,
        vertical_spacing=0.18,
        subplot_titles=[f"{k} · AUROC {metrics.auroc(*v):.3f}" for k, v in pairs.items()],
    )
    for i, (name, (id_s, ood_s)) in enumerate(pairs.items()):
        row, col = i // cols + 1, i % cols + 1
        lo, hi = float(min(id_s.min(), ood_s.min())), float(max(id_s.max(), ood_s.max()))
        size = (hi - lo) / nbins or 1.0
        for j, (label, s) in enumerate((("ID", id_s), ("OOD", ood_s))):
            fig.add_trace(
                go.Histogram(
                    x=s,
                    name=label,
                    legendgroup=label,
                    showlegend=i == 0,
                    opacity=0.6,
                    histnorm="probability density",
                    marker_color=_color(j),
                    xbins=dict(start=lo, end=hi + size, size=size),
                ),
                row,
                col,
            )
        fig.update_xaxes(title_text=f"{name} (higher = more uncertain)", row=row, col=col)
    fig.update_yaxes(title_text="density" + (", log axis" if log_y else ""), col=1)
    if log_y:
        fig.update_yaxes(type="log", dtick=1)
    fig.update_layout(barmode="overlay")
    return _finish(fig, title, 80 + 360 * cols, 120 + 320 * rows)


def roc_curves(scores: Mapping[str, Any], *, title: str | None = "OOD detection ROC") -> go.Figure:
    """ROC curves of OOD detection (OOD positive), one per score or method, AUROC in the legend.

    ``scores``: ``{name: (id_scores, ood_scores)}``.
    """
    fig = go.Figure()
    for i, (name, (id_s, ood_s)) in enumerate(_score_pairs(scores).items()):
        fpr, tpr, _ = metrics.roc_curve(id_s, ood_s)
        fig.add_trace(
            go.Scatter(
                x=fpr,
                y=tpr,
                mode="lines",
                line=dict(color=_color(i), width=2.5),
                name=f"{name} (AUROC {metrics.auroc(id_s, ood_s):.3f})",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="chance (AUROC 0.5)", line=dict(color=NEUTRAL, dash="dot")
        )
    )
    fig.update_layout(
        xaxis_title="false-positive rate (ID flagged as OOD)",
        yaxis_title="true-positive rate (OOD detected)",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1.01],
        legend=dict(x=0.98, y=0.02, xanchor="right", yanchor="bottom"),
    )
    return _finish(fig, title, 600, 540)


# ----------------------------------------------------------------------------- shift and selective prediction


def shift_curves(
    table: pd.DataFrame,
    *,
    x: str = "severity",
    columns: Sequence[str] = ("accuracy", "ece", "mean_entropy"),
    by: str | None = "method",
    title: str | None = "Under distribution shift",
) -> go.Figure:
    """One panel per metric column against shift severity, one line per ``by`` group (e.g. method).

    ``table``: a long DataFrame with columns ``x``, ``by`` and the metrics (e.g. rows of
    :func:`sve.metrics.evaluate` with ``severity`` and ``method`` added). Severity 0 = clean data.
    A column ``<metric>_std`` (as written by a mean ± std over seeds) is drawn as ± error bars.
    """
    needed = [x, *columns] + ([by] if by else [])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DataError(f"shift_curves: table lacks column(s) {missing}; it has {list(table.columns)}.")
    groups = table.groupby(by, sort=False) if by else [("all", table)]
    fig = make_subplots(rows=1, cols=len(columns), horizontal_spacing=0.13)
    for i, (name, part) in enumerate(groups):
        part = part.sort_values(x)
        for j, col in enumerate(columns):
            fig.add_trace(
                go.Scatter(
                    x=part[x],
                    y=part[col],
                    error_y=dict(type="data", array=part[f"{col}_std"], thickness=1.2, width=4)
                    if f"{col}_std" in part
                    else None,
                    mode="lines+markers",
                    name=str(name),
                    legendgroup=str(name),
                    showlegend=j == 0,
                    line=dict(color=_color(i), width=2.5),
                    marker=dict(size=8),
                ),
                1,
                j + 1,
            )
    for j, col in enumerate(columns):
        fig.update_xaxes(title_text=f"{x} (0 = clean)", dtick=1, row=1, col=j + 1)
        fig.update_yaxes(title_text=AXIS_TITLES.get(col, col), row=1, col=j + 1)
    return _finish(fig, title, 120 + 360 * len(columns), 430)


def risk_coverage_curves(
    data: Any,
    labels: Any = None,
    *,
    combine: str | Mapping[str, str] = "prob",
    max_points: int = 400,
    title: str | None = "Selective prediction",
) -> go.Figure:
    """Risk–coverage curves, AURC in the legend. ``data``: logits (with ``labels``) or
    ``{method: (logits, labels[, scores])}`` (default score: ``1 − max p``)."""
    if labels is not None:
        data = (data, labels)
    fig = go.Figure()
    for i, (name, value) in enumerate(_named(data, "risk_coverage_curves").items()):
        logits, y, *rest = _pair(value, name, "(logits, labels[, scores])")
        cov, risk = metrics.risk_coverage(logits, y, rest[0] if rest else None, _combine_of(combine, name))
        keep = np.unique(np.linspace(0, len(cov) - 1, min(max_points, len(cov))).round().astype(int))
        fig.add_trace(
            go.Scatter(
                x=cov[keep],
                y=risk[keep],
                mode="lines",
                line=dict(color=_color(i), width=2.5),
                name=f"{name} (AURC {risk.mean():.3g})",
            )
        )
    fig.update_layout(
        xaxis_title="coverage (fraction of samples kept)",
        yaxis_title="risk (error rate on kept samples)",
        xaxis_range=[0, 1],
        legend=dict(x=0.02, y=0.98),
    )
    return _finish(fig, title, 620, 460)


# ----------------------------------------------------------------------------- σ-spectra


def _layer(spectra: metrics.Spectra, layer: str | None) -> str:
    if not spectra:
        raise DataError("spectra is empty: no SVE layer found (expected {layer: (sigma, sigma0)}).")
    if layer is None:
        return next(iter(spectra))
    if layer not in spectra:
        raise DataError(f"layer {layer!r} is not in spectra; available: {list(spectra)[:10]}.")
    return layer


def spectrum_plot(
    spectra: metrics.Spectra, layer: str | None = None, *, title: str | None = None
) -> go.Figure:
    """Each member's singular values against the pretrained ones for one layer (first layer by default):
    σ on a log axis above, the relative change ``(σ_m − σ₀)/σ₀`` in percent below."""
    layer = _layer(spectra, layer)
    s = metrics.spectrum_diversity({layer: spectra[layer]})[layer]
    k = np.arange(len(s.sigma0))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.55, 0.45])
    fig.add_trace(
        go.Scatter(
            x=k,
            y=s.sigma0,
            mode="lines",
            name="pretrained σ₀",
            line=dict(color="#000000", width=3, dash="dash"),
        ),
        1,
        1,
    )
    for m in range(s.sigma.shape[0]):
        style = dict(legendgroup=f"m{m}", line=dict(color=_color(m), width=1.5))
        fig.add_trace(go.Scatter(x=k, y=s.sigma[m], mode="lines", name=f"member {m}", **style), 1, 1)
        fig.add_trace(
            go.Scatter(
                x=k, y=100 * s.relative[m], mode="lines", showlegend=False, name=f"member {m}", **style
            ),
            2,
            1,
        )
    fig.update_yaxes(type="log", dtick="D2", title_text="singular value σ", row=1, col=1)
    fig.update_yaxes(title_text="(σ − σ₀)/σ₀ (%)", row=2, col=1)
    fig.update_xaxes(title_text="direction k (sorted by pretrained σ)", row=2, col=1)
    return _finish(fig, title or f"σ-spectrum · {layer}", 720, 560)


def spectrum_heatmap(
    spectra: metrics.Spectra,
    *,
    value: str = "deviation",
    scale: str = "log",
    cap_percentile: float | None = 98,
    title: str | None = None,
) -> go.Figure:
    """Heatmap over layers × directions. ``value="deviation"``: mean over members of
    ``|σ_m − σ₀|/σ₀`` (%); ``value="cv"``: coefficient of variation across members (%).

    Directions with a tiny pretrained σ₀ can move by thousands of percent while the leading ones
    move by a fraction of a percent, so the default ``scale="log"`` colours ``log10`` of the
    percentage (values below 0.01 % are drawn as 0.01 %; the colour bar is labelled in %).
    ``scale="linear"`` colours the percentage itself, the scale stopping at the
    ``cap_percentile``-th percentile (``None``: no cap). The hover text shows the true value."""
    if value not in ("deviation", "cv"):
        raise ConfigError(f"value={value!r} is not known; use 'deviation' or 'cv'.")
    if scale not in ("log", "linear"):
        raise ConfigError(f"scale={scale!r} is not known; use 'log' or 'linear'.")
    div = metrics.spectrum_diversity(spectra)
    width = max(len(s.sigma0) for s in div.values())
    pct = np.full((len(div), width), np.nan)
    for i, s in enumerate(div.values()):
        row = np.abs(s.relative).mean(0) if value == "deviation" else s.cv
        pct[i, : len(row)] = 100 * row
    colorbar: dict[str, Any] = dict(title=dict(text="%", side="top"))
    if scale == "log":
        z, zmax = np.log10(np.maximum(pct, 1e-2)), None
        ticks = np.arange(np.floor(np.nanmin(z)), np.ceil(np.nanmax(z)) + 1)
        colorbar.update(tickvals=ticks, ticktext=[f"{10.0**t:g}" for t in ticks],
                        title=dict(text="%<br>(log)", side="top"))
    else:
        z = pct
        zmax = None if cap_percentile is None else float(np.nanpercentile(pct, cap_percentile))
        if cap_percentile is not None:
            colorbar["title"]["text"] = f"%<br>(p{cap_percentile:g} cap)"
    fig = go.Figure(go.Heatmap(z=z, y=list(div), x=np.arange(width), zmax=zmax, colorscale="Viridis",
                               customdata=pct, colorbar=colorbar, hoverongaps=False,
                               hovertemplate="%{y} · k=%{x}: %{customdata:.3g} %<extra></extra>"))
    fig.update_layout(
        xaxis_title="direction k (sorted by pretrained σ)",
        yaxis_title="layer",
        yaxis=dict(autorange="reversed", showgrid=False),
        xaxis_showgrid=False,
    )
    default = (
        "Mean |σ − σ₀|/σ₀ over members (%)" if value == "deviation" else "σ spread across members: CV (%)"
    )
    return _finish(fig, title or default, 760, max(320, 140 + 24 * len(div)))


def member_distance_matrix(
    spectra: metrics.Spectra, layer: str | None = None, *, title: str | None = None
) -> go.Figure:
    """Member-by-member matrix of ``||σ_i − σ_j|| / ||σ₀||`` (%), over ``layer`` or all layers (default)."""
    d = 100 * metrics.spectrum_distances(spectra, layer)
    names = [f"member {m}" for m in range(len(d))]
    fig = go.Figure(
        go.Heatmap(
            z=d,
            x=names,
            y=names,
            colorscale="Viridis",
            texttemplate="%{z:.2f}",
            colorbar=dict(title=dict(text="%", side="top")),
        )
    )
    fig.update_layout(yaxis=dict(autorange="reversed", showgrid=False), xaxis_showgrid=False)
    where = layer or "all layers"
    return _finish(fig, title or f"Member distance ‖σᵢ − σⱼ‖/‖σ₀‖ in % ({where})", 600, 500)


def spectrum_history(
    history: Mapping[int, metrics.Spectra] | Sequence[tuple[int, metrics.Spectra]],
    layer: str | None = None,
    *,
    title: str | None = None,
) -> go.Figure:
    """Each member's deviation ``||σ_m − σ₀|| / ||σ₀||`` (%) and, for M > 1, the mean pairwise member
    distance over training steps. ``history``: ``{step: spectra}`` or ``[(step, spectra), ...]``;
    ``layer``: one layer or all layers (default)."""
    items = sorted(history.items() if isinstance(history, Mapping) else history, key=lambda t: t[0])
    if not items:
        raise DataError(
            "spectrum_history: the history is empty; record (step, sve.methods.spectra(model)) pairs."
        )
    steps = [t[0] for t in items]
    dev = np.stack([metrics.spectrum_deviation(s, layer) for _, s in items]) * 100
    dist = [metrics.spectrum_distances(s, layer) for _, s in items]
    m = dev.shape[1]
    fig = go.Figure()
    for j in range(m):
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=dev[:, j],
                mode="lines",
                name=f"member {j} vs pretrained",
                line=dict(color=_color(j), width=2),
            )
        )
    if m > 1:  # a single member has no distance to another
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[100 * d[~np.eye(m, dtype=bool)].mean() for d in dist],
                mode="lines",
                name="mean distance between members",
                line=dict(color="#000000", width=3, dash="dash"),
            )
        )
    fig.update_layout(xaxis_title="training step", yaxis_title="‖Δσ‖ / ‖σ₀‖ (%)")
    return _finish(fig, title or f"σ drift during training ({layer or 'all layers'})", 860, 440)


# ----------------------------------------------------------------------------- cost


def cost_bars(
    table: pd.DataFrame,
    *,
    method: str = "method",
    columns: Sequence[str] | None = None,
    titles: Mapping[str, str] | None = None,
    title: str | None = "Cost by method",
) -> go.Figure:
    """One bar panel per cost column (default: whichever of ``params``, ``time_s``, ``memory_mb`` exist),
    one bar per method. ``titles``: axis title (with unit) per column, over :data:`AXIS_TITLES`.
    A column spanning more than two decades gets a log axis."""
    axis_titles = {**AXIS_TITLES, **(titles or {})}
    table = table.reset_index() if method not in table.columns else table
    if method not in table.columns:
        raise DataError(f"cost_bars: no {method!r} column (or index); columns: {list(table.columns)}.")
    columns = (
        list(columns) if columns else [c for c in ("params", "time_s", "memory_mb") if c in table.columns]
    )
    missing = [c for c in columns if c not in table.columns]
    if not columns or missing:
        raise DataError(
            f"cost_bars: cost column(s) {missing or ['params', 'time_s', 'memory_mb']} not found; "
            f"columns: {list(table.columns)}."
        )
    fig = make_subplots(rows=1, cols=len(columns), horizontal_spacing=0.1)
    # few bars: wrap long names on spaces (never inside a word); many bars: plotly rotates the labels
    labels = table[method].astype(str).tolist()
    names = labels if len(labels) > 6 else ["<br>".join(textwrap.wrap(n, 10, break_long_words=False))
                                            for n in labels]
    colors = [_color(i) for i in range(len(names))]
    for j, col in enumerate(columns):
        values = table[col].astype(float).to_numpy()
        fig.add_trace(
            go.Bar(
                x=names,
                y=values,
                marker_color=colors,
                showlegend=False,
                name=col,
                text=[_short(v) for v in values],
                textposition="outside",
                cliponaxis=False,
            ),
            1,
            j + 1,
        )
        positive = values[values > 0]
        log = len(positive) > 1 and positive.max() / positive.min() > 100
        fig.update_yaxes(
            title_text=axis_titles.get(col, col), type="log" if log else "linear", row=1, col=j + 1
        )
    return _finish(fig, title, 80 + 330 * len(columns), 430)


# ----------------------------------------------------------------------------- export


DEBIAN_CHROMIUM = "/usr/bin/chromium"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str:
    """Path of a Chromium/Chrome binary for kaleido: ``$BROWSER_PATH``, Debian's, then on ``PATH``."""
    found = [shutil.which(name) for name in BROWSER_NAMES]
    for candidate in (os.environ.get("BROWSER_PATH"), DEBIAN_CHROMIUM, *found):
        if candidate and Path(candidate).is_file():
            return candidate
    raise MissingAssetError(
        "static figure export needs a Chromium browser for kaleido and none was found: install Debian's "
        "with `apt-get install -y chromium` (or set BROWSER_PATH to a Chrome/Chromium binary)."
    )


@contextmanager
def export_session() -> Iterator[None]:
    """Keep one Chromium open across several :func:`export` calls (kaleido's sync server)::

    with plots.export_session():
        plots.export(fig_a, "a.png")
        plots.export(figs, "figures/")
    """
    import kaleido

    os.environ["BROWSER_PATH"] = find_browser()
    if kaleido._global_server.is_running():  # nested: the outer session owns the browser
        yield
        return
    kaleido.start_sync_server(silence_warnings=True)
    try:
        yield
    finally:
        kaleido.stop_sync_server(silence_warnings=True)


def _targets(figs: Any, path: Path, formats: Sequence[str]) -> list[tuple[go.Figure, Path]]:
    if isinstance(figs, go.Figure):
        if path.suffix.lstrip(".").lower() in FORMATS:
            return [(figs, path)]
        stem = path / "figure" if path.is_dir() else path
        return [(figs, stem.with_name(f"{stem.name}.{f}")) for f in formats]
    named = dict(figs) if isinstance(figs, Mapping) else {f"figure_{i:02d}": f for i, f in enumerate(figs)}
    bad = [k for k, f in named.items() if not isinstance(f, go.Figure)]
    if bad or not named:
        raise DataError(f"export: expected plotly Figures; got none or non-figures for {bad}.")
    return [(fig, path / f"{name}.{f}") for name, fig in named.items() for f in formats]


def export(
    figs: go.Figure | Mapping[str, go.Figure] | Sequence[go.Figure],
    path: str | os.PathLike,
    formats: Sequence[str] = ("png", "svg", "pdf"),
    *,
    scale: float = 1.0,
) -> list[Path]:
    """Write figures as static images with kaleido (>= 1) and a system Chromium, in one browser start.

    - one figure and a path with a known suffix (``fig.png``): exactly that file;
    - one figure and any other path: ``<path>.<format>`` for each format (``<dir>/figure.<format>``
      when ``path`` is an existing folder);
    - ``{name: figure}`` or a list: the folder ``path`` (created) receives ``<name>.<format>``
      (lists: ``figure_00`` …).

    Pixel size = the figure's ``width × height`` times ``scale``. Returns the written paths. Each call
    starts Chromium once (about 2–3 s); wrap several calls in :func:`export_session` to share one.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"formats {bad or list(formats)} not supported; use any of {FORMATS}.")
    targets = _targets(figs, Path(path), formats)
    os.environ["BROWSER_PATH"] = find_browser()  # choreographer (kaleido) reads it
    for _, target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The kopts argument is ignored")  # in a session
            pio.write_images(
                [f for f, _ in targets],
                [t for _, t in targets],
                scale=scale,
                width=[f.layout.width or 700 for f, _ in targets],
                height=[f.layout.height or 500 for f, _ in targets],
            )
    except Exception as err:  # kaleido/choreographer errors are deep and varied; name the usual fix
        raise SVEError(
            f"static export failed ({type(err).__name__}: {err}). Check that Chromium runs "
            f"({os.environ['BROWSER_PATH']} --version) and that kaleido>=1 is installed."
        ) from err
    return [t for _, t in targets]
