"""sve.experiments.results: one query API over a run, so the app, the notebooks and the CLI show one
set of numbers.

The table queries (rows, mean ± std, shift and cost tables, claims, the converged column) run on small
hand-made tables; the cross-front-end check trains one tiny real run whose two methods combine their
members differently (run-level ``logit``, one entry ``prob``) and reads each method's test ECE back
from the metrics table, from the reliability figure of ``run_figures`` (the ZIP / ``sve report``
files), from the app's Reliability tab (table and figure, AppTest) and from ``sve report``'s output.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sve import experiments, metrics, stats
from sve.errors import DataError
from sve.experiments import ExperimentConfig, results

ROOT = Path(__file__).resolve().parents[1]
COMPAT = Path(__file__).parent / "fixtures" / "v0.1.0" / "run-compat"
TINY = dict(name="combine", backbone="dinov2-small", image_size=28, dataset="mnist5k", ood=["animal-mnist"],
            members=2, targets="last:2", epochs=1, warmup_epochs=0, batch_size=16, train_limit=32,
            val_limit=32, test_limit=32, ood_limit=32, seeds=[0], combine="logit",
            methods=[{"name": "sve", "label": "sve-logit"},
                     {"name": "sve", "label": "sve-prob", "combine": "prob"}])


# ------------------------------------------------------------------------------------------
# table queries on hand-made tables


def _table() -> pd.DataFrame:
    """Two methods × two seeds × (test, two corruptions at severity 1) × ensemble / member 0 × none / ts."""
    records = []
    for method, base in (("a", 0.8), ("b", 0.6)):
        for seed in (0, 1):
            for split, drop in (("test", 0.0), ("shift:blur:1", 0.1), ("shift:noise:1", 0.3)):
                for member in ("ensemble", "0"):
                    for calibration in ("none", "ts"):
                        records.append({"method": method, "seed": seed, "split": split, "member": member,
                                        "calibration": calibration, "accuracy": base - drop + 0.02 * seed,
                                        "ece": 0.05 + drop / 10 + (calibration == "ts") * 0.01,
                                        "mean_entropy": 1.0 + drop, "members": 2,
                                        "trainable_params": 100 if method == "a" else 10,
                                        "train_time_s": 1.0 + seed})
    return pd.DataFrame(records)


def test_rows_filters():
    table = _table()
    assert len(results.rows(table)) == 4                       # test, ensemble, none: 2 methods × 2 seeds
    assert set(results.rows(table, split="shift:*")["split"]) == {"shift:blur:1", "shift:noise:1"}
    assert len(results.rows(table, split=None, member=None, calibration=None)) == len(table)
    assert len(results.rows(table, member=0, seed=[1], method="a")) == 1   # member given as an int
    assert set(results.rows(table, calibration=["none", "ts"])["calibration"]) == {"none", "ts"}
    with pytest.raises(DataError, match=r"split 'tset' is not in this table; its values are: shift:blur:1, "
                                        r"shift:noise:1, test\. .*split=None"):
        results.rows(table, split="tset")
    with pytest.raises(DataError, match="seed 7 is not in this table; its values are: 0, 1"):
        results.rows(table, seed=7)
    with pytest.raises(DataError, match="no 'method' column.*method=None"):
        results.rows(table.drop(columns="method"), method="a")


def test_mean_std_and_pm():
    summary = results.mean_std(results.rows(_table()), ["accuracy", "missing"])
    assert list(summary.columns) == ["accuracy", "accuracy_std", "n_seeds"]
    assert summary.loc["a", "accuracy"] == pytest.approx(0.81)
    assert summary.loc["a", "accuracy_std"] == pytest.approx(np.std([0.80, 0.82], ddof=1))
    shown = results.pm(summary.assign(nothing=np.nan), 100, digits=1)
    assert shown.loc["b", "accuracy"] == "61.0 ± 1.4" and shown.loc["b", "nothing"] == ""   # NaN mean: blank


def test_shift_table_averages_corruptions_within_a_seed_then_seeds():
    table = results.shift_table(_table(), columns=["accuracy", "ece"])
    assert list(table.columns) == ["method", "severity", "accuracy", "accuracy_std", "ece", "ece_std",
                                   "n_seeds"]
    a1 = table[(table["method"] == "a") & (table["severity"] == 1)].iloc[0]
    per_seed = [np.mean([0.8 - 0.1 + 0.02 * s, 0.8 - 0.3 + 0.02 * s]) for s in (0, 1)]  # blur, noise
    assert a1["accuracy"] == pytest.approx(np.mean(per_seed))
    assert a1["accuracy_std"] == pytest.approx(np.std(per_seed, ddof=1)) and a1["n_seeds"] == 2
    clean = table[(table["method"] == "b") & (table["severity"] == 0)].iloc[0]
    assert clean["accuracy"] == pytest.approx(0.61)
    ts = results.shift_table(_table(), columns=["ece"], calibration="ts", seed=0)
    assert ts.set_index(["method", "severity"]).loc[("a", 0), "ece"] == pytest.approx(0.06)
    assert not len(results.shift_table(_table()[lambda t: t["split"] == "test"]))   # no shifted sets


def test_cost_table_per_seed_or_mean():
    cost = results.cost_table(_table(), columns=["members", "trainable_params", "train_time_s"])
    assert cost.loc["a", "train_time_s"] == pytest.approx(1.5) and cost.loc["b", "trainable_params"] == 10
    assert pd.api.types.is_integer_dtype(cost["trainable_params"])
    assert results.cost_table(_table(), seed=1).loc["b", "train_time_s"] == 2.0


# ------------------------------------------------------------------------------------------
# converged and claims


def test_history_converged_member_wise():
    """A deep ensemble's epoch rows carry each member's validation NLL (``member<m>_val_nll``, as
    ``sve.train.fit`` reports them): it converged only when every member did."""
    def rows(*members, combined=(1.0, 0.999)):
        return [{"epoch": e, "val_nll": combined[e],
                 **{f"member{m}_val_nll": nll[e] for m, nll in enumerate(members)},
                 **{f"member{m}_val_acc": 0.5 for m in range(len(members))}} for e in range(2)]

    flat, rising = (1.0, 0.999), (1.0, 0.5)       # the last epoch gained 0.1 % / 50 %
    assert experiments.history_converged({"epoch": rows()})
    assert experiments.history_converged({"epoch": rows(flat, flat, combined=rising)})
    assert not experiments.history_converged({"epoch": rows(flat, rising)})


def test_old_run_gets_converged_and_combine_on_read():
    run = experiments.load_run(COMPAT)
    assert "converged" not in pd.read_csv(COMPAT / "metrics.csv").columns
    table = run.metrics
    assert list(table.columns[4:7]) == ["combine", "sigma_decay", "converged"]
    assert table["converged"].dtype == bool and not table["converged"].any()     # 1 epoch: not converged
    assert run.converged("sve", 0) is False and run.combine("sve") == "prob"


@pytest.fixture
def claim_run(tmp_path):
    """The compat run folder with a hand-made metrics table: sve beats single on ECE in 5 paired seeds."""
    path = tmp_path / "run"
    shutil.copytree(COMPAT, path)
    records = [{"method": m, "seed": s, "split": "test", "member": "ensemble", "calibration": c,
                "ece": (0.03 if m == "sve" else 0.08) + 0.002 * s + (c == "ts") * 0.1, "combine": "prob",
                "converged": True}
               for m in ("sve", "single") for s in range(5) for c in ("none", "ts")]
    pd.DataFrame(records).to_csv(path / "metrics.csv", index=False)
    return path


def test_claims_in_one_call(claim_run):
    run = experiments.load_run(claim_run)
    better = stats.Claim("sve", "single", "ece", direction="lower")
    worse = stats.Claim("single", "sve", "ece", direction="lower")
    table = run.claims([better, worse])
    assert list(table.columns) == list(stats.ROW_COLUMNS)
    assert table["verdict"].tolist() == [stats.HELD, stats.DID_NOT_HOLD]
    assert table.loc[0, "diff"] == pytest.approx(-0.05) and table.loc[0, "n"] == 5
    ts = run.claims([better], where={"split": "test", "member": "ensemble", "calibration": "ts"})
    assert ts.loc[0, "a_mean"] == pytest.approx(0.134)
    frame = pd.read_csv(claim_run / "metrics.csv")
    frame.loc[(frame["method"] == "single") & (frame["seed"] == 3), "converged"] = False
    frame.to_csv(claim_run / "metrics.csv", index=False)
    assert experiments.load_run(claim_run).claims([better])["verdict"].tolist() == [stats.NOT_CONVERGED]
    with pytest.raises(DataError, match="several rows per seed.*calibration"):
        run.claims([better], where={"split": "test"})


# ------------------------------------------------------------------------------------------
# one run, one set of numbers: metrics table, run_figures, app, sve report


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return root, experiments.run(ExperimentConfig(**TINY), root)


def _array(value):
    """A plotly trace array: a list, or plotly ≥ 6's ``{"dtype", "bdata"}`` (figure JSON)."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return np.asarray(value, dtype=float)


def _ece_panels(fig: dict) -> list[float]:
    """The ECE each panel of a reliability diagram draws: Σ count·|accuracy − mean confidence| / Σ count,
    from its accuracy bars, its gap bars (mean confidence as customdata) and its count bars."""
    traces = [t for t in fig["data"] if t.get("type") == "bar"]
    acc = [t for t in traces if t["name"] == "accuracy"]
    gap = [t for t in traces if t["name"] == "gap to confidence"]
    count = [t for t in traces if t["name"] == "count"]
    out = []
    for a, g, c in zip(acc, gap, count, strict=True):
        n = _array(c["y"])
        out.append(float(np.sum(n * np.abs(_array(a["y"]) - _array(g["customdata"]))) / n.sum()))
    return out


def test_one_run_shows_one_set_of_numbers_everywhere(mixed_run, monkeypatch):
    root, path = mixed_run
    run = experiments.load_run(path)
    methods = ["sve-logit", "sve-prob"]
    table = run.metrics
    test = table[(table["split"] == "test") & (table["member"] == "ensemble") & (table["seed"] == 0)]
    ece = {c: test[test["calibration"] == c].set_index("method")["ece"].to_dict() for c in ("none", "ts")}
    assert set(test["combine"]) == {"logit", "prob"} and list(ece["none"]) == methods
    for method, combine in zip(methods, ("logit", "prob")):      # the check can tell the two apart
        z, y = run.logits(method, 0, "test")
        other = metrics.ece(z.astype(np.float64), y, combine="prob" if combine == "logit" else "logit")
        assert abs(other - ece["none"][method]) > 1e-6

    # run_figures: what the ZIP download and `sve report` write
    figs = run.figures()
    for name, calibration in (("reliability_test", "none"), ("reliability_test_ts", "ts")):
        drawn = _ece_panels(figs[name].to_plotly_json())
        assert drawn == pytest.approx([ece[calibration][m] for m in methods], abs=1e-9), name
    for method in methods:                                      # ROC area = the row's auroc_entropy
        ood = table[(table["split"] == "ood:animal-mnist") & (table["member"] == "ensemble")
                    & (table["calibration"] == "none") & (table["method"] == method)]
        curve = next(t for t in figs["ood_animal-mnist_roc"].data if t.name.startswith(f"{method} "))
        area = float(np.sum(np.diff(curve.x) * (curve.y[1:] + curve.y[:-1]) / 2))
        assert area == pytest.approx(ood["auroc_entropy"].iloc[0], abs=1e-9)

    # the app: the Reliability tab's table and figure, raw and temperature-scaled
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SVE_RUNS", str(root))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=120)
    at.run()                                                    # opens on the Comparison view
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    diagram = next(s for s in specs if s["layout"]["title"]["text"].startswith("Reliability on test"))
    assert _ece_panels(diagram) == pytest.approx([ece["none"][m] for m in methods], abs=1e-9)
    at.session_state["view"] = "Details"
    at.session_state["tab"] = "Reliability"
    for calibration in ("none", "ts"):
        if calibration == "ts":
            at.toggle(key="ts-a").set_value(True)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        shown = next(d for d in at.dataframe if "ece" in d.value.columns).value["ece"]
        assert shown.to_dict() == ece[calibration]
        specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
        diagram = next(s for s in specs if s["layout"]["title"]["text"].startswith("Reliability on test"))
        assert _ece_panels(diagram) == pytest.approx([ece[calibration][m] for m in methods], abs=1e-9)

    # `sve report`
    from sve.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", str(path), "--no-figures"]) == 0
    lines = out.getvalue().splitlines()
    header = lines[0].split()                                   # the metric columns
    printed = {(parts[0], parts[2]): parts[3 + header.index("ece")]
               for parts in map(str.split, lines) if parts and parts[0] in methods and parts[1] == "test"}
    assert printed == {(m, c): f"{ece[c][m]:.4f}" for m in methods for c in ("none", "ts")}
