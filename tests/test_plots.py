"""sve.plots: every figure has the expected traces (no bars for empty bins), bad input gives clear
errors, and export writes valid PNG/SVG/PDF through kaleido + Chromium in one browser start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from sve import metrics, plots
from sve.errors import ConfigError, DataError, MissingAssetError


def make_logits(n=300, m=3, c=5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    z = rng.normal(size=(n, m, c)) * 2
    z[np.arange(n), :, y] += 2
    return z, y


def make_spectra(seed=0, layers=3, m=4, r=16, drift=1.0):
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(layers):
        s0 = np.sort(rng.uniform(0.1, 5, r + i))[::-1]
        out[f"blocks.{i}.mlp.fc1"] = (torch.tensor(s0 * (1 + drift * 0.02 * rng.normal(size=(m, r + i)))), s0)
    return out


def bars(fig, name=None):
    return [t for t in fig.data if isinstance(t, go.Bar) and (name is None or t.name == name)]


def test_reliability_diagram_draws_only_non_empty_bins():
    # confidences only in a few bins: 0.97-ish, 0.6-ish
    z = np.log(np.array([[0.97, 0.03]] * 40 + [[0.6, 0.4]] * 20 + [[0.62, 0.38]] * 5))
    y = np.r_[np.zeros(38), np.ones(2), np.zeros(12), np.ones(8), np.zeros(5)].astype(int)
    fig = plots.reliability_diagram(z, y, n_bins=15)
    b = metrics.reliability_bins(z, y)
    acc = bars(fig, "accuracy")[0]
    assert len(acc.x) == len(b.count) == 2
    np.testing.assert_allclose(np.asarray(acc.y, float), b.accuracy)
    np.testing.assert_allclose(np.asarray(bars(fig, "gap to confidence")[0].base, float), b.accuracy)
    np.testing.assert_allclose(np.asarray(bars(fig, "count")[0].y, float), b.count)
    assert f"ECE {b.ece:.3f}" in fig.layout.title.text
    assert any(t.name == "perfect calibration" for t in fig.data)


def test_reliability_diagram_side_by_side_and_overlay():
    z, y = make_logits()
    data = {"ensemble": (z, y), "member 0": (torch.tensor(z[:, 0]), y),
            "streamed": metrics.reliability_bins(z, y, n_bins=10)}
    fig = plots.reliability_diagram(data)
    assert len(bars(fig, "accuracy")) == 3 and len(bars(fig, "count")) == 3
    titles = [a.text for a in fig.layout.annotations]
    assert f"ensemble · ECE {metrics.ece(z, y):.3f}" in titles
    assert f"member 0 · ECE {metrics.ece(z[:, 0], y):.3f}" in titles
    over = plots.reliability_diagram(data, overlay=True)
    lines = [t for t in over.data if isinstance(t, go.Scatter) and t.name != "perfect calibration"]
    assert [t.name.split(" (")[0] for t in lines] == list(data)
    assert len(lines[2].x) == len(data["streamed"].count)
    mass = plots.reliability_diagram(z, y, scheme="mass", n_bins=6)
    assert len(bars(mass, "accuracy")[0].x) == 6


def test_reliability_diagram_bad_input():
    z, y = make_logits()
    with pytest.raises(DataError, match="nothing to plot"):
        plots.reliability_diagram({})
    with pytest.raises(DataError, match=r"\(logits, labels\)"):
        plots.reliability_diagram({"a": z})


def test_confidence_and_ood_figures():
    z, y = make_logits()
    ood, _ = make_logits(n=120, seed=1)
    ood = ood * 0.3
    conf = plots.confidence_histogram({"ensemble": z, "member 0": z[:, 0]})
    mean = metrics.predictive_probs(z).max(1).mean()
    assert conf.data[0].name == f"ensemble (mean {mean:.3f})" and conf.data[1].name.startswith("member 0 (")
    assert sum(conf.data[0].y) == pytest.approx(100) and len(conf.data[0].x) <= 20
    names = ("msp", "entropy", "energy", "mutual_info")
    scores = {k: (metrics.uncertainty(z, k), metrics.uncertainty(ood, k)) for k in names}
    hist = plots.ood_histograms(scores)
    assert len(hist.data) == 8 and {t.name for t in hist.data} == {"ID", "OOD"}
    assert len(hist.data[1].x) == 120  # OOD set not truncated
    assert f"AUROC {metrics.auroc(*scores['entropy']):.3f}" in hist.layout.annotations[1].text
    roc = plots.roc_curves(scores)
    assert len(roc.data) == 5
    assert roc.data[0].name == f"msp (AUROC {metrics.auroc(*scores['msp']):.3f})"
    with pytest.raises(DataError, match="id_scores, ood_scores"):
        plots.roc_curves({"msp": scores["msp"][0]})


def test_shift_and_risk_coverage():
    rows = [dict(method=m, severity=s, accuracy=0.9 - 0.1 * s, ece=0.02 * s, mean_entropy=0.2 * s)
            for m in ("SVE", "single") for s in range(4)]
    fig = plots.shift_curves(pd.DataFrame(rows))
    assert len(fig.data) == 6 and {t.name for t in fig.data} == {"SVE", "single"}
    assert fig.layout.yaxis.title.text == plots.AXIS_TITLES["accuracy"]
    assert fig.data[0].error_y.array is None  # no <metric>_std column: no error bars
    spread = plots.shift_curves(pd.DataFrame(rows).assign(accuracy_std=0.05), columns=("accuracy", "ece"))
    assert list(spread.data[0].error_y.array) == [0.05] * 4 and spread.data[1].error_y.array is None
    with pytest.raises(DataError, match="lacks column"):
        plots.shift_curves(pd.DataFrame(rows), columns=("accuracy", "nll"))
    z, y = make_logits(n=1000)
    data = {"ensemble": (z, y), "by MI": (z, y, metrics.mutual_info(z))}
    rc = plots.risk_coverage_curves(data, max_points=100)
    assert len(rc.data) == 2 and len(rc.data[0].x) == 100 and rc.data[0].x[-1] == 1.0
    assert f"AURC {metrics.aurc(z, y):.3g}" in rc.data[0].name


def test_spectrum_figures():
    spectra = make_spectra()
    fig = plots.spectrum_plot(spectra, "blocks.1.mlp.fc1")
    assert len(fig.data) == 1 + 2 * 4 and fig.data[0].name == "pretrained σ₀" and len(fig.data[0].y) == 17
    with pytest.raises(DataError, match="not in spectra"):
        plots.spectrum_plot(spectra, "blocks.7")
    heat = plots.spectrum_heatmap(spectra)                              # log colour scale
    pct = np.asarray(heat.data[0].customdata, dtype=float)               # the true percentages
    assert heat.data[0].z.shape == (3, 18) and np.isnan(heat.data[0].z[0, -1])  # shorter layers padded
    div = metrics.spectrum_diversity(spectra)
    first = next(iter(div.values()))
    np.testing.assert_allclose(pct[0, :len(first.sigma0)], 100 * np.abs(first.relative).mean(0))
    np.testing.assert_allclose(heat.data[0].z, np.log10(np.maximum(pct, 1e-2)))
    ticks = heat.data[0].colorbar.tickvals
    assert ticks[0] <= np.nanmin(heat.data[0].z) and ticks[-1] >= np.nanmax(heat.data[0].z)
    assert plots.spectrum_heatmap(spectra, value="cv").data[0].z.shape == (3, 18)
    lin = plots.spectrum_heatmap(spectra, scale="linear")
    np.testing.assert_allclose(lin.data[0].z, pct)
    assert lin.data[0].zmax == pytest.approx(np.nanpercentile(pct, 98))
    assert plots.spectrum_heatmap(spectra, scale="linear", cap_percentile=None).data[0].zmax is None
    with pytest.raises(ConfigError, match="value"):
        plots.spectrum_heatmap(spectra, value="std")
    with pytest.raises(ConfigError, match="scale"):
        plots.spectrum_heatmap(spectra, scale="sqrt")
    dist = plots.member_distance_matrix(spectra)
    np.testing.assert_allclose(dist.data[0].z, 100 * metrics.spectrum_distances(spectra))
    history = [(step, make_spectra(drift=step / 10)) for step in (0, 5, 10)]
    hist = plots.spectrum_history(history)
    assert len(hist.data) == 5 and list(hist.data[0].x) == [0, 5, 10] and hist.data[0].y[0] == 0
    assert hist.data[0].y[2] > hist.data[0].y[1]
    single = [(step, make_spectra(m=1, drift=step / 10)) for step in (0, 5)]
    assert len(plots.spectrum_history(single).data) == 1  # no between-member line for M = 1
    with pytest.raises(DataError, match="empty"):
        plots.spectrum_history([])


def test_cost_bars():
    table = pd.DataFrame({"method": ["single", "SVE", "deep ensemble"], "params": [3e3, 4e3, 2e6],
                          "time_s": [1.0, 1.2, 4.1], "memory_mb": [90, 95, 300]})
    fig = plots.cost_bars(table)
    assert len(fig.data) == 3 and list(fig.data[0].x) == ["single", "SVE", "deep<br>ensemble"]
    assert plots.cost_bars(table.assign(method=["a very long method name", "b", "c"])).data[0].x[0] == (
        "a very<br>long<br>method<br>name")
    many = pd.concat([table] * 3, ignore_index=True).assign(method=[f"deep_ensemble-m{i}" for i in range(9)])
    assert list(plots.cost_bars(many).data[0].x) == list(many["method"])      # rotated, never split
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.type == "linear"
    assert fig.data[0].text[2] == "2M"
    assert len(plots.cost_bars(table.set_index("method"), columns=["time_s"]).data) == 1
    with pytest.raises(DataError, match="not found"):
        plots.cost_bars(table[["method"]])


def test_missing_browser_names_the_install_command(monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chrome")
    monkeypatch.setattr(plots, "DEBIAN_CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(plots, "BROWSER_NAMES", ())
    with pytest.raises(MissingAssetError, match="apt-get install -y chromium"):
        plots.export(go.Figure(), "/tmp/never.png")


def test_export_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="formats"):
        plots.export(go.Figure(), tmp_path / "f", formats=("gif",))
    with pytest.raises(DataError, match="plotly Figures"):
        plots.export({"a": "not a figure"}, tmp_path)


MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-"}
NO_CHROMIUM = not Path(plots.DEBIAN_CHROMIUM).is_file()


@pytest.mark.browser
@pytest.mark.skipif(NO_CHROMIUM, reason="no /usr/bin/chromium: apt-get install -y chromium")
def test_export_writes_valid_files_in_one_batch(tmp_path):
    z, y = make_logits()
    spectra = make_spectra()
    figs = {"reliability": plots.reliability_diagram({"a": (z, y), "b": (z[:, 0], y)}),
            "heatmap": plots.spectrum_heatmap(spectra), "distances": plots.member_distance_matrix(spectra)}
    written = plots.export(figs, tmp_path / "out")  # 9 files, one browser start
    with plots.export_session():  # one browser shared by the two calls below
        single = plots.export(figs["heatmap"], tmp_path / "one.png")
        stems = plots.export(figs["heatmap"], tmp_path / "two", formats=("svg", "pdf"))
    assert sorted(p.name for p in written) == sorted(f"{n}.{f}" for n in figs for f in ("png", "svg", "pdf"))
    for path in written:
        data = path.read_bytes()
        assert len(data) > 5000, path
        fmt = path.suffix[1:]
        if fmt == "svg":
            assert data.lstrip().startswith(b"<svg") and b"</svg>" in data[-100:]
            assert "ECE" in data.decode() if path.stem == "reliability" else True
        else:
            assert data.startswith(MAGIC[fmt])
    png = (tmp_path / "out" / "reliability.png").read_bytes()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (figs["reliability"].layout.width, figs["reliability"].layout.height)
    # one figure: an explicit file name, or a stem with several formats
    assert single == [tmp_path / "one.png"] and single[0].read_bytes().startswith(MAGIC["png"])
    assert [p.name for p in stems] == ["two.svg", "two.pdf"] and all(p.is_file() for p in stems)
