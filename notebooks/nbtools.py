"""Shared plumbing of the paper notebooks: modes, output folders, runs, mean ± std tables, claims.

No ML here: a notebook picks an experiment config (``configs/<notebook>.yaml``), runs it through
``sve.experiments`` and tabulates the run's ``metrics`` table with the results API of
``sve.experiments.results`` (``rows``, ``mean_std``, ``pm``, ``Run.shift_table``, ``Run.claims``...),
the one the app and ``sve report`` use too; this module only saves each notebook the same boilerplate.

Modes
- ``QUICK=1`` (tests): the tiniest real settings (:data:`QUICK_SIZES`), outputs under ``$SVE_NB_OUT``
  (a temporary folder when unset) and runs under ``$SVE_RUNS`` (else ``<out>/runs``), so a test
  never writes into the source tree.
- full mode (``QUICK=0``, the default): the config as committed, tables to
  ``notebooks/results/<notebook>.csv``, figures to ``notebooks/figures/<notebook>/`` (PNG + SVG),
  runs to ``$SVE_RUNS`` or ``runs/``. A finished run of exactly the same config is reused.
- medium mode (``QUICK=0 MEDIUM=1``): full mode with the smaller sample sizes of
  :data:`MEDIUM_SIZES` (the config's seeds and M), for a shared or slow machine; every saved table
  carries a ``mode`` column saying which mode produced it.

Claims are decided over seeds (:func:`decide`: paired differences with 95 % t-intervals, by
``sve.stats``); a claim that compares different columns or splits is decided on a derived long
table (:func:`per_seed`, :func:`mi_against_best_single`). Exact checks use :func:`claim`.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sve import experiments, stats
from sve.errors import ConfigError, DataError
from sve.experiments.results import CALIBRATION_COLUMNS, mean_std, pm, rows
from sve.paths import project_root, runs_dir

HERE = Path(__file__).resolve().parent
#: the source checkout (configs/, benchmarks/ live here)
ROOT = project_root() or HERE.parent
#: the tiniest real settings: DINOv2-S at 28 px (4 patches), 64 train / 32 eval samples, 1 epoch,
#: M = 2, per-member layers in the last 2 blocks only (8 SVDs instead of 48; variants that name
#: their own targets keep them)
QUICK_SIZES = dict(image_size=28, train_limit=64, val_limit=32, test_limit=32, ood_limit=32, epochs=1,
                   warmup_epochs=0, members=2, seeds=[0], eval_batch_size=64, targets="last:2")
#: medium mode: half the samples and fewer epochs than the committed configs, same seeds and M
MEDIUM_SIZES = dict(train_limit=256, val_limit=64, test_limit=256, ood_limit=256, epochs=2, warmup_epochs=1)
#: metric columns shown in the calibration tables (names of ``sve.metrics.evaluate``)
CALIBRATION = CALIBRATION_COLUMNS


def quick_mode(default: int = 0) -> bool:
    """``$QUICK`` (``1``/``0``) if set, else ``default`` (the notebook's parameters cell)."""
    return bool(int(os.environ.get("QUICK", default)))


def mode(quick: bool) -> str:
    """``"quick"``, ``"medium"`` (``$MEDIUM=1`` outside QUICK mode) or ``"full"``."""
    return "quick" if quick else ("medium" if int(os.environ.get("MEDIUM", 0)) else "full")


@dataclass
class Outputs:
    """Where one notebook writes: its results CSV, its figure folder and the runs root."""

    name: str
    quick: bool
    results: Path
    figures: Path
    runs: Path

    def save_table(self, table: pd.DataFrame, suffix: str = "") -> Path:
        """Write ``table`` (plus a ``mode`` column) as ``results/<notebook><suffix>.csv``."""
        path = self.results.with_name(f"{self.name}{suffix}.csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        table.assign(mode=mode(self.quick)).to_csv(path)
        return path

    def conclude(self, *parts: pd.DataFrame | Sequence[Claim]):
        """Save the verdicts as ``results/<notebook>_claims.csv`` and return the "what we found"
        paragraph (IPython Markdown, written from the verdicts). ``parts``: verdict tables of
        :func:`decide` (claims decided over seeds) and lists of :class:`Claim` (exact checks)."""
        from IPython.display import Markdown

        table = verdicts_table(*parts)
        self.save_table(table, "_claims")
        return Markdown(findings(table, self.quick))

    def export(self, figs: dict, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
        """``sve.plots.export`` of ``{name: figure}`` into the notebook's figure folder."""
        from sve import plots

        return plots.export(figs, self.figures, formats=formats)


def outputs(name: str, quick: bool) -> Outputs:
    """The output locations of notebook ``name`` in this mode (see the module docstring)."""
    if quick:
        base = Path(os.environ.get("SVE_NB_OUT") or tempfile.mkdtemp(prefix="sve-nb-"))
        results, figures = base / "results" / f"{name}.csv", base / "figures" / name
        root = Path(os.environ.get("SVE_RUNS") or base / "runs")
    else:
        results, figures = HERE / "results" / f"{name}.csv", HERE / "figures" / name
        root = runs_dir()
    return Outputs(name, quick, results, figures, root)


def config_path(name: str) -> Path:
    """``configs/<name>.yaml`` of the source checkout."""
    return ROOT / "configs" / f"{name}.yaml"


def load_config(name: str, quick: bool, quick_sizes: dict | None = None, **overrides: Any,
                ) -> experiments.ExperimentConfig:
    """The notebook's config: ``configs/<name>.yaml``, then in QUICK mode :data:`QUICK_SIZES`
    (updated by ``quick_sizes``) or in medium mode :data:`MEDIUM_SIZES`, then ``overrides``."""
    data = experiments.ExperimentConfig.load(config_path(name)).to_dict()
    if quick:
        data.update({**QUICK_SIZES, **(quick_sizes or {})})
    elif mode(quick) == "medium":
        data.update(MEDIUM_SIZES)
    data.update(overrides)
    return experiments.ExperimentConfig.from_dict(data)


def describe(config: experiments.ExperimentConfig, quick: bool = False) -> str:
    """One paragraph stating the sizes of a config (printed at the top of each notebook)."""
    methods = ", ".join(s.label + (f" (M={s.members})" if s.members != config.members else "")
                        for s in config.method_specs())
    size = f"{config.image_size} px" if config.image_size else f"max_length {config.max_length}"
    options = f" {config.backbone_options}" if config.backbone_options else ""
    return (f"[{mode(quick)} mode] {config.backbone}{options} at {size} on {config.dataset} "
            f"(train {config.train_limit}, val {config.val_limit}, test {config.test_limit}, "
            f"OOD {config.ood_limit} each of {config.ood + (['holdout'] if config.holdout else [])}); "
            f"M = {config.members}; {config.epochs} epoch(s), batch {config.batch_size}; "
            f"seeds {config.seeds}; methods: {methods}")


def _progress(event: str, info: dict) -> None:
    if event == "method_end":
        summary = ", ".join(f"{k} {v:.4f}" for k, v in info.get("summary", {}).items())
        print(f"  {info['method']} seed {info['seed']}: {summary} "
              f"(trained in {info.get('train_time_s', float('nan')):.0f} s)", flush=True)


def finished_run(root: Path, config: experiments.ExperimentConfig) -> Path | None:
    """Newest complete run of exactly ``config`` under ``root``, or None."""
    fingerprint = config.fingerprint()
    for item in experiments.list_runs(root):
        if item["state"] != "complete":
            continue
        try:
            same = experiments.ExperimentConfig.load(Path(item["path"]) / "config.yaml").fingerprint()
            if same == fingerprint:
                return Path(item["path"])
        except Exception:  # an unreadable folder is simply not reused
            continue
    return None


def run(config: experiments.ExperimentConfig, out: Outputs, reuse: bool = True) -> experiments.Run:
    """Train (or, with ``reuse``, find an already finished run of) ``config``; return the Run.

    An unfinished run of the same config is continued by ``sve.experiments.run`` itself."""
    folder = finished_run(out.runs, config) if reuse else None
    if folder is not None:
        print(f"reusing the finished run {folder}")
    else:
        folder = experiments.run(config, out_dir=out.runs, callbacks=[] if out.quick else [_progress])
    return experiments.load_run(folder)


def tiny_llama(folder: Path) -> Path:
    """QUICK-mode scaffolding for notebook 09: a folder holding a tiny random Llama's config (6 layers,
    width 32) and the MiniLM tokenizer (same vocabulary size), loaded as ``hf:<folder>`` with
    ``random: true``: the code path of a decoder LM without its weights."""
    from transformers import LlamaConfig

    from sve import backbones

    LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=6, num_attention_heads=2,
                num_key_value_heads=1, vocab_size=30522, pad_token_id=0).save_pretrained(folder)
    backbones.load_backbone("minilm-l3").tokenizer.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------
# tables: ``rows``, ``mean_std`` and ``pm`` are sve.experiments.results' (imported above; the notebooks
# call them as nb.rows, nb.mean_std, nb.pm), so a notebook shows the numbers the app and the CLI show


def calibration_summary(run: experiments.Run, out: Outputs, extra: Sequence[str] = (),
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test-set accuracy / ECE / NLL / Brier (plus ``extra`` columns), mean ± std over seeds, raw
    and after temperature scaling. Saves the numeric summary (index: calibration, method) as the
    notebook's results table; returns it and a wide display table of the four metrics (accuracy
    and ECE in %)."""
    summary = mean_std(rows(run, calibration=None), CALIBRATION + tuple(extra), by=["calibration", "method"])
    out.save_table(summary)
    table = pm(summary, {"accuracy": 100, "ece": 100}, digits=2).unstack("calibration")
    table.columns = [f"{m} ({'after TS' if c == 'ts' else 'raw'})" for m, c in table.columns]
    return summary, table[[f"{m} ({c})" for c in ("raw", "after TS") for m in CALIBRATION]]


def markdown(table: pd.DataFrame) -> str:
    """A GitHub markdown table of ``table`` (index included), for docs/RESULTS.md."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")   # a literal bar would end the cell

    frame = table.reset_index()
    head = "| " + " | ".join(map(cell, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(map(cell, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


# ------------------------------------------------------------------------------------------
# claims


@dataclass
class Claim:
    """One claim of the paper, the rule that decides it here, and the numbers behind the verdict."""

    claim: str
    rule: str
    evidence: str
    held: bool | None  # None: not decidable with this run (e.g. a method missing)


def claim(text: str, rule: str, decide: Callable[[], tuple[bool, str]]) -> Claim:
    """Evaluate ``decide() -> (held, evidence)``; a missing method/column makes the claim undecided."""
    try:
        held, evidence = decide()
    except KeyError as err:
        return Claim(text, rule, f"not decidable: {err} missing from this run", None)
    return Claim(text, rule, evidence, bool(held))


#: metrics shown in percentage points in the verdicts (fractions in the tables)
PERCENT = ("accuracy", "ece", "adaptive_ece", "mce", "classwise_ece", "auroc", "aupr", "fpr95", "acc_at")


def _scale(metric: str) -> tuple[float, str]:
    return (100.0, " pp") if metric.startswith(PERCENT) else (1.0, "")


def rule_text(claim: stats.Claim, n_claims: int | None = None) -> str:
    """How a statistical claim is decided, in words (the threshold fixed before the runs)."""
    k, unit = _scale(claim.metric)
    if claim.kind == "close":
        return (f"95 % CI of {claim.a} − {claim.b} ({claim.metric}) inside ±{k * claim.threshold:g}{unit}, "
                "paired by seed")
    better = "lower" if claim.direction == "lower" else "higher"
    margin = ("" if claim.threshold == 0 else f" by ≥ {k * claim.threshold:g}{unit}" if claim.threshold > 0
              else f" or at most {-k * claim.threshold:g}{unit} worse")
    return f"95 % CI of {claim.a} − {claim.b} ({claim.metric}) wholly {better}{margin}, paired by seed"


def per_seed(rows: pd.DataFrame, metric: str, columns: str | Sequence[str] | None = None,
             label: str = "{method}", best: str = "max") -> pd.DataFrame:
    """A derived long table for :func:`decide`: one row per method × seed with columns ``method``,
    ``seed``, ``metric`` and ``converged``, for claims that compare different columns or splits.

    ``rows``: metrics rows (e.g. :func:`rows` of one split, or ``split="shift:*"``), any number per
    method × seed. The value of a row is its column ``columns`` (default: ``metric``), or with
    several columns their ``best`` (``"max"`` or ``"min"``), e.g. the single model's best AUROC over
    MSP / entropy / energy; the values of one method × seed are then averaged (e.g. over the
    corruptions of one severity). A derived row is converged when every source row is. ``label``
    names the derived method (``"{method}"`` is replaced by the source method), so two selections
    of one method, e.g. ``"sve, clean"`` and ``"sve, severity 5"``, can be compared as A and B.
    Non-finite values are kept (NaN), so that ``sve.stats`` refuses a broken run rather than a
    mean hiding it."""
    columns = [metric] if columns is None else [columns] if isinstance(columns, str) else list(columns)
    if best not in ("max", "min"):
        raise ConfigError(f"best={best!r}: use 'max' (higher is better, e.g. AUROC) or 'min' (e.g. ECE).")
    if not isinstance(rows, pd.DataFrame) or rows.empty:
        raise DataError("per_seed got no rows: check the filters of rows(...) (split, method) against "
                        "the run's splits and methods.")
    missing = [c for c in ["method", "seed", "converged", *columns] if c not in rows.columns]
    if missing:
        raise DataError(f"the rows lack column(s) {missing}; pass rows of a run's metrics table "
                        f"(columns: {list(rows.columns)}).")
    methods = rows["method"].unique()
    if "{method}" not in label and len(methods) > 1:
        raise DataError(f"label {label!r} would give the same name to methods {list(methods)}; put "
                        "'{method}' in the label or select one method.")
    if not rows["converged"].map(lambda v: isinstance(v, (bool, np.bool_))).all():
        raise DataError(f"column 'converged' must hold True/False for every row; got "
                        f"{sorted(map(repr, rows['converged'].unique()))}.")
    values = getattr(rows[columns].astype(float), best)(axis=1, skipna=False)
    frame = rows[["method", "seed", "converged"]].assign(value=values)
    groups = frame.groupby(["method", "seed"], sort=False)
    out = groups["value"].agg(lambda v: v.mean(skipna=False)).rename(metric).to_frame()
    out["converged"] = groups["converged"].agg(lambda v: bool(v.all()))
    out = out.reset_index()
    out["method"] = [label.format(method=m) for m in out["method"]]
    return out[["method", "seed", metric, "converged"]]


def margin_per_seed(rows: pd.DataFrame, metric: str, method: str, others: Sequence[str],
                    label: str) -> pd.DataFrame:
    """A derived table for :func:`decide` (columns of :func:`per_seed`): per seed, ``method``'s
    ``metric`` minus the mean of ``others``' on the same seed (same split), e.g. SVE's accuracy
    margin over the other ensembles on one backbone. The derived metric is named
    ``"<metric>_margin"``; a row is converged when every run behind it is, and only the seeds every
    method has count. ``label`` names the derived method (e.g. ``"sve margin, random init"``), so
    the margins of two runs can be compared as A and B."""
    missing = [m for m in [method, *others] if m not in set(rows["method"])]
    if not others or missing:
        raise DataError(f"margin_per_seed needs rows of {method!r} and of at least one other method; "
                        f"missing: {missing or 'others'} (methods here: {sorted(set(rows['method']))}).")
    wide = per_seed(rows[rows["method"].isin([method, *others])], metric).pivot(
        index="seed", columns="method", values=[metric, "converged"]).dropna()
    gap = wide[metric][method] - wide[metric][list(others)].mean(axis=1)
    out = pd.DataFrame({"method": label, "seed": wide.index, f"{metric}_margin": gap.values,
                        "converged": wide["converged"].astype(bool).all(axis=1).values})
    return out.reset_index(drop=True)


#: the OOD scores a single model has (mutual information needs members)
SINGLE_SCORES = ("auroc_msp", "auroc_entropy", "auroc_energy")


def mi_against_best_single(rows: pd.DataFrame, method: str = "sve", single: str = "single") -> pd.DataFrame:
    """The derived table of "``method`` detects OOD better than the single model" (:func:`per_seed`):
    ``"<method> (MI)"``, its AUROC with mutual information, and ``"<single> (best score)"``, the
    single model's best AUROC of :data:`SINGLE_SCORES` picked per seed (which favours the single
    model). ``rows``: the metrics rows of one OOD split; a method without rows is left out (its
    claim then reads "undecided")."""
    have = set(rows["method"])
    parts = [per_seed(rows[rows["method"] == m], "auroc", columns, label=label)
             for m, columns, label in ((method, "auroc_mutual_info", f"{method} (MI)"),
                                       (single, list(SINGLE_SCORES), f"{single} (best score)")) if m in have]
    if not parts:
        raise DataError(f"neither {method!r} nor {single!r} has rows here; pass the rows of one OOD split "
                        "of a run that trained them.")
    return pd.concat(parts, ignore_index=True)


#: the verdict of a claim whose method is not in the run (e.g. a variant QUICK mode leaves out)
UNDECIDED = "undecided"


def decide(run: experiments.Run | None, claims: Sequence[stats.Claim], where: dict | None = None,
           table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Claims decided over seeds: ``Run.claims`` (paired by seed, 95 % t-interval, verdicts held /
    did not hold / inconclusive / not converged) plus the rule of each claim in words. ``table``:
    a derived long table (:func:`per_seed`: method, seed, metric, converged) instead of the run's
    own rows. A claim naming a method that has no rows (e.g. a variant QUICK mode does not train)
    is not decided: its row reads "undecided" with the missing method in its ``evidence``."""
    source = run.metrics if table is None else table
    have = set(source["method"].astype(str))
    claims = list(claims)
    ready = [c for c in claims if {c.a, c.b} <= have]
    if table is None:
        result = run.claims(ready, where=where)
    else:
        result = stats.claims_table(table, ready, where=where)
    result["rule"] = [rule_text(c) for c in ready]
    result["evidence"] = None
    result["position"] = [i for i, c in enumerate(claims) if c in ready]
    absent = pd.DataFrame([{"claim": c.label, "metric": c.metric, "a": c.a, "b": c.b, "n": 0,
                            "verdict": UNDECIDED, "rule": rule_text(c), "position": i,
                            "evidence": "not decidable: "
                            + " and ".join(m for m in (c.a, c.b) if m not in have) + " not in this run"}
                           for i, c in enumerate(claims) if c not in ready], columns=list(result.columns))
    parts = [f for f in (result, absent) if len(f)]
    if not parts:
        return result.drop(columns="position")
    merged = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return merged.sort_values("position", ignore_index=True).drop(columns="position")


def _evidence(row: pd.Series) -> str:
    k, unit = _scale(row["metric"])
    f = ".2f" if unit else ".4f"  # percentage points, or raw units (nats: MI is often ~0.01)
    a, b, d = k * row["a_mean"], k * row["b_mean"], k * row["diff"]
    interval = ("one seed: no interval" if math.isnan(row["low"])
                else f"95 % CI [{k * row['low']:+{f}}, {k * row['high']:+{f}}]{unit}")
    seeds = f"{row['n']} seed" + ("s" if row["n"] != 1 else "")
    text = (f"{row['metric']}: {row['a']} {a:{f}} vs {row['b']} {b:{f}} (means over {seeds}); "
            f"{row['a']} − {row['b']} = {d:+{f}}{unit}, {interval}")
    if row["verdict"] == "not converged" and pd.notna(row.get("a_converged")):
        text += (f"; converged runs: {row['a']} {int(row['a_converged'])}/{row['n']}, "
                 f"{row['b']} {int(row['b_converged'])}/{row['n']}")
    return text


def ood_beats_single(run: experiments.Run, split: str, threshold: float, text: str) -> pd.DataFrame:
    """The claim "SVE (mutual information) detects ``split`` better than the single model" decided
    over seeds (:func:`decide` on :func:`mi_against_best_single`: the single model's best score per
    seed, so the comparison favours it), AUROC gain ≥ ``threshold``."""
    claim = stats.Claim("sve (MI)", "single (best score)", "auroc", "higher", threshold=threshold, text=text)
    return decide(run, [claim], table=mi_against_best_single(rows(run, split=split)))


def verdicts_table(*parts: pd.DataFrame | Sequence[Claim]) -> pd.DataFrame:
    """One table of verdicts (claim, rule, evidence, verdict, and for claims decided over seeds the
    numbers: a, b, a_mean, b_mean, diff, low, high, n) from :func:`decide` tables and lists of
    :class:`Claim` (exact checks: held / did not hold / undecided)."""
    frames = []
    for part in parts:
        if isinstance(part, pd.DataFrame):
            frame = part.copy()
            given = frame["evidence"] if "evidence" in frame.columns else [None] * len(frame)
            frame["evidence"] = [e if isinstance(e, str) else _evidence(r)
                                 for e, (_, r) in zip(given, frame.iterrows())]
        else:
            word = {True: "held", False: "did not hold", None: "undecided"}
            frame = pd.DataFrame([{"claim": c.claim, "rule": c.rule, "evidence": c.evidence,
                                   "verdict": word[c.held]} for c in part])
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    first = ["claim", "verdict", "rule", "evidence"]
    return table[first + [c for c in table.columns if c not in first]].set_index("claim")


def claims_table(claims: Sequence[Claim]) -> pd.DataFrame:
    """Exact checks as a verdict table (see :func:`verdicts_table`)."""
    return verdicts_table(claims)


def findings(table: pd.DataFrame | Sequence[Claim], quick: bool) -> str:
    """The "what we found" paragraph as Markdown, written from the computed verdicts: how many
    claims the page decides, then one line per claim with its verdict, numbers and rule."""
    table = table if isinstance(table, pd.DataFrame) else verdicts_table(table)
    lines = []
    if quick:
        lines.append("*QUICK mode: tiny settings, one seed: these verdicts only show the notebook "
                     "runs end to end; they say nothing about the method.*\n")
    counts = table["verdict"].value_counts()
    tally = ", ".join(f"{n} {v}" for v, n in counts.items())
    lines.append(f"{len(table)} claims decided on this page (at 95 % each, about one in twenty "
                 f"can go the wrong way by chance): {tally}.\n")
    for claim, row in table.iterrows():
        lines.append(f"- {claim}: **{row['verdict']}** — {row['evidence']} (rule: {row['rule']}).")
    return "\n".join(lines)
