"""Reading a run: one query API over a run folder, used by the app, the notebooks and the CLI alike,
so one run shows one set of numbers everywhere.

**The table.** ``Run.metrics`` (pandas) has one row per method × seed × eval set × member ×
calibration (see :func:`sve.experiments.evaluate_logits`): ``member`` is ``"ensemble"`` or the member
index as a string, ``calibration`` is ``"none"`` or ``"ts"`` (temperature-scaled); every row also
carries ``combine`` (how that method's members are combined), ``converged`` (``sve.stats.converged``
on that method × seed's epoch history; computed on read for runs written before the column existed)
and the cost columns (:data:`sve.experiments.COST_COLUMNS`).

**Queries** (module functions on any such table, and the same names as :class:`Run` methods):

- :func:`rows`: filter by split / member / calibration / seed / method. A filter is a value, a list
  of values, a ``*`` pattern (``"shift:*"``) or ``None`` (any); an exact value the table lacks is an
  error that lists the values it has.
- :func:`mean_std` / :func:`pm`: mean and std (ddof 1) over seeds, and ``mean ± std`` strings.
- :func:`shift_table`: metric versus shift severity (severity 0 = clean test), averaged over the
  corruptions within each seed, then mean ± std over seeds.
- :func:`cost_table`: the cost columns per method (mean over seeds unless one seed is asked for).
- :meth:`Run.claims`: claims decided by ``sve.stats`` (paired by seed, 95 % t-interval, verdicts held /
  did not hold / inconclusive / not converged) in one call.

**Per-method combine.** A method entry may override the run-level ``combine``
(``MethodSpec.combine``); the metrics rows of a method are computed with its own. Every figure and
every score here uses :meth:`Run.combine` of each method too, so a figure, the app's tables and
``sve report`` agree for a run that mixes ``"prob"`` and ``"logit"``.

**Figures.** One function per figure (``reliability_figure``, ``confidence_figure``,
``risk_coverage_figure``, ``ood_roc_figure``, ``ood_histogram_figure``, ``shift_figure``,
``spectrum_figures``, ``member_figure``, ``cost_figure``), each taking a :class:`Run`; the app's tabs
draw them with the chosen seed and options, and :func:`run_figures` collects the standard set (the
files of ``sve report`` and of the app's ZIP download). ``seed=None``: the figures built from logits
use the first finished seed of each method, those built from the table the mean over seeds.
"""
from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sve.errors import ConfigError, DataError, SVEError
from sve.experiments.config import ExperimentConfig
from sve.experiments.runner import COST_COLUMNS, history_converged, load_split, split_names
from sve.experiments.store import check_format, read_json, read_status, slug

#: the calibration metrics of the standard tables (names of ``sve.metrics.evaluate``)
CALIBRATION_COLUMNS = ("accuracy", "ece", "nll", "brier")
#: the metrics drawn against shift severity
SHIFT_COLUMNS = ("accuracy", "ece", "mean_entropy")
#: what :func:`cost_table` shows per method
COST_TABLE_COLUMNS = ("members", *COST_COLUMNS)
#: ``cost_table`` column → ``sve.plots.cost_bars`` column
COST_BARS = {"trainable_params": "params", "train_time_s": "time_s", "train_peak_rss_mb": "memory_mb"}
#: the rows a claim is decided on unless ``where`` says otherwise
CLAIM_ROWS = {"split": "test", "member": "ensemble", "calibration": "none"}
#: the filters of :func:`rows` (table columns)
FILTERS = ("split", "member", "calibration", "seed", "method")


# ----------------------------------------------------------------------------- table queries


def _keep(column: Any, value: Any, name: str) -> Any:
    """Boolean mask of ``column`` for one filter value (see :func:`rows`)."""
    if isinstance(value, str) and "*" in value:
        return column.astype(str).map(lambda v: fnmatch.fnmatchcase(v, value))
    values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
    if name == "member":
        values = [str(v) for v in values]
    present = set(column.dropna().unique().tolist())
    absent = [v for v in values if v not in present]
    if absent and present:
        have = ", ".join(map(str, sorted(present, key=str)))
        raise DataError(f"{name} {absent[0]!r} is not in this table; its values are: {have}. Pick one of "
                        f"them (or {name}=None for all).")
    return column.isin(values)


def rows(table: Any, split: Any = "test", member: Any = "ensemble", calibration: Any = "none",
         seed: Any = None, method: Any = None) -> Any:
    """Rows of a metrics table (or of ``run.metrics`` when given a :class:`Run`).

    Each filter is a value, a list of values, a ``*`` pattern (e.g. ``split="shift:*"``) or ``None``
    (no filter). Defaults: the test set, the ensemble's combined prediction, before temperature
    scaling, every seed and method. An exact value that the table does not hold raises
    :class:`~sve.errors.DataError` naming the values it has (a typo never gives an empty table)."""
    table = table.metrics if isinstance(table, Run) else table
    keep = None
    for name, value in zip(FILTERS, (split, member, calibration, seed, method)):
        if value is None:
            continue
        if name not in table.columns:
            raise DataError(f"the table has no {name!r} column (columns: {list(table.columns)}); pass "
                            f"{name}=None.")
        mask = _keep(table[name], value, name)
        keep = mask if keep is None else keep & mask
    return table if keep is None else table[keep]


def mean_std(table: Any, columns: Iterable[str], by: str | Sequence[str] = "method") -> Any:
    """Mean and std (ddof 1) over the rows of each ``by`` group — over seeds when the rows are one per
    seed (e.g. from :func:`rows`): columns ``<col>`` (mean), ``<col>_std`` and ``n_seeds`` (rows in
    the group), groups ordered as they first appear; columns the table lacks are left out."""
    columns = [c for c in columns if c in table.columns]
    by = [by] if isinstance(by, str) else list(by)
    groups = table.groupby(by, sort=False)[columns]
    mean, std = groups.mean(), groups.std(ddof=1)
    out = mean.join(std.add_suffix("_std"))
    out["n_seeds"] = groups.size()
    return out[[c for col in columns for c in (col, f"{col}_std")] + ["n_seeds"]]


def pm(summary: Any, scale: Mapping[str, float] | float = 1.0, digits: int = 3) -> Any:
    """``mean ± std`` strings from :func:`mean_std` (std omitted with one seed or when its ``_std``
    column was dropped; an empty string where the mean is NaN, e.g. accuracy on an OOD set);
    ``scale`` multiplies (e.g. 100 for percent), per column when a mapping; ``n_seeds`` is kept."""
    import pandas as pd

    out = pd.DataFrame(index=summary.index)
    for col in (c for c in summary.columns if not c.endswith("_std") and c != "n_seeds"):
        k = scale.get(col, 1.0) if isinstance(scale, Mapping) else scale
        std = summary[f"{col}_std"] if f"{col}_std" in summary.columns else float("nan") * summary[col]
        mean, std = summary[col].astype(float) * k, std.astype(float) * k
        out[col] = ["" if math.isnan(m) else f"{m:.{digits}f}" if math.isnan(s)
                    else f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(mean, std)]
    if "n_seeds" in summary.columns:
        out["n_seeds"] = summary["n_seeds"]
    return out


def severity(split: str) -> int:
    """Shift severity of an eval set: ``shift:<kind>:<s>`` → s, ``test`` → 0 (clean)."""
    if split == "test":
        return 0
    if not split.startswith("shift:"):
        raise DataError(f"split {split!r} has no shift severity: use 'test' or 'shift:<kind>:<severity>'.")
    return int(split.rsplit(":", 1)[1])


def shift_table(table: Any, columns: Sequence[str] = SHIFT_COLUMNS, calibration: str = "none",
                seed: Any = None, member: str = "ensemble") -> Any:
    """Metrics versus shift severity: one row per method × severity (0 = the clean test set) with
    ``<col>``, ``<col>_std`` over seeds and ``n_seeds``. Within a seed the corruptions of one severity
    are averaged first. Empty when the run has no shifted sets."""
    import pandas as pd

    table = table.metrics if isinstance(table, Run) else table
    part = rows(table, split=None, member=member, calibration=calibration, seed=seed)
    part = part[(part["split"] == "test") | part["split"].astype(str).str.startswith("shift:")]
    if not part["split"].astype(str).str.startswith("shift:").any():
        return pd.DataFrame(columns=["method", "severity", *columns, "n_seeds"])
    part = part.assign(severity=[severity(s) for s in part["split"]])
    per_seed = part.groupby(["method", "seed", "severity"], sort=False)[list(columns)].mean().reset_index()
    return mean_std(per_seed, columns, by=["method", "severity"]).reset_index()


def cost_table(table: Any, seed: Any = None, columns: Sequence[str] = COST_TABLE_COLUMNS) -> Any:
    """The cost columns per method (index ``method``): the value of ``seed``, or the mean over seeds."""
    import pandas as pd

    table = table.metrics if isinstance(table, Run) else table
    part = rows(table, seed=seed)
    columns = [c for c in columns if c in part.columns]
    out = part.groupby("method", sort=False)[columns].mean()
    for c in columns:  # counts stay integers (they are the same for every seed)
        if pd.api.types.is_integer_dtype(part[c]) and (out[c] % 1 == 0).all():
            out[c] = out[c].astype(int)
    return out


# ----------------------------------------------------------------------------- the run


class Run:
    """A run folder, read lazily: what notebooks, the app and ``sve report`` use (module docstring).

    ``seed=None`` in the accessors means the first finished seed of that method.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        check_format(self.path)
        self.config = ExperimentConfig.load(self.path / "config.yaml")
        self._metrics = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, state={self.status.get('state')!r}, done={self.done})"

    @property
    def status(self) -> dict:
        return read_status(self.path)

    @property
    def env(self) -> dict:
        return read_json(self.path / "env.json") if (self.path / "env.json").is_file() else {}

    @property
    def done(self) -> list[tuple[str, int]]:
        """Finished (method label, seed) pairs, in config order."""
        return [(spec.label, seed) for spec in self.config.method_specs() for seed in self.config.seeds
                if (self.path / spec.label / f"seed{seed}" / "done.json").is_file()]

    @property
    def methods(self) -> list[str]:
        """Labels of the methods with at least one finished seed."""
        return list(dict.fromkeys(label for label, _ in self.done))

    @property
    def seeds(self) -> list[int]:
        """Seeds with at least one finished method, ascending."""
        return sorted({seed for _, seed in self.done})

    @property
    def splits(self) -> list[str]:
        return split_names(self.config)

    def combine(self, method: str) -> str:
        """How ``method``'s members are combined (``"prob"`` / ``"logit"``): its entry's own
        ``combine``, else the run's (``MethodSpec.combine``)."""
        specs = {spec.label: spec for spec in self.config.method_specs()}
        if method not in specs:
            raise ConfigError(f"method {method!r} is not in this run; its methods are: {', '.join(specs)}")
        return specs[method].combine

    @property
    def metrics(self) -> Any:
        """The metrics table (module docstring); ``converged`` and ``combine`` are filled in on read
        for runs written before those columns existed."""
        import pandas as pd

        if self._metrics is None:
            path = self.path / "metrics.csv"
            if path.is_file() and path.stat().st_size > 1:
                table = pd.read_csv(path, dtype={"member": str, "method": str, "split": str})
            else:
                table = pd.DataFrame(columns=["method", "seed", "split", "member", "calibration"])
            self._metrics = self._complete(table)
        return self._metrics

    def _complete(self, table: Any) -> Any:
        """Add the ``combine`` / ``converged`` columns an older run folder lacks (after ``sigma_decay``)."""
        if not len(table):
            return table
        pairs = list(zip(table["method"], table["seed"]))
        for name, value, after in (("combine", lambda method, seed: self.combine(method), ("members",)),
                                   ("converged", self.converged, ("sigma_decay", "combine"))):
            if name not in table.columns:
                known = {pair: value(*pair) for pair in dict.fromkeys(pairs)}
                before = next((c for c in after if c in table.columns), None)
                at = list(table.columns).index(before) + 1 if before else len(table.columns)
                table.insert(at, name, [known[pair] for pair in pairs])
        return table

    def _folder(self, method: str, seed: int | None) -> Path:
        seeds = [s for label, s in self.done if label == method]
        if not seeds:
            raise ConfigError(f"method {method!r} has no finished seed in {str(self.path)!r}; finished: "
                              + (", ".join(f"{m}/seed{s}" for m, s in self.done) or "none"))
        if seed is None:
            seed = seeds[0]
        if seed not in seeds:
            raise ConfigError(f"seed {seed!r} of method {method!r} is not finished; finished seeds: {seeds}")
        return self.path / method / f"seed{seed}"

    def logits(self, method: str, seed: int | None = None, split: str = "test") -> tuple[Any, Any]:
        """``(logits (N, M, C) float32, labels (N,))`` of one eval set (labels -1 for OOD)."""
        import numpy as np

        with np.load(self._folder(method, seed) / "logits.npz") as npz:
            if split not in npz.files:
                raise ConfigError(f"split {split!r} is not in this run; its splits are: "
                                  + ", ".join(k for k in npz.files if not k.startswith("labels:")))
            return npz[split], npz[f"labels:{split}"]

    def temperature(self, method: str, seed: int | None = None, member: str = "ensemble") -> float:
        return read_json(self._folder(method, seed) / "metrics.json")["temperatures"][member]

    def calibrated_logits(self, method: str, seed: int | None = None, split: str = "test",
                          calibration: str = "none") -> tuple[Any, Any]:
        """``(logits, labels)`` as the metrics rows of ``calibration`` saw them: float64, divided by
        the ensemble's temperature for ``"ts"`` (exactly what ``evaluate_logits`` computed)."""
        import numpy as np

        if calibration not in ("none", "ts"):
            raise ConfigError(f"calibration={calibration!r}: use 'none' or 'ts' (temperature-scaled).")
        z, y = self.logits(method, seed, split)
        t = self.temperature(method, seed) if calibration == "ts" else 1.0
        return np.asarray(z, dtype=np.float64) / t, y

    def predictive(self, method: str, seed: int | None = None, split: str = "test",
                   calibration: str = "none") -> tuple[Any, Any]:
        """``(probabilities (N, C), labels)``: the method's combined prediction (its own ``combine``)."""
        from sve import metrics

        z, y = self.calibrated_logits(method, seed, split, calibration)
        return metrics.predictive_probs(z, self.combine(method)), y

    def uncertainty(self, method: str, score: str, seed: int | None = None, split: str = "test",
                    calibration: str = "none") -> Any:
        """Per-sample uncertainty ``score`` (``sve.metrics`` names; higher = more uncertain) of one
        eval set, with the method's own ``combine``."""
        from sve import metrics

        z, _ = self.calibrated_logits(method, seed, split, calibration)
        return metrics.uncertainty(z, score, self.combine(method))

    def history(self, method: str, seed: int | None = None) -> dict:
        """``{"step": DataFrame, "epoch": DataFrame, "fit": dict}`` from the training loop's events
        (plus ``"members"``: one epoch DataFrame per member when the members were judged apart)."""
        import pandas as pd

        data = read_json(self._folder(method, seed) / "history.json")
        out = {"step": pd.DataFrame(data["step"]), "epoch": pd.DataFrame(data["epoch"]), "fit": data["fit"]}
        if data.get("members"):
            out["members"] = [pd.DataFrame(rows) for rows in data["members"]]
        return out

    def converged(self, method: str, seed: int | None = None) -> bool:
        """Whether that method × seed converged (``sve.stats.converged`` on its epoch history,
        member-wise when it has one per member): see :func:`sve.experiments.history_converged`."""
        return history_converged(read_json(self._folder(method, seed) / "history.json"))

    def cost(self, method: str, seed: int | None = None) -> dict:
        return read_json(self._folder(method, seed) / "cost.json")

    def spectra_history(self, method: str, seed: int | None = None,
                        by: str = "epoch") -> list[tuple[int, dict]]:
        """``[(epoch, {layer: (sigma (M, r), sigma0 (r,))}), ...]`` from epoch 0 (init) to the last
        (``by="step"``: keyed by the global training step instead); empty without SVE layers."""
        if by not in ("epoch", "step"):
            raise ConfigError(f"by={by!r}: use 'epoch' or 'step'.")
        import numpy as np

        path = self._folder(method, seed) / "spectra.npz"
        if not path.is_file():
            return []
        with np.load(path) as npz:
            layers = [k[len("sigma/"):] for k in npz.files if k.startswith("sigma/")]
            stacks = {layer: (npz[f"sigma/{layer}"], npz[f"sigma0/{layer}"]) for layer in layers}
            epochs = npz[f"{by}s"].tolist()
        return [(epoch, {layer: (s[i], s0) for layer, (s, s0) in stacks.items()})
                for i, epoch in enumerate(epochs)]

    def spectra(self, method: str, seed: int | None = None) -> dict:
        """``{layer: (sigma (M, r), sigma0 (r,))}`` of the trained model (``{}`` without SVE
        layers): the input of ``sve.metrics.spectrum_diversity`` and the spectrum plots. ``fit``
        keeps the best validation epoch, so this is the snapshot after that epoch."""
        history = dict(self.spectra_history(method, seed))
        if not history:
            return {}
        best = self.history(method, seed)["fit"].get("best_epoch")
        return history.get(best + 1 if best is not None else max(history), history[max(history)])

    def samples(self, split: str) -> Any:
        """The raw :class:`sve.data.Dataset` (images or texts) of ``split``, rebuilt from the config;
        item i matches row i of ``logits(..., split)``."""
        return load_split(self.config, split)

    # -- queries (the module functions on this run's table) -----------------------------------
    def rows(self, split: Any = "test", member: Any = "ensemble", calibration: Any = "none",
             seed: Any = None, method: Any = None) -> Any:
        """:func:`rows` of this run's metrics table."""
        return rows(self.metrics, split, member, calibration, seed, method)

    def summary(self, columns: Iterable[str] = CALIBRATION_COLUMNS, by: str | Sequence[str] = "method",
                **filters: Any) -> Any:
        """:func:`mean_std` over seeds of :meth:`rows` (``filters``: its arguments)."""
        return mean_std(self.rows(**filters), columns, by)

    def shift_table(self, columns: Sequence[str] = SHIFT_COLUMNS, calibration: str = "none",
                    seed: Any = None) -> Any:
        return shift_table(self.metrics, columns, calibration, seed)

    def cost_table(self, seed: Any = None) -> Any:
        return cost_table(self.metrics, seed)

    def claims(self, claims: Iterable[Any], where: Mapping[str, Any] | None = None,
               confidence: float = 0.95) -> Any:
        """Decide ``sve.stats.Claim``\\ s on this run: ``sve.stats.claims_table`` over the rows
        ``where`` selects (default :data:`CLAIM_ROWS`: test set, ensemble, no temperature scaling),
        paired by seed, ``confidence`` t-interval, ``converged`` gating the verdict. One row per claim:
        claim, metric, a, b, a_mean, b_mean, diff, low, high, n, verdict."""
        from sve import stats

        where = dict(CLAIM_ROWS if where is None else where)
        return stats.claims_table(self.metrics, list(claims), where=where, confidence=confidence)

    def figures(self, seed: int | None = None) -> dict[str, Any]:
        """The standard Plotly figures of the run, ``{file-safe name: figure}`` (:func:`run_figures`)."""
        return run_figures(self, seed)


def load_run(path: str | os.PathLike) -> Run:
    """Open a run folder (:class:`RunFormatError` if it is not one of this format version)."""
    return Run(path)


# ----------------------------------------------------------------------------- figures


def _methods(run: Run, seed: int | None, methods: Iterable[str] | None) -> list[str]:
    """``methods`` (default: every method finished at ``seed``, or with any finished seed)."""
    if methods is not None:
        return list(methods)
    return [m for m, s in run.done if s == seed] if seed is not None else run.methods


def reliability_figure(run: Run, seed: int | None = None, calibration: str = "none",
                       methods: Iterable[str] | None = None, title: str | None = None) -> Any:
    """Reliability diagrams on test, one panel per method (its own ``combine``); the ECE in each
    panel is the ``ece`` of that method's metrics row."""
    from sve import plots

    methods = _methods(run, seed, methods)
    data = {m: run.calibrated_logits(m, seed, "test", calibration) for m in methods}
    if title is None:
        title = "Reliability on test" + (", after temperature scaling" if calibration == "ts" else "")
    return plots.reliability_diagram(data, title=title, combine={m: run.combine(m) for m in methods})


def confidence_figure(run: Run, seed: int | None = None, calibration: str = "none",
                      methods: Iterable[str] | None = None) -> Any:
    from sve import plots

    methods = _methods(run, seed, methods)
    data = {m: run.calibrated_logits(m, seed, "test", calibration)[0] for m in methods}
    return plots.confidence_histogram(data, combine={m: run.combine(m) for m in methods})


def risk_coverage_figure(run: Run, seed: int | None = None, calibration: str = "none",
                         methods: Iterable[str] | None = None) -> Any:
    from sve import plots

    methods = _methods(run, seed, methods)
    data = {m: run.calibrated_logits(m, seed, "test", calibration) for m in methods}
    return plots.risk_coverage_curves(data, combine={m: run.combine(m) for m in methods})


def ood_scores(run: Run, method: str, split: str, score: str = "entropy", seed: int | None = None,
               ) -> tuple[Any, Any]:
    """``(ID scores on test, OOD scores on split)`` of one method (its own ``combine``): the inputs of
    the ``auroc_<score>`` … columns of its ``split`` row."""
    return run.uncertainty(method, score, seed, "test"), run.uncertainty(method, score, seed, split)


def best_ood_score(run: Run, method: str, split: str, seed: int | None = None,
                   scores: Sequence[str] = ("msp", "entropy", "mutual_info", "energy", "disagreement"),
                   ) -> tuple[str, Any, Any, float]:
    """The score with the highest AUROC for ``method`` on OOD set ``split`` (its own ``combine``;
    ensemble-only scores skipped for a single model): ``(score, ID scores, OOD scores, AUROC)``.
    Chosen on that very set, so it flatters every method alike."""
    from sve import metrics

    single = run.logits(method, seed)[0].shape[1] == 1
    best = None
    for score in scores:
        if single and score in metrics.ENSEMBLE_ONLY_SCORES:
            continue
        id_s, ood_s = ood_scores(run, method, split, score, seed)
        auroc = metrics.auroc(id_s, ood_s)
        if best is None or auroc > best[3]:
            best = (score, id_s, ood_s, auroc)
    return best


def ood_roc_figure(run: Run, split: str, seed: int | None = None, score: str = "entropy",
                   methods: Iterable[str] | None = None, title: str | None = None) -> Any:
    """ROC curves test vs ``split`` of every method (single models are left out for ensemble-only
    scores such as mutual information); None when no method has the score."""
    from sve import metrics, plots

    methods = _methods(run, seed, methods)
    pairs = {m: ood_scores(run, m, split, score, seed) for m in methods
             if not (score in metrics.ENSEMBLE_ONLY_SCORES and run.logits(m, seed)[0].shape[1] == 1)}
    if not pairs:
        return None
    name = split.split(":", 1)[1]
    return plots.roc_curves(pairs, title=title or f"OOD detection: test vs {name} ({score})")


def ood_histogram_figure(run: Run, method: str, split: str, seed: int | None = None,
                         scores: Sequence[str] | Mapping[str, str] | None = None) -> Any:
    """Histograms of the ID (test) and OOD scores of one method, one panel per score (``scores``: names,
    or ``{name: panel label}``; default ``sve.metrics.DEFAULT_SCORES``)."""
    from sve import metrics, plots

    scores = scores if scores is not None else metrics.DEFAULT_SCORES
    labels = dict(scores) if isinstance(scores, Mapping) else {s: s for s in scores}
    pairs = {label: ood_scores(run, method, split, s, seed) for s, label in labels.items()}
    return plots.ood_histograms(pairs, title=f"{method}: test vs {split.split(':', 1)[1]}")


def shift_figure(run: Run, seed: int | None = None, calibration: str = "none",
                 title: str | None = None) -> Any:
    """Accuracy / ECE / entropy versus severity (:func:`shift_table`, ± std over seeds when there are
    several); None without shifted sets."""
    from sve import plots

    table = run.shift_table(calibration=calibration, seed=seed)
    if not len(table):
        return None
    table = table.drop(columns=[c for c in table.columns if c.endswith("_std") and table[c].isna().all()])
    return plots.shift_curves(table, title=title or "Under shift (mean over corruptions)")


def spectrum_figures(run: Run, method: str, seed: int | None = None, layer: str | None = None,
                     by: str = "step") -> dict[str, Any]:
    """The σ figures of an SVE-like method: ``spectrum``, ``spectrum_heatmap``, ``member_distances``
    (M > 1) and ``spectrum_history`` (σ drift over training, ``by`` step or epoch); ``{}`` without
    SVE layers. ``layer``: the layer of the per-layer figures (default: each plot's own — the first
    layer, or all layers for the member distances)."""
    from sve import plots

    final, history = run.spectra(method, seed), run.spectra_history(method, seed, by=by)
    if not final:
        return {}
    figs = {"spectrum": plots.spectrum_plot(final, layer), "spectrum_heatmap": plots.spectrum_heatmap(final)}
    if next(iter(final.values()))[0].shape[0] > 1:
        figs["member_distances"] = plots.member_distance_matrix(final, layer)
    if len(history) > 1:
        fig = plots.spectrum_history(history, layer)
        if by == "epoch":
            fig.update_xaxes(title_text="epoch (0 = initialisation)")
        figs["spectrum_history"] = fig
    return figs


def member_table(run: Run, method: str, seed: int | None = None, calibration: str = "none",
                 columns: Sequence[str] = CALIBRATION_COLUMNS) -> Any:
    """Test metrics of each member and of the ensemble (index ``member``: ``"ensemble"``, ``"member 0"``…)."""
    seed = seed if seed is not None else next(s for m, s in run.done if m == method)
    part = rows(run.metrics, member=None, calibration=calibration, seed=seed, method=method)
    names = [m if m == "ensemble" else f"member {m}" for m in part["member"]]
    return part.assign(member=names).set_index("member")[[c for c in columns if c in part.columns]]


def member_figure(run: Run, method: str, seed: int | None = None, calibration: str = "none") -> Any:
    from sve import plots

    table = member_table(run, method, seed, calibration, ("accuracy", "ece"))
    return plots.cost_bars(table.reset_index(), method="member", columns=["accuracy", "ece"],
                           title=f"{method}: each member and the ensemble (test)")


def cost_figure(run: Run, seed: int | None = None) -> Any:
    """Trainable parameters, training time and peak memory per method (:func:`cost_table`)."""
    from sve import plots

    return plots.cost_bars(run.cost_table(seed).rename(columns=COST_BARS).reset_index())


def run_figures(run: Run, seed: int | None = None) -> dict[str, Any]:
    """The standard figures of a run, ``{file-safe name: figure}``:

    reliability diagrams on test before/after temperature scaling, confidence histograms,
    risk–coverage curves, per OOD set the ROC curves of every method (predictive entropy, defined
    for single models too) and the four score histograms of the first ensemble method, accuracy /
    ECE / entropy versus shift severity, and for the first method with SVE layers its spectrum,
    deviation heatmap, member distances and σ drift; cost bars over methods. Each method's own
    ``combine`` throughout (module docstring).
    """
    methods = run.methods
    if not methods:
        return {}
    figs: dict[str, Any] = {
        "reliability_test": reliability_figure(run, seed),
        "reliability_test_ts": reliability_figure(run, seed, "ts"),
        "confidence_test": confidence_figure(run, seed),
        "risk_coverage_test": risk_coverage_figure(run, seed),
    }
    ensembles = [m for m in methods if run.logits(m, seed)[0].shape[1] > 1]
    for split in (s for s in run.splits if s.startswith("ood:")):
        key = slug(split.split(":", 1)[1])
        title = f"OOD detection: test vs {split[4:]} (predictive entropy)"
        figs[f"ood_{key}_roc"] = ood_roc_figure(run, split, seed, "entropy", methods, title=title)
        if ensembles:
            figs[f"ood_{key}_scores_{ensembles[0]}"] = ood_histogram_figure(run, ensembles[0], split, seed)
    shift = shift_figure(run, seed)
    if shift is not None:
        figs["shift"] = shift
    sve_like = next((m for m in methods if run.spectra_history(m, seed)), None)
    if sve_like is not None:
        spectrum = spectrum_figures(run, sve_like, seed)
        figs.update({f"{name}_{sve_like}": fig for name, fig in spectrum.items()})
    if len(run.metrics):
        figs["cost"] = cost_figure(run, seed)
    return figs


def list_runs(root: str | os.PathLike | None = None) -> list[dict]:
    """Run folders under ``root`` (default :func:`sve.paths.runs_dir`), newest first.

    Each item: ``path``, ``id``, ``name``, ``state`` (running / interrupted / stopped / failed /
    complete, or ``incompatible`` with the reason in ``error``), ``done`` and ``total`` method×seed
    pairs, ``created``, ``updated``.
    """
    from sve.paths import runs_dir

    root = Path(root) if root is not None else runs_dir()
    if not root.is_dir():
        return []
    items = []
    for path in (p for p in root.iterdir() if p.is_dir() and (p / "config.yaml").is_file()):
        item = {"path": path, "id": path.name, "name": None, "state": "incompatible", "done": 0,
                "total": None, "created": None, "updated": None, "error": None}
        try:
            check_format(path)
            item["name"] = ExperimentConfig.load(path / "config.yaml").name
        except SVEError as err:
            item["error"] = str(err)
        else:
            status = read_status(path)
            item.update({k: status.get(k) for k in ("state", "total", "created", "updated", "error")})
            item["done"] = len(status.get("done", []))
        items.append(item)
    items.sort(key=lambda it: (it["created"] or "", it["id"]), reverse=True)
    return items
