"""Deciding a claim from a few seeds: the paired difference, its confidence interval, the verdict,
and the convergence rule that gates it.

**Pairing.** Seed ``s`` fixes the data split, the data order and the initialisation draw of a run, so
seed ``s`` of method A and seed ``s`` of method B are a matched pair. A claim is decided on the
per-seed differences ``d_s = a_s − b_s`` (always A minus B, in the metric's own units), never on two
independent means: pairing removes the split-to-split variance.

**Interval.** The t-interval for the mean difference, ``mean(d) ± t_{(1+c)/2, n−1} · sd(d) / √n``
(``sd`` with ddof 1, ``c`` the confidence, 0.95 by default), the interval of ``scipy.stats.ttest_rel``.
Not a bootstrap: over 3–5 seeds a percentile bootstrap is too narrow. It needs ``n ≥ 2`` seeds.

**Verdicts** (``VERDICTS``). A :class:`Claim` names A, B, the metric, which direction of the metric is
better and a threshold ``δ``. For ``kind="better"`` ("A better than B by at least δ") the interval
is oriented as the *gain* of A, ``g = d`` when higher is better and ``g = −d`` when lower is better
(ECE, NLL, Brier, ...), then compared with ``δ``:

- ``"held"``: the whole interval of ``g`` lies above ``δ``;
- ``"did not hold"``: the whole interval lies below ``δ``;
- ``"inconclusive"``: the interval contains ``δ`` (an end point equal to ``δ`` counts as containing it).

``δ = 0`` is plain "better"; a negative ``δ`` is non-inferiority ("A at most |δ| worse than B").
For ``kind="close"`` ("A within ±δ of B", an equivalence check; ``δ > 0``, direction irrelevant):
``"held"`` when the interval of ``d`` lies inside ``(−δ, δ)``, ``"did not hold"`` when it lies wholly
outside ``[−δ, δ]``, else ``"inconclusive"``. The same 95 % interval is used for both kinds.
``"not converged"``: a side has a run that did not converge (:func:`converged`); the difference and
its interval are still reported, never a verdict. Deciding many claims at 95 % each gives about one
false "held"/"did not hold" in twenty: report how many claims a page decides, and fix ``δ`` before
looking at the numbers.

**Convergence rule.** A run is *converged* when its best validation NLL was reached before the last
epoch, or the last epoch improved on the best before it by less than ``CONVERGENCE_TOL`` (1 %,
relative): with ``v`` the per-epoch validation NLLs and ``p = min(v[:-1])``, the last epoch's gain is
``(p − v[-1]) / p`` and the run converged iff it is below the tolerance. This is the NLL, whatever
epoch ``sve.fit`` keeps as its best checkpoint (that one is chosen on accuracy). Edge cases: one
epoch (or none) is *not* converged, there is nothing to compare; a non-finite (NaN/inf) last NLL is
not converged (a diverged run); non-finite earlier epochs are left out of ``p``, and if all are
non-finite the run is not converged. An ensemble with one history per member converged when every
member did.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from sve.errors import ConfigError, DataError

HELD, DID_NOT_HOLD, INCONCLUSIVE, NOT_CONVERGED = "held", "did not hold", "inconclusive", "not converged"
VERDICTS = (HELD, DID_NOT_HOLD, INCONCLUSIVE, NOT_CONVERGED)
DIRECTIONS = ("higher", "lower")  # which values of the metric are better
KINDS = ("better", "close")
#: the convergence rule's tolerance: the last epoch may improve the best validation NLL before it by
#: less than this fraction (see the module docstring)
CONVERGENCE_TOL = 0.01
#: the columns of a claim row (:func:`claim_row`), in table order
ROW_COLUMNS = ("claim", "metric", "a", "b", "a_mean", "b_mean", "diff", "low", "high", "n", "verdict",
               "a_converged", "b_converged")


# ----------------------------------------------------------------------------- paired difference


@dataclass(frozen=True)
class PairedDifference:
    """The mean of ``d_s = a_s − b_s`` over ``n`` paired seeds, its ``sd`` (ddof 1) and the
    ``confidence`` t-interval ``[low, high]``; ``seeds``: the pairs' seeds (positions if none given)."""

    n: int
    mean: float
    sd: float
    low: float
    high: float
    confidence: float
    seeds: tuple

    @property
    def half_width(self) -> float:
        """``t_{(1+c)/2, n−1} · sd / √n``."""
        return (self.high - self.low) / 2


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise ConfigError(f"confidence={confidence!r} must lie strictly between 0 and 1 (0.95 is usual).")


def _per_seed(x: Any, name: str) -> pd.Series | np.ndarray:
    """A pandas Series (or a mapping, read as {seed: value}) as a float Series; anything else as a
    1-D float array in seed order."""
    if isinstance(x, Mapping):
        x = pd.Series(dict(x))
    if isinstance(x, pd.Series):
        if x.index.has_duplicates:
            dup = x.index[x.index.duplicated()].unique().tolist()
            raise DataError(f"{name} has seed(s) {dup} more than once; give one value per seed.")
        values = pd.to_numeric(x, errors="coerce").astype(float)
    else:
        values = np.asarray(x, dtype=float)
        if values.ndim != 1:
            raise DataError(f"{name} must be 1-D (one value per seed); got shape {values.shape}.")
    if not np.all(np.isfinite(np.asarray(values))):
        raise DataError(f"{name} has NaN/inf or non-numeric values; a metric that is not finite means a "
                        "broken run: fix or drop that seed for both methods.")
    return values


def _aligned(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray, tuple]:
    """(a, b, seeds) paired by seed (Series / mappings) or by position (sequences)."""
    a, b = _per_seed(a, "a"), _per_seed(b, "b")
    if isinstance(a, pd.Series) != isinstance(b, pd.Series):
        raise DataError("pass a and b both as pandas Series (or dicts) indexed by seed, or both as "
                        "sequences in the same seed order; got one of each.")
    if isinstance(a, pd.Series):
        only_a, only_b = a.index.difference(b.index).tolist(), b.index.difference(a.index).tolist()
        if only_a or only_b:
            raise DataError(f"the seeds do not match: only in a {only_a}, only in b {only_b}. Pairing needs "
                            "each seed on both sides; run the missing seeds or drop them from both.")
        seeds = tuple(a.index)
        return a.to_numpy(), b.loc[a.index].to_numpy(), seeds
    if a.shape != b.shape:
        raise DataError(f"a and b must hold one value per seed each, in the same seed order; got {len(a)} "
                        f"and {len(b)} values.")
    return a, b, tuple(range(len(a)))


def paired_difference(a: Any, b: Any, confidence: float = 0.95) -> PairedDifference:
    """Mean paired difference ``a − b`` over seeds with its t-interval (see the module docstring).

    ``a``, ``b``: per-seed values of one metric for methods A and B, either both pandas Series (or
    dicts) indexed by seed, aligned by seed, or both sequences in the same seed order. Needs ≥ 2
    pairs; unmatched or repeated seeds and non-finite values raise :class:`~sve.errors.DataError`.
    """
    _check_confidence(confidence)
    a, b, seeds = _aligned(a, b)
    n = len(a)
    if n < 2:
        raise DataError(f"a confidence interval needs at least 2 paired seeds; got {n}. Run more seeds "
                        "(5 give a half-width of about 1.2 seed standard deviations).")
    d = a - b
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return PairedDifference(n=n, mean=mean, sd=sd, low=mean - half, high=mean + half,
                            confidence=float(confidence), seeds=seeds)


# ----------------------------------------------------------------------------- claims and verdicts


@dataclass(frozen=True)
class Claim:
    """"``a`` better than ``b`` on ``metric`` by at least ``threshold``" (``kind="better"``), or
    "``a`` within ±``threshold`` of ``b``" (``kind="close"``). ``direction``: which values of the
    metric are better ("higher": accuracy, AUROC; "lower": ECE, NLL, Brier). ``text``: how the claim
    reads in a table (default: built from the fields)."""

    a: str
    b: str
    metric: str
    direction: str = "higher"
    threshold: float = 0.0
    kind: str = "better"
    text: str | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"direction={self.direction!r}: use 'higher' (e.g. accuracy) or 'lower' "
                              "(e.g. ECE, NLL) for the better values of the metric.")
        if self.kind not in KINDS:
            raise ConfigError(f"kind={self.kind!r}: use 'better' (A better than B by at least the "
                              "threshold) or 'close' (A within ± the threshold of B).")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold)):
            raise ConfigError(f"threshold={self.threshold!r} must be a finite number (0 for plain 'better').")
        if self.kind == "close" and self.threshold <= 0:
            raise ConfigError(f"a 'close' claim needs a threshold > 0 (the allowed ± gap); got "
                              f"{self.threshold}.")

    @property
    def label(self) -> str:
        """``text``, or e.g. "sve better than single on ece (lower is better)"."""
        if self.text:
            return self.text
        if self.kind == "close":
            return f"{self.a} within ±{self.threshold:g} of {self.b} on {self.metric}"
        by = f" by ≥ {self.threshold:g}" if self.threshold else ""
        return f"{self.a} better than {self.b} on {self.metric} ({self.direction} is better){by}"


def decide(diff: PairedDifference, claim: Claim, converged: bool = True) -> str:
    """The verdict (one of ``VERDICTS``) of ``claim`` from the paired difference ``a − b``; ``converged``
    False (a side has a non-converged run) gives ``"not converged"`` whatever the numbers."""
    if not converged:
        return NOT_CONVERGED
    delta = claim.threshold
    if claim.kind == "close":
        if -delta < diff.low and diff.high < delta:
            return HELD
        return DID_NOT_HOLD if (diff.low > delta or diff.high < -delta) else INCONCLUSIVE
    low, high = (diff.low, diff.high) if claim.direction == "higher" else (-diff.high, -diff.low)  # gain of A
    if low > delta:
        return HELD
    return DID_NOT_HOLD if high < delta else INCONCLUSIVE


def _side(results: pd.DataFrame, method: str, claim: Claim, converged: str | None) -> pd.DataFrame:
    rows = results[results["method"] == method]
    if rows.empty:
        known = sorted(results["method"].astype(str).unique())
        raise DataError(f"method {method!r} has no rows in the results (methods: {known}).")
    dup = rows["seed"].duplicated(keep=False)
    if dup.any():
        keys = {"method", "seed", claim.metric, *([converged] if converged else [])}
        varying = [c for c in rows.columns if c not in keys and not pd.api.types.is_float_dtype(rows[c])
                   and rows.loc[dup, c].nunique(dropna=False) > 1]  # float columns are metrics, not keys
        example = ", ".join(f"{c!r}: ..." for c in varying)
        raise DataError(f"method {method!r} has several rows per seed (they differ in {varying}); keep one "
                        f"row per (method, seed), e.g. where={{{example}}}.")
    return rows.set_index("seed")


def claim_row(results: pd.DataFrame, claim: Claim, *, where: Mapping[str, Any] | None = None,
              confidence: float = 0.95, converged: str | None = "converged") -> dict[str, Any]:
    """One claim decided from a long results table: ``{claim, metric, a, b, a_mean, b_mean, diff, low,
    high, n, verdict, a_converged, b_converged}`` (``ROW_COLUMNS``; ``diff``, ``low``, ``high``: ``a − b``
    and its interval; ``a_converged`` / ``b_converged``: how many of each side's runs converged, None
    with ``converged=None``).

    ``results``: one row per (method, seed) with columns ``method``, ``seed``, the metric and the
    boolean ``converged`` column (:func:`converged` of each run; ``converged=None`` skips that check,
    only for runs whose convergence was checked elsewhere). ``where``: column values to keep first
    (e.g. ``{"split": "test", "member": "ensemble"}``) when the table has several rows per run.
    With a single seed on both sides there is no interval (``low``/``high`` NaN): the verdict is
    ``"inconclusive"`` (or ``"not converged"``), never decided from one pair.
    """
    if not isinstance(results, pd.DataFrame):
        raise DataError(f"results must be a pandas DataFrame; got {type(results).__name__}.")
    for key, value in (where or {}).items():
        if key not in results.columns:
            raise DataError(f"where: column {key!r} is not in the results; columns: {list(results.columns)}.")
        results = results[results[key] == value]
    needed = ["method", "seed", claim.metric] + ([converged] if converged else [])
    missing = [c for c in needed if c not in results.columns]
    if missing:
        hint = (f" ({converged!r}: whether each run converged, sve.stats.converged(history))"
                if converged in missing else "")
        raise DataError(f"results lack column(s) {missing}{hint}; columns: {list(results.columns)}.")
    a, b = _side(results, claim.a, claim, converged), _side(results, claim.b, claim, converged)
    shared = a.index.intersection(b.index)
    if len(shared) == 1 and len(a) == len(b) == 1:  # one seed: a difference but no interval
        d = float(a[claim.metric].iloc[0] - b[claim.metric].iloc[0])
        diff = PairedDifference(n=1, mean=d, sd=math.nan, low=math.nan, high=math.nan,
                                confidence=confidence, seeds=tuple(shared))
    else:
        diff = paired_difference(a[claim.metric], b[claim.metric], confidence)
    ok, counts = True, (None, None)
    if converged:
        flags = pd.concat([a[converged], b[converged]])
        if not flags.map(lambda v: isinstance(v, (bool, np.bool_))).all():
            raise DataError(f"column {converged!r} must hold True/False for every run; got "
                            f"{sorted(map(repr, flags.unique()))}.")
        ok, counts = bool(flags.all()), (int(a[converged].sum()), int(b[converged].sum()))
    return {"claim": claim.label, "metric": claim.metric, "a": claim.a, "b": claim.b,
            "a_mean": float(a[claim.metric].mean()), "b_mean": float(b[claim.metric].mean()),
            "diff": diff.mean, "low": diff.low, "high": diff.high, "n": diff.n,
            "verdict": decide(diff, claim, ok) if diff.n > 1 else (INCONCLUSIVE if ok else NOT_CONVERGED),
            "a_converged": counts[0], "b_converged": counts[1]}


def claims_table(results: pd.DataFrame, claims: Iterable[Claim], **kwargs: Any) -> pd.DataFrame:
    """:func:`claim_row` for each claim, one row each (``ROW_COLUMNS``); ``kwargs`` go to every row."""
    return pd.DataFrame([claim_row(results, c, **kwargs) for c in claims], columns=list(ROW_COLUMNS))


# ----------------------------------------------------------------------------- convergence


def _val_nll(history: Any) -> np.ndarray:
    """The per-epoch validation NLLs of one history (list of dicts, or a DataFrame with ``val_nll``)."""
    if isinstance(history, pd.DataFrame):
        if "val_nll" not in history.columns and len(history):
            raise DataError(f"the history has no 'val_nll' column (columns {list(history.columns)}); the "
                            "convergence rule needs a validation set: fit with val=...")
        return history["val_nll"].to_numpy(dtype=float) if len(history) else np.array([])
    rows = list(history)
    bad = [i for i, r in enumerate(rows) if not (isinstance(r, Mapping) and "val_nll" in r)]
    if bad:
        raise DataError(f"history row {bad[0]} has no 'val_nll' (one dict per epoch, as FitResult.history); "
                        "the convergence rule needs a validation set: fit with val=...")
    return np.array([r["val_nll"] for r in rows], dtype=float)


def last_epoch_gain(history: Any) -> float:
    """``(p − v[-1]) / p`` with ``v`` the validation NLLs and ``p`` the best (finite) one before the
    last epoch: how much the last epoch improved the NLL (≤ 0: it did not). NaN when undefined (fewer
    than 2 epochs, a non-finite last NLL, no finite earlier one)."""
    v = _val_nll(history)
    earlier = v[:-1][np.isfinite(v[:-1])]
    if len(v) < 2 or not np.isfinite(v[-1]) or len(earlier) == 0:
        return math.nan
    p = float(earlier.min())
    if p <= 0:  # a perfect earlier NLL: any last value is no improvement
        return 0.0 if v[-1] >= p else math.inf
    return (p - float(v[-1])) / p


def _is_member_list(history: Any) -> bool:
    return (isinstance(history, Sequence) and not isinstance(history, (str, Mapping)) and len(history) > 0
            and all(isinstance(h, (pd.DataFrame, Sequence)) and not isinstance(h, str) for h in history))


def converged(history: Any, tol: float = CONVERGENCE_TOL) -> bool:
    """The convergence rule (module docstring): ``last_epoch_gain(history) < tol``.

    ``history``: one dict per epoch with ``val_nll`` (``FitResult.history``), or a DataFrame with a
    ``val_nll`` column (``Run.history(...)["epoch"]``); or a list of such histories, one per ensemble
    member, converged when every member is.
    """
    if not (isinstance(tol, (int, float)) and 0 <= tol < 1):
        raise ConfigError(f"tol={tol!r} must lie in [0, 1) (a fraction: 0.01 is 1 %).")
    if _is_member_list(history):
        return all(converged(h, tol) for h in history)
    gain = last_epoch_gain(history)
    return bool(gain < tol)  # NaN compares False: not converged
