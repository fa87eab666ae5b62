"""The paper notebooks (jupytext percent sources in notebooks/) run end to end in QUICK mode.

Each notebook is read with ``jupytext.read`` and executed by ``nbclient`` in a fresh kernel with
``QUICK=1``; any cell error fails the test. Outputs go to ``tmp_path`` (``SVE_NB_OUT`` for tables
and figures, ``SVE_RUNS`` for run folders), and the test checks that the notebook really wrote its
results table and figures there and nothing into the source tree.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.py"))
#: wall-clock guard per cell: QUICK mode aims at ~20 s per notebook on 2 idle cores, but the suite
#: may share the machine; speed is never asserted, only a hung kernel is caught
CELL_TIMEOUT = 600

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")


def _tree_outputs() -> set[Path]:
    return {p for d in ("results", "figures") for p in (NB_DIR / d).rglob("*") if p.is_file()}


def test_every_notebook_is_found():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["00_quickstart", "01_in_distribution", "02_ood", "03_nlp", "04_backbone_quality",
                     "05_shift", "06_ablations", "07_diversity", "08_cost", "09_llm"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_structure(path):
    """Markdown first (the experiment it mirrors), a tagged parameters cell with QUICK, a
    "What we found" section last that is computed, not typed in."""
    nb = jupytext.read(path)
    cells = nb.cells
    assert cells[0].cell_type == "markdown"
    for word in ("Mirrors", "Offline analog", "Sizes", "What to look for"):
        assert word in cells[0].source, f"{path.name}: first cell lacks {word!r}"
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and params[0].cell_type == "code" and "QUICK = 0" in params[0].source
    assert cells[-2].cell_type == "markdown" and "What we found" in cells[-2].source
    assert cells[-1].cell_type == "code" and "out.conclude(" in cells[-1].source
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    assert not _ml_in(code), f"{path.name}: no ML logic in notebooks: {_ml_in(code)}"


#: what a notebook may import: nbtools, data handling and display, and the library's front-end APIs
#: (runs and their results, plots, statistics, accounting, names of backbones and datasets) — never
#: a model, a training loop or a framework
NOTEBOOK_IMPORTS = {"nbtools", "pandas", "numpy", "json", "math", "importlib", "importlib.util",
                    "IPython.display", "sve", "sve.experiments", "sve.plots", "sve.stats", "sve.metrics",
                    "sve.accounting", "sve.backbones", "sve.data", "sve.paths"}
NOTEBOOK_SVE_MODULES = {"experiments", "plots", "stats", "metrics", "accounting", "backbones", "data",
                        "paths"}
ML_CALLS = {"backward", "zero_grad", "step", "wrap", "wrap_with", "build", "fit", "predict", "perf_counter",
            "no_grad", "inference_mode"}


def _ml_in(code: str) -> list[str]:
    """ML found in notebook code: imports outside ``NOTEBOOK_IMPORTS``, ``sve`` submodules outside
    the front-end APIs, and calls that build, train or time models."""
    import ast

    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name not in NOTEBOOK_IMPORTS]
        elif isinstance(node, ast.ImportFrom):
            if node.module not in NOTEBOOK_IMPORTS:
                found.append(f"from {node.module} import ...")
            elif node.module == "sve":
                found += [f"from sve import {a.name}" for a in node.names
                          if a.name not in NOTEBOOK_SVE_MODULES]
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ML_CALLS:
                found.append(f"call {name}()")
    return found


def test_the_notebook_guard_sees_ml():
    for ml in ("import torch", "from sve.methods import sve", "from sve import train", "loss.backward()",
               "x = time.perf_counter()", "m = sve.wrap(bb, 4, 2)"):
        assert _ml_in(ml), ml
    assert not _ml_in("import nbtools as nb\nfrom sve import plots\nrun = nb.run(config, out)")


@pytest.mark.timeout(2 * CELL_TIMEOUT)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_quick_mode(path, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("QUICK", "1")
    monkeypatch.setenv("SVE_NB_OUT", str(out))
    monkeypatch.setenv("SVE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    before = _tree_outputs()
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(NB_DIR)}})
    client.execute()  # raises CellExecutionError (with the traceback) on any failing cell

    table = out / "results" / f"{path.stem}.csv"
    assert table.is_file() and table.stat().st_size > 0, f"{path.stem} wrote no results table"
    import pandas as pd

    assert len(pd.read_csv(table)) > 0
    figures = out / "figures" / path.stem
    pngs, svgs = sorted(figures.glob("*.png")), sorted(figures.glob("*.svg"))
    assert pngs and {p.stem for p in pngs} == {p.stem for p in svgs}, "PNG + SVG of every figure"
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert _tree_outputs() == before, "QUICK mode must not write into notebooks/results or figures"
    findings = nb.cells[-1].outputs
    text = "".join(str(o.get("data", {}).get("text/markdown", "")) for o in findings)
    assert "QUICK mode" in text and "- " in text, "the findings cell rendered no verdicts"


# ------------------------------------------------------------------------------------------
# nbtools: the table and claim helpers every notebook shares


@pytest.fixture(scope="module")
def nbtools():
    import sys

    sys.path.insert(0, str(NB_DIR))
    import nbtools

    return nbtools


def test_tables_are_the_results_api(nbtools):
    """The notebooks tabulate with sve.experiments.results' own functions (as the app and the CLI do),
    not with copies."""
    from sve.experiments import results

    assert (nbtools.rows, nbtools.mean_std, nbtools.pm) == (results.rows, results.mean_std, results.pm)
    assert nbtools.CALIBRATION == results.CALIBRATION_COLUMNS


def test_mean_std_and_pm(nbtools):
    import pandas as pd

    rows = pd.DataFrame({"method": ["a", "a", "b"], "ece": [0.1, 0.3, 0.2], "seed": [0, 1, 0]})
    summary = nbtools.mean_std(rows, ["ece", "missing"], by="method")
    assert list(summary.columns) == ["ece", "ece_std", "n_seeds"]
    assert summary.loc["a", "ece"] == pytest.approx(0.2)
    assert summary.loc["a", "ece_std"] == pytest.approx(0.1414, abs=1e-4)
    assert summary.loc["b", "n_seeds"] == 1
    shown = nbtools.pm(summary, 100, digits=1)
    assert shown.loc["a", "ece"] == "20.0 ± 14.1" and shown.loc["b", "ece"] == "20.0"   # one seed: no std
    table = nbtools.markdown(pd.DataFrame({"rule": ["|ΔECE| ≤ 1"]}, index=pd.Index(["x"], name="claim")))
    assert table.splitlines()[2] == "| x | \\|ΔECE\\| ≤ 1 |"                     # bars escaped


def test_exact_checks(nbtools):
    """``claim`` evaluates an exact check; a missing method or column makes it undecided."""
    raw = {"sve": {"params": 10}}
    missing = nbtools.claim("SVE is cheaper than LoRA", "params lower",
                            lambda: (raw["sve"]["params"] < raw["lora_ensemble"]["params"], "e"))
    assert missing.held is None and "not decidable" in missing.evidence
    verdicts = nbtools.claims_table([missing, nbtools.claim("x", "r", lambda: (True, "e"))])
    assert verdicts["verdict"].tolist() == ["undecided", "held"]
    assert "**held**" in nbtools.findings([nbtools.claim("x", "r", lambda: (True, "e"))], quick=False)


def test_claims_decided_over_seeds(nbtools):
    """``decide`` pairs seeds (sve.stats) and words the rule; the verdict table and the findings show
    the difference with its interval, in percentage points for ECE."""
    import pandas as pd

    from sve.stats import Claim

    ece = {"sve": [0.080, 0.090, 0.085, 0.070, 0.095], "single": [0.100, 0.110, 0.100, 0.092, 0.110]}
    table = pd.DataFrame([{"method": m, "seed": s, "ece": v, "converged": True}
                          for m, values in ece.items() for s, v in enumerate(values)])
    claims = [Claim("sve", "single", "ece", "lower", text="SVE's ECE below single"),
              Claim("sve", "single", "ece", "lower", threshold=0.05, text="by 5 pp")]
    decided = nbtools.decide(None, claims, table=table)
    assert decided["verdict"].tolist() == ["held", "did not hold"]
    assert decided["rule"].iloc[1] == ("95 % CI of sve − single (ece) wholly lower by ≥ 5 pp, "
                                       "paired by seed")
    both = nbtools.verdicts_table(decided, [nbtools.claim("exact", "r", lambda: (False, "e"))])
    assert both["verdict"].tolist() == ["held", "did not hold", "did not hold"]
    text = nbtools.findings(both, quick=False)
    assert "3 claims decided" in text and "sve − single = -1.84 pp, 95 % CI [" in text



def _long(values: dict, metric: str = "ece", converged: dict | None = None):
    """A metrics-like long table: one row per method × seed (``values``: {method: [per seed]})."""
    import pandas as pd

    return pd.DataFrame([{"method": m, "seed": s, metric: v, "converged": (converged or {}).get((m, s), True)}
                         for m, vs in values.items() for s, v in enumerate(vs)])


def test_per_seed_derives_best_scores_and_means(nbtools):
    """``per_seed``: the best of several columns per row (the single model's best score), the mean
    over the rows of one method × seed (corruptions of one severity), one row per method × seed,
    converged only when every source row is."""
    import pandas as pd

    rows = pd.DataFrame({"method": ["single"] * 4 + ["sve"] * 4, "seed": [0, 0, 1, 1] * 2,
                         "split": ["shift:noise:5", "shift:blur:5"] * 4,
                         "auroc_msp": [0.6, 0.7, 0.5, 0.9, 0.1, 0.1, 0.1, 0.1],
                         "auroc_energy": [0.8, 0.6, 0.4, 0.3, 0.2, 0.2, 0.2, 0.2],
                         "auroc_mutual_info": [float("nan")] * 4 + [0.7, 0.9, 0.6, 0.8],
                         "converged": [True, True, True, False, True, True, True, True]})
    best = nbtools.per_seed(rows[rows["method"] == "single"], "auroc", ["auroc_msp", "auroc_energy"],
                            label="single (best score)")
    assert list(best.columns) == ["method", "seed", "auroc", "converged"]
    assert best["method"].tolist() == ["single (best score)"] * 2
    assert best["auroc"].tolist() == pytest.approx([(0.8 + 0.7) / 2, (0.5 + 0.9) / 2])
    assert best["converged"].tolist() == [True, False]                  # one source row not converged
    mi = nbtools.per_seed(rows[rows["method"] == "sve"], "auroc", "auroc_mutual_info")
    assert mi["auroc"].tolist() == pytest.approx([0.8, 0.7]) and mi["method"].tolist() == ["sve"] * 2
    lowest = nbtools.per_seed(rows, "auroc", ["auroc_msp", "auroc_energy"], label="{method} low", best="min")
    assert lowest["method"].tolist() == ["single low"] * 2 + ["sve low"] * 2
    assert lowest["auroc"].tolist() == pytest.approx([0.6, 0.35, 0.1, 0.1])
    # a NaN source (the single model has no mutual information) stays NaN: sve.stats refuses it
    no_mi = nbtools.per_seed(rows[rows["method"] == "single"], "auroc", "auroc_mutual_info")
    assert no_mi["auroc"].isna().all()


def test_per_seed_refuses_bad_input(nbtools):
    from sve.errors import ConfigError, DataError

    rows = _long({"sve": [0.1, 0.2], "single": [0.3, 0.4]})
    with pytest.raises(DataError, match="no rows"):
        nbtools.per_seed(rows[rows["method"] == "lora"], "ece")
    with pytest.raises(DataError, match="lack column"):
        nbtools.per_seed(rows, "nll")
    with pytest.raises(DataError, match="same name"):
        nbtools.per_seed(rows, "ece", label="pooled")
    with pytest.raises(ConfigError, match="best="):
        nbtools.per_seed(rows, "ece", best="mean")
    with pytest.raises(DataError, match="True/False"):
        nbtools.per_seed(rows.assign(converged="yes"), "ece")


def test_a_derived_table_decides_a_claim(nbtools):
    """Two selections of one method (clean test set vs the top severity) compared by seed through
    ``per_seed`` + ``decide``; a non-converged source row makes the verdict "not converged"."""
    import pandas as pd

    from sve.stats import Claim

    entropy = {"test": [0.20, 0.25, 0.22, 0.18, 0.24], "shift:noise:5": [0.50, 0.61, 0.55, 0.49, 0.58],
               "shift:blur:5": [0.40, 0.45, 0.47, 0.41, 0.44]}
    rows = pd.DataFrame([{"method": "sve", "seed": s, "split": split, "mean_entropy": v, "converged": True}
                         for split, vs in entropy.items() for s, v in enumerate(vs)])

    def derive(rows):
        clean = rows["split"] == "test"
        return pd.concat([nbtools.per_seed(rows[~clean], "mean_entropy", label="sve, severity 5"),
                          nbtools.per_seed(rows[clean], "mean_entropy", label="sve, clean")])

    claim = Claim("sve, severity 5", "sve, clean", "mean_entropy", "higher", text="entropy rises")
    decided = nbtools.decide(None, [claim], table=derive(rows))
    assert decided.loc[0, "verdict"] == "held" and decided.loc[0, "n"] == 5
    assert decided.loc[0, "diff"] == pytest.approx((0.45 + 0.53 + 0.51 + 0.45 + 0.51) / 5 - 1.09 / 5)
    stale = [s != 3 or split != "shift:blur:5" for s, split in zip(rows["seed"], rows["split"])]
    derived = derive(rows.assign(converged=stale))
    assert nbtools.decide(None, [claim], table=derived).loc[0, "verdict"] == "not converged"


def test_decide_leaves_a_claim_on_a_missing_method_undecided(nbtools):
    """A claim naming a method the run lacks (a variant QUICK mode leaves out) reads "undecided" and
    says which method is missing; the other claims are decided, in the given order."""
    from sve.stats import Claim

    table = _long({"sve": [0.080, 0.090, 0.085, 0.070, 0.095], "single": [0.100, 0.110, 0.100, 0.092, 0.110]})
    claims = [Claim("sve", "deep_ensemble", "ece", "lower", text="vs DE"),
              Claim("sve", "single", "ece", "lower", text="vs single")]
    decided = nbtools.decide(None, claims, table=table)
    assert decided["claim"].tolist() == ["vs DE", "vs single"]
    assert decided["verdict"].tolist() == ["undecided", "held"]
    shown = nbtools.verdicts_table(decided)
    assert shown.loc["vs DE", "evidence"] == "not decidable: deep_ensemble not in this run"
    assert "sve − single = " in shown.loc["vs single", "evidence"]
    only_missing = nbtools.verdicts_table(nbtools.decide(None, claims[:1], table=table))
    assert only_missing["verdict"].tolist() == ["undecided"]


def test_margin_per_seed(nbtools):
    """04's derived table: per seed, SVE minus the mean of the others; converged only when every run
    behind the seed is; a seed one method lacks is dropped; a missing method is a clear error."""
    import pandas as pd

    from sve.errors import DataError

    rows = pd.DataFrame({"method": ["sve", "sve", "deep_ensemble", "deep_ensemble", "lora_ensemble",
                                    "lora_ensemble", "sve"],
                         "seed": [0, 1, 0, 1, 0, 1, 2], "accuracy": [0.80, 0.70, 0.60, 0.65, 0.70, 0.55, 0.9],
                         "converged": [True, True, True, False, True, True, True]})
    margin = nbtools.margin_per_seed(rows, "accuracy", "sve", ["deep_ensemble", "lora_ensemble"], "m")
    assert margin.columns.tolist() == ["method", "seed", "accuracy_margin", "converged"]
    assert margin["seed"].tolist() == [0, 1] and margin["method"].tolist() == ["m", "m"]
    assert margin["accuracy_margin"].tolist() == pytest.approx([0.15, 0.10])
    assert margin["converged"].tolist() == [True, False]
    with pytest.raises(DataError, match="missing: \\['single'\\]"):
        nbtools.margin_per_seed(rows, "accuracy", "sve", ["single"], "m")


def test_mi_against_best_single(nbtools):
    """The OOD claim's derived table: SVE's AUROC (MI) against the single model's best score per seed;
    a method the run lacks is left out (its claim is then undecided)."""
    import pandas as pd

    rows = pd.DataFrame({"method": ["sve", "sve", "single", "single", "lora_ensemble"],
                         "seed": [0, 1, 0, 1, 0], "auroc_msp": [0.1, 0.1, 0.70, 0.60, 0.9],
                         "auroc_entropy": [0.1, 0.1, 0.75, 0.50, 0.9],
                         "auroc_energy": [0.1, 0.1, 0.65, 0.55, 0.9],
                         "auroc_mutual_info": [0.80, 0.72, float("nan"), float("nan"), 0.9],
                         "converged": True})
    derived = nbtools.mi_against_best_single(rows)
    assert derived["method"].tolist() == ["sve (MI)"] * 2 + ["single (best score)"] * 2
    assert derived["auroc"].tolist() == pytest.approx([0.80, 0.72, 0.75, 0.60])
    alone = nbtools.mi_against_best_single(rows[rows["method"] != "single"])
    assert alone["method"].unique().tolist() == ["sve (MI)"]
    from sve.errors import DataError

    with pytest.raises(DataError, match="neither"):
        nbtools.mi_against_best_single(rows[rows["method"] == "lora_ensemble"])
