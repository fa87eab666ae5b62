"""Calibration, selective-prediction, uncertainty, OOD and diversity metrics.

Conventions (also in ``docs/METRICS.md``):

- **Inputs.** ``logits`` are ``(N, M, C)`` member logits (a single model may pass ``(N, C)``, read as
  ``M = 1``); numpy arrays or torch tensors; computed in float64. NaN/inf logits raise
  :class:`~sve.errors.DataError`. Have probabilities ``p`` instead? Pass ``np.log(p)``: softmax of
  log-probabilities gives ``p`` back. ``labels`` are integer class ids ``(N,)`` in ``[0, C)``.
- **Ensemble prediction.** ``combine="prob"`` (default): ``p(y|x) = 1/M Σ_m softmax(z_m)``;
  ``combine="logit"``: ``softmax(1/M Σ_m z_m)``.
- **Bins.** Equal-width bins over ``[0, 1]`` with edges ``linspace(0, 1, n_bins + 1)``; bin ``b`` holds
  ``edge_b <= conf < edge_{b+1}``, and the last bin also holds ``conf == 1`` (so 0 falls in the first
  bin and 1 in the last, never in an extra one). Empty bins are left out of every sum and plot.
  ``ECE = Σ_b n_b/N · |acc_b − conf_b|`` over the top-label confidence (15 bins by default).
- **Scores.** Every per-sample uncertainty score is oriented so that *higher = more uncertain*;
  ``"msp"`` is therefore ``1 − max_c p(c|x)``.
- **OOD.** OOD is the positive class; functions take ID scores and OOD scores separately and use
  every sample of both sets (never truncated to equal sizes).

Everything returns python floats or numpy arrays (tables: pandas DataFrames).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sve.errors import ConfigError, DataError

COMBINES = ("prob", "logit")
#: per-sample uncertainty scores, all "higher = more uncertain"
SCORES = ("msp", "entropy", "expected_entropy", "mutual_info", "energy", "disagreement", "pred_var")
#: scores that only mean something for an ensemble (constant when M == 1)
ENSEMBLE_ONLY_SCORES = ("mutual_info", "disagreement", "pred_var")
DEFAULT_SCORES = ("msp", "entropy", "mutual_info", "energy")


# ----------------------------------------------------------------------------- input checks


def as_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """``x`` (numpy array, torch tensor, list) as a numpy array of ``dtype`` (``None``: keep)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor (torch itself is not imported here)
        t = x.detach().cpu()
        x = (t.double() if t.is_floating_point() else t).numpy()  # bf16/fp16 have no numpy twin
    arr = np.asarray(x)
    return arr if dtype is None else arr.astype(dtype, copy=False)


def _check_combine(combine: str) -> None:
    if combine not in COMBINES:
        raise ConfigError(f"combine={combine!r} is not known; use one of {COMBINES}.")


def _check_bins(n_bins: int) -> None:
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ConfigError(f"n_bins={n_bins!r} must be a positive integer (15 is the usual choice).")


def _check_finite(arr: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise DataError(
            f"{what} contain {int(bad.sum())} NaN/inf value(s) (first in row {row}); remove those "
            "samples or fix the model (a diverged run, or fp16 overflow) before computing metrics."
        )


def member_logits(logits: Any) -> np.ndarray:
    """Validated member logits as a float64 numpy array of shape ``(N, M, C)``."""
    arr = as_numpy(logits)
    if arr.ndim == 2:
        arr = arr[:, None, :]
    if arr.ndim != 3 or 0 in arr.shape:
        raise DataError(
            f"logits must have shape (N, C) or (N, M, C) with no empty axis; got {tuple(arr.shape)}."
        )
    _check_finite(arr, "logits")
    return arr


def check_labels(labels: Any, n: int, num_classes: int) -> np.ndarray:
    """Validated integer labels ``(n,)`` in ``[0, num_classes)`` as int64 numpy."""
    arr = as_numpy(labels, dtype=None)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"labels must be a 1-D array with one entry per sample ({n}); got shape {arr.shape}.")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError("labels must be integer class ids; got non-integer values.")
    elif arr.dtype.kind not in "iu":
        raise DataError(f"labels must be integer class ids; got dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        raise DataError(
            f"labels must lie in [0, {num_classes}) for {num_classes}-class logits; got "
            f"{arr[bad][:5].tolist()} (OOD samples, labelled -1, belong in ood_logits / the OOD scores)."
        )
    return arr


def _scores(scores: Any, what: str) -> np.ndarray:
    arr = as_numpy(scores).reshape(-1)
    if arr.size == 0:
        raise DataError(
            f"{what} is empty: OOD metrics need both ID and OOD samples (only one set was given)."
        )
    _check_finite(arr, what)
    return arr


# ----------------------------------------------------------------------------- predictions


def logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    """``log Σ exp(a)`` along ``axis`` (max-shifted, so it does not overflow)."""
    top = a.max(axis=axis, keepdims=True)
    return np.squeeze(top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True)), axis=axis)


def log_softmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """``a − logsumexp(a)`` along ``axis``."""
    return a - np.expand_dims(logsumexp(a, axis), axis)


def ensemble_log_probs(logits: Any, combine: str = "prob") -> np.ndarray:
    """Log of the ensemble's predictive distribution, ``(N, C)``.

    ``combine="prob"``: ``log(1/M Σ_m softmax(z_m)) = logsumexp_m(log_softmax(z_m)) − log M``;
    ``combine="logit"``: ``log_softmax(1/M Σ_m z_m)``.
    """
    _check_combine(combine)
    z = member_logits(logits)
    if combine == "logit":
        return log_softmax(z.mean(1))
    if z.shape[1] == 1:
        return log_softmax(z[:, 0])
    return logsumexp(log_softmax(z), axis=1) - np.log(z.shape[1])


def member_probs(logits: Any) -> np.ndarray:
    """Each member's softmax probabilities, ``(N, M, C)``."""
    return np.exp(log_softmax(member_logits(logits)))


def predictive_probs(logits: Any, combine: str = "prob") -> np.ndarray:
    """The ensemble's predictive probabilities, ``(N, C)`` (see the module docstring for ``combine``)."""
    return np.exp(ensemble_log_probs(logits, combine))


def _prepared(logits: Any, labels: Any, combine: str) -> tuple[np.ndarray, np.ndarray]:
    """(ensemble probabilities (N, C), validated labels (N,))."""
    probs = predictive_probs(logits, combine)
    return probs, check_labels(labels, probs.shape[0], probs.shape[1])


# ----------------------------------------------------------------------------- classification


def accuracy(logits: Any, labels: Any, combine: str = "prob") -> float:
    """Top-1 accuracy of the ensemble prediction (argmax of the combined probabilities)."""
    probs, y = _prepared(logits, labels, combine)
    return float(np.mean(probs.argmax(1) == y))


def nll(logits: Any, labels: Any, combine: str = "prob") -> float:
    """Mean negative log-likelihood ``−1/N Σ_i log p(y_i|x_i)`` (natural log) of the ensemble."""
    logp = ensemble_log_probs(logits, combine)
    y = check_labels(labels, logp.shape[0], logp.shape[1])
    return float(-np.mean(logp[np.arange(len(y)), y]))


def _brier_terms(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(y)), y] = 1.0
    return ((probs - onehot) ** 2).sum(1)


def brier(logits: Any, labels: Any, combine: str = "prob") -> float:
    """Brier score summed over classes, averaged over samples: ``1/N Σ_i Σ_c (p_ic − 1[y_i=c])²`` ∈ [0, 2]."""
    probs, y = _prepared(logits, labels, combine)
    return float(np.mean(_brier_terms(probs, y)))


@dataclass
class ReliabilityBins:
    """Non-empty calibration bins (empty bins are dropped): what a reliability diagram draws.

    ``lower``/``upper``: bin edges; ``count``: samples per bin; ``confidence``: mean confidence in the
    bin; ``accuracy``: fraction correct in the bin; ``total``: number of samples over all bins.
    """

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    total: int

    @property
    def gap(self) -> np.ndarray:
        """``accuracy − confidence`` per bin (negative = over-confident)."""
        return self.accuracy - self.confidence

    @property
    def ece(self) -> float:
        """``Σ_b n_b/N · |acc_b − conf_b|``."""
        return float(np.sum(self.count * np.abs(self.gap)) / self.total)

    @property
    def mce(self) -> float:
        """``max_b |acc_b − conf_b|`` over the non-empty bins."""
        return float(np.max(np.abs(self.gap)))


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each confidence: ``edge_b <= conf < edge_{b+1}``; 0 → first, 1 → last bin."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)


def _width_sums(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> np.ndarray:
    """Per-bin (count, Σ conf, Σ hit) for equal-width bins: shape ``(3, n_bins)`` for 1-D ``conf``,
    ``(3, C, n_bins)`` for ``(N, C)`` ``conf`` (one set of bins per column, for class-wise ECE)."""
    idx = _bin_index(conf, n_bins)
    groups = 1 if conf.ndim == 1 else conf.shape[1]
    if conf.ndim == 2:
        idx = idx + n_bins * np.arange(groups)[None, :]
    flat = idx.reshape(-1)
    size = n_bins * groups
    sums = np.stack(
        [
            np.bincount(flat, minlength=size),
            np.bincount(flat, weights=conf.reshape(-1), minlength=size),
            np.bincount(flat, weights=hit.reshape(-1).astype(np.float64), minlength=size),
        ]
    ).astype(np.float64)
    return sums if conf.ndim == 1 else sums.reshape(3, groups, n_bins)


def _bins_from_sums(sums: np.ndarray, n_bins: int) -> ReliabilityBins:
    count, conf_sum, hit_sum = sums
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    keep = count > 0
    return ReliabilityBins(
        lower=edges[:-1][keep],
        upper=edges[1:][keep],
        count=count[keep].astype(np.int64),
        confidence=conf_sum[keep] / count[keep],
        accuracy=hit_sum[keep] / count[keep],
        total=int(count.sum()),
    )


def _classwise_from_sums(sums: np.ndarray) -> float:
    """Mean over classes of ``Σ_b |Σ hit − Σ p| / N`` from ``(3, C, n_bins)`` sums."""
    count, conf_sum, hit_sum = sums
    n = count[0].sum()
    return float(np.mean(np.abs(hit_sum - conf_sum).sum(-1) / n))


def _mass_bins(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> ReliabilityBins:
    """Equal-mass bins: sort by confidence (stable) and split into ``min(n_bins, N)`` chunks whose sizes
    differ by at most one (``np.array_split``). Edges are midpoints between neighbouring chunks."""
    order = np.argsort(conf, kind="stable")
    chunks = [c for c in np.array_split(order, min(n_bins, len(conf))) if len(c)]
    lo = np.array([conf[c].min() for c in chunks])
    hi = np.array([conf[c].max() for c in chunks])
    inner = (hi[:-1] + lo[1:]) / 2
    return ReliabilityBins(
        lower=np.r_[0.0, inner],
        upper=np.r_[inner, 1.0],
        count=np.array([len(c) for c in chunks]),
        confidence=np.array([conf[c].mean() for c in chunks]),
        accuracy=np.array([hit[c].mean() for c in chunks]),
        total=len(conf),
    )


def calibration_bins(
    confidence: Any, correct: Any, n_bins: int = 15, scheme: str = "width"
) -> ReliabilityBins:
    """Reliability bins from raw confidences in [0, 1] and 0/1 correctness (the low-level form).

    ``scheme="width"``: equal-width bins (see module docstring); ``scheme="mass"``: equal-mass
    (adaptive) bins, see :func:`adaptive_ece`.
    """
    _check_bins(n_bins)
    conf = as_numpy(confidence).reshape(-1)
    hit = as_numpy(correct).reshape(-1)
    if conf.size == 0 or conf.shape != hit.shape:
        raise DataError(
            f"confidence and correct must be non-empty and of equal length; got {conf.size}, {hit.size}."
        )
    _check_finite(conf, "confidences")
    if conf.min() < 0 or conf.max() > 1:
        raise DataError("confidences must lie in [0, 1]; pass probabilities (not logits) here.")
    if scheme == "width":
        return _bins_from_sums(_width_sums(conf, hit, n_bins), n_bins)
    if scheme == "mass":
        return _mass_bins(conf, hit, n_bins)
    raise ConfigError(f"scheme={scheme!r} is not known; use 'width' (equal-width) or 'mass' (equal-mass).")


def _top_label(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return probs.max(1), (probs.argmax(1) == y)


def reliability_bins(
    logits: Any, labels: Any, n_bins: int = 15, scheme: str = "width", combine: str = "prob"
) -> ReliabilityBins:
    """Top-label reliability bins of the ensemble prediction (confidence = max probability)."""
    probs, y = _prepared(logits, labels, combine)
    return calibration_bins(*_top_label(probs, y), n_bins=n_bins, scheme=scheme)


def ece(logits: Any, labels: Any, n_bins: int = 15, combine: str = "prob") -> float:
    """Top-label expected calibration error with equal-width bins: ``Σ_b n_b/N · |acc_b − conf_b|``."""
    return reliability_bins(logits, labels, n_bins, "width", combine).ece


def adaptive_ece(logits: Any, labels: Any, n_bins: int = 15, combine: str = "prob") -> float:
    """Top-label ECE with equal-mass bins (each bin holds ``N / n_bins`` samples, ±1; tied confidences
    may be split between neighbouring bins in stable-sort order)."""
    return reliability_bins(logits, labels, n_bins, "mass", combine).ece


def mce(logits: Any, labels: Any, n_bins: int = 15, combine: str = "prob") -> float:
    """Maximum calibration error: ``max_b |acc_b − conf_b|`` over non-empty equal-width bins."""
    return reliability_bins(logits, labels, n_bins, "width", combine).mce


def classwise_ece(logits: Any, labels: Any, n_bins: int = 15, combine: str = "prob") -> float:
    """Class-wise ECE (Kull et al. 2019): for each class ``c`` bin ``p_c`` of every sample with
    "accuracy" = frequency of ``y = c``; ``1/C Σ_c Σ_b n_cb/N · |freq_cb − mean p_cb|``."""
    _check_bins(n_bins)
    probs, y = _prepared(logits, labels, combine)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(y)), y] = 1.0
    return _classwise_from_sums(_width_sums(probs, onehot, n_bins))


class CalibrationAccumulator:
    """Streaming accuracy / NLL / Brier / ECE / MCE / class-wise ECE in ``O(n_bins · C)`` memory.

    ``update(logits, labels)`` per batch, then ``compute()``; gives the same numbers as the batch
    functions on the concatenated data (up to float summation order). Adaptive ECE needs the sorted
    confidences, so it is not available here.
    """

    def __init__(self, n_bins: int = 15, combine: str = "prob") -> None:
        _check_bins(n_bins)
        _check_combine(combine)
        self.n_bins, self.combine = n_bins, combine
        self.top = np.zeros((3, n_bins))
        self.classwise: np.ndarray | None = None
        self.n = 0
        self.correct = self.nll_sum = self.brier_sum = 0.0

    def update(self, logits: Any, labels: Any) -> None:
        logp = ensemble_log_probs(logits, self.combine)
        probs = np.exp(logp)
        y = check_labels(labels, probs.shape[0], probs.shape[1])
        if self.classwise is None:
            self.classwise = np.zeros((3, probs.shape[1], self.n_bins))
        elif self.classwise.shape[1] != probs.shape[1]:
            raise DataError(f"batch has {probs.shape[1]} classes, earlier {self.classwise.shape[1]}.")
        conf, hit = _top_label(probs, y)
        onehot = np.zeros_like(probs)
        onehot[np.arange(len(y)), y] = 1.0
        self.top += _width_sums(conf, hit, self.n_bins)
        self.classwise += _width_sums(probs, onehot, self.n_bins)
        self.n += len(y)
        self.correct += float(hit.sum())
        self.nll_sum += float(-logp[np.arange(len(y)), y].sum())
        self.brier_sum += float(_brier_terms(probs, y).sum())

    def bins(self) -> ReliabilityBins:
        if self.n == 0:
            raise DataError("CalibrationAccumulator has seen no samples; call update(logits, labels) first.")
        return _bins_from_sums(self.top, self.n_bins)

    def compute(self) -> dict[str, float]:
        bins = self.bins()
        return {
            "accuracy": self.correct / self.n,
            "nll": self.nll_sum / self.n,
            "brier": self.brier_sum / self.n,
            "ece": bins.ece,
            "mce": bins.mce,
            "classwise_ece": _classwise_from_sums(self.classwise),
        }


# ----------------------------------------------------------------------------- selective prediction


def _risk_coverage(uncertainty: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Risk after keeping the ``k`` least-uncertain samples, ``k = 1..N``.

    Tied uncertainties are kept in random order in expectation: inside a tie group the error count
    grows linearly, so the curve does not depend on the input order.
    """
    order = np.argsort(uncertainty, kind="stable")
    u, e = uncertainty[order], errors[order]
    n = len(u)
    _, start, size = np.unique(u, return_index=True, return_counts=True)
    group_err = np.add.reduceat(e, start)
    gid = np.repeat(np.arange(len(start)), size)
    before = np.r_[0.0, np.cumsum(group_err)[:-1]]
    pos = np.arange(n) - start[gid] + 1
    errs = before[gid] + pos * group_err[gid] / size[gid]
    k = np.arange(1, n + 1)
    return k / n, errs / k


def _selective_inputs(logits: Any, labels: Any, scores: Any, combine: str) -> tuple[np.ndarray, np.ndarray]:
    probs, y = _prepared(logits, labels, combine)
    errors = (probs.argmax(1) != y).astype(np.float64)
    u = 1.0 - probs.max(1) if scores is None else as_numpy(scores).reshape(-1)
    if u.shape != errors.shape:
        raise DataError(f"scores must have one value per sample ({len(errors)}); got {u.shape}.")
    _check_finite(u, "scores")
    return u, errors


def risk_coverage(
    logits: Any, labels: Any, scores: Any = None, combine: str = "prob"
) -> tuple[np.ndarray, np.ndarray]:
    """Risk–coverage curve: ``(coverage, risk)`` with ``coverage = k/N`` and ``risk`` = error rate of
    the ``k`` samples with the lowest uncertainty ``scores`` (default ``1 − max p``), ``k = 1..N``."""
    return _risk_coverage(*_selective_inputs(logits, labels, scores, combine))


def aurc(logits: Any, labels: Any, scores: Any = None, combine: str = "prob") -> float:
    """Area under the risk–coverage curve, ``1/N Σ_k risk(k)`` (Geifman et al.; lower is better)."""
    return float(np.mean(risk_coverage(logits, labels, scores, combine)[1]))


def accuracy_at_coverage(
    logits: Any, labels: Any, coverage: float = 0.9, scores: Any = None, combine: str = "prob"
) -> float:
    """Accuracy on the ``ceil(coverage · N)`` least-uncertain samples (ties: expected value)."""
    if not 0 < coverage <= 1:
        raise ConfigError(f"coverage={coverage} must lie in (0, 1].")
    cov, risk = risk_coverage(logits, labels, scores, combine)
    k = max(1, int(np.ceil(coverage * len(cov) - 1e-9)))
    return float(1.0 - risk[k - 1])


# ----------------------------------------------------------------------------- uncertainty scores


def _entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) along the last axis, with ``0 log 0 = 0``."""
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def msp(logits: Any, combine: str = "prob") -> np.ndarray:
    """``1 − max_c p(c|x)``: the maximum softmax probability turned into an uncertainty (higher = more)."""
    return 1.0 - predictive_probs(logits, combine).max(1)


def entropy(logits: Any, combine: str = "prob") -> np.ndarray:
    """Predictive (total) entropy ``H[p(y|x)]`` of the ensemble prediction, in nats."""
    return _entropy(predictive_probs(logits, combine))


def expected_entropy(logits: Any) -> np.ndarray:
    """Aleatoric part ``1/M Σ_m H[p_m(y|x)]`` (nats)."""
    return _entropy(member_probs(logits)).mean(1)


def mutual_info(logits: Any) -> np.ndarray:
    """Epistemic part (BALD): ``H[1/M Σ_m p_m] − 1/M Σ_m H[p_m]`` ≥ 0 (nats; 0 when M = 1).

    Defined with the probability mean, so ``entropy(combine="prob") = expected_entropy + mutual_info``.
    """
    p = member_probs(logits)
    return np.maximum(_entropy(p.mean(1)) - _entropy(p).mean(1), 0.0)


def energy(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Energy score (Liu et al. 2020) ``−T logsumexp_c(z_c / T)``, mean over members (higher = more OOD)."""
    z = member_logits(logits)
    return (-temperature * logsumexp(z / temperature, axis=-1)).mean(1)


def disagreement(logits: Any, combine: str = "prob") -> np.ndarray:
    """Fraction of members whose top-1 class differs from the ensemble's predicted class."""
    z = member_logits(logits)
    pred = predictive_probs(z, combine).argmax(1)
    return (z.argmax(-1) != pred[:, None]).mean(1)


def pred_var(logits: Any, combine: str = "prob") -> np.ndarray:
    """Variance across members (ddof 0) of the probability each gives the ensemble's predicted class."""
    p = member_probs(logits)
    pred = predictive_probs(logits, combine).argmax(1)
    return p[np.arange(len(pred)), :, pred].var(1)


_SCORE_FUNCS = {
    "msp": lambda z, c: msp(z, c),
    "entropy": lambda z, c: entropy(z, c),
    "expected_entropy": lambda z, c: expected_entropy(z),
    "mutual_info": lambda z, c: mutual_info(z),
    "energy": lambda z, c: energy(z),
    "disagreement": lambda z, c: disagreement(z, c),
    "pred_var": lambda z, c: pred_var(z, c),
}


def _score_names(kinds: str | Iterable[str]) -> tuple[str, ...]:
    names = SCORES if kinds == "all" else ((kinds,) if isinstance(kinds, str) else tuple(kinds))
    unknown = [k for k in names if k not in _SCORE_FUNCS]
    if unknown:
        raise ConfigError(f"unknown uncertainty score(s) {unknown}; use any of {SCORES} or 'all'.")
    return names


def uncertainty(logits: Any, kind: str = "entropy", combine: str = "prob") -> np.ndarray:
    """One per-sample uncertainty score by name (see :data:`SCORES`); higher = more uncertain."""
    return _SCORE_FUNCS[_score_names(kind)[0]](member_logits(logits), combine)


def uncertainty_scores(
    logits: Any, kinds: str | Iterable[str] = "all", combine: str = "prob"
) -> dict[str, np.ndarray]:
    """Several per-sample uncertainty scores at once: ``{name: (N,) array}``."""
    z = member_logits(logits)
    return {k: _SCORE_FUNCS[k](z, combine) for k in _score_names(kinds)}


# ----------------------------------------------------------------------------- OOD detection


def _detection_curve(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives, threshold) at each distinct score, descending."""
    s = np.r_[pos, neg]
    is_pos = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    order = np.argsort(-s, kind="stable")
    s, is_pos = s[order], is_pos[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(is_pos)[last]
    return tps, (last + 1) - tps, s[last]


def roc_curve(id_scores: Any, ood_scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of detecting OOD (positive) by thresholding the score (``score >= t`` → flagged OOD).

    Returns ``(fpr, tpr, thresholds)`` starting at ``(0, 0, +inf)``; one point per distinct score.
    """
    pos, neg = _scores(ood_scores, "OOD scores"), _scores(id_scores, "ID scores")
    tps, fps, thr = _detection_curve(pos, neg)
    return np.r_[0.0, fps / len(neg)], np.r_[0.0, tps / len(pos)], np.r_[np.inf, thr]


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoid rule ``Σ_i (x_{i+1} − x_i) · (y_{i+1} + y_i) / 2``, written out because numpy's own
    function changed name (``np.trapezoid`` exists only from numpy 2.0, ``np.trapz`` is gone in 2.4)
    and the project supports numpy >= 1.26."""
    y, x = np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def auroc(id_scores: Any, ood_scores: Any) -> float:
    """Area under the ROC (OOD positive); ties count one half (= Mann–Whitney U / (n_id · n_ood))."""
    fpr, tpr, _ = roc_curve(id_scores, ood_scores)
    return _trapezoid(tpr, fpr)


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """Step-wise average precision ``Σ_n (R_n − R_{n−1}) P_n`` (no interpolation, as scikit-learn)."""
    tps, fps, _ = _detection_curve(pos, neg)
    precision = tps / (tps + fps)
    recall = tps / len(pos)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aupr_out(id_scores: Any, ood_scores: Any) -> float:
    """Average precision with OOD as the positive class (scores as given)."""
    return _average_precision(_scores(ood_scores, "OOD scores"), _scores(id_scores, "ID scores"))


def aupr_in(id_scores: Any, ood_scores: Any) -> float:
    """Average precision with ID as the positive class (scores negated: low uncertainty = ID)."""
    return _average_precision(-_scores(id_scores, "ID scores"), -_scores(ood_scores, "OOD scores"))


def fpr_at_tpr(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> float:
    """Fraction of ID samples flagged OOD at the first threshold that flags ``>= tpr`` of the OOD samples."""
    if not 0 < tpr <= 1:
        raise ConfigError(f"tpr={tpr} must lie in (0, 1].")
    fprs, tprs, _ = roc_curve(id_scores, ood_scores)
    return float(fprs[np.argmax(tprs >= tpr - 1e-12)])


def ood_metrics(id_scores: Any, ood_scores: Any) -> dict[str, float]:
    """``{"auroc", "aupr_in", "aupr_out", "fpr95"}`` for one score (higher = more uncertain, OOD positive)."""
    return {
        "auroc": auroc(id_scores, ood_scores),
        "aupr_in": aupr_in(id_scores, ood_scores),
        "aupr_out": aupr_out(id_scores, ood_scores),
        "fpr95": fpr_at_tpr(id_scores, ood_scores, 0.95),
    }


# ----------------------------------------------------------------------------- member diversity

PAIRWISE = ("disagreement", "kl", "js")


def _kl(logp: np.ndarray, logq: np.ndarray) -> np.ndarray:
    """Per-sample ``KL(p || q) = Σ_c p_c (log p_c − log q_c)`` (nats)."""
    p = np.exp(logp)
    return np.sum(np.where(p > 0, p * (logp - logq), 0.0), axis=-1)


def pairwise_matrix(logits: Any, kind: str = "disagreement") -> np.ndarray:
    """``(M, M)`` matrix between members, averaged over samples; zero diagonal.

    ``"disagreement"``: fraction of samples whose top-1 classes differ; ``"kl"``: ``KL(p_i || p_j)``
    (row ``i``, column ``j``; not symmetric); ``"js"``: Jensen–Shannon divergence (nats, ≤ log 2).
    """
    if kind not in PAIRWISE:
        raise ConfigError(f"kind={kind!r} is not known; use one of {PAIRWISE}.")
    z = member_logits(logits)
    logp = log_softmax(z)
    top = z.argmax(-1)
    m = logp.shape[1]
    out = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            if i == j:
                continue
            if kind == "disagreement":
                out[i, j] = np.mean(top[:, i] != top[:, j])
            elif kind == "kl":
                out[i, j] = np.mean(_kl(logp[:, i], logp[:, j]))
            else:
                mix = np.logaddexp(logp[:, i], logp[:, j]) - np.log(2.0)
                out[i, j] = np.mean(0.5 * _kl(logp[:, i], mix) + 0.5 * _kl(logp[:, j], mix))
    return out


def diversity(logits: Any) -> dict[str, float]:
    """Mean over ordered member pairs ``i ≠ j`` of the pairwise disagreement, KL and JS (0 when M = 1)."""
    m = member_logits(logits).shape[1]
    off = ~np.eye(m, dtype=bool)
    return {k: float(pairwise_matrix(logits, k)[off].mean()) if m > 1 else 0.0 for k in PAIRWISE}


# ----------------------------------------------------------------------------- σ-spectrum diversity

Spectra = Mapping[str, tuple[Any, Any]]


def _spectrum(name: str, pair: tuple[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    try:
        sigma, sigma0 = pair
    except (TypeError, ValueError):
        raise DataError(f"spectra[{name!r}] must be a pair (sigma (M, r), sigma0 (r,)).") from None
    sigma, sigma0 = as_numpy(sigma), as_numpy(sigma0).reshape(-1)
    if sigma.ndim == 1:
        sigma = sigma[None]
    if sigma.ndim != 2 or sigma.shape[1] != sigma0.shape[0] or sigma0.size == 0:
        raise DataError(
            f"spectra[{name!r}]: sigma must be (M, r) and sigma0 (r,); got {sigma.shape} and {sigma0.shape}."
        )
    _check_finite(sigma, f"spectra[{name!r}] sigma")
    _check_finite(sigma0, f"spectra[{name!r}] sigma0")
    return sigma, sigma0


def _stacked(spectra: Spectra, layers: str | Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the chosen layers' spectra: ``(sigma (M, R), sigma0 (R,))`` (all layers if None)."""
    if not spectra:
        raise DataError("spectra is empty: no SVE layer found (expected {layer: (sigma, sigma0)}).")
    names = list(spectra) if layers is None else ([layers] if isinstance(layers, str) else list(layers))
    missing = [n for n in names if n not in spectra]
    if missing:
        raise DataError(f"layer(s) {missing} not in spectra; available: {list(spectra)[:10]}...")
    pairs = [_spectrum(n, spectra[n]) for n in names]
    sizes = {p[0].shape[0] for p in pairs}
    if len(sizes) != 1:
        raise DataError(f"layers disagree on the number of members: {sorted(sizes)}.")
    return np.concatenate([p[0] for p in pairs], 1), np.concatenate([p[1] for p in pairs])


def spectrum_deviation(spectra: Spectra, layers: str | Sequence[str] | None = None) -> np.ndarray:
    """Each member's relative deviation from pretrained, ``||σ_m − σ₀||₂ / ||σ₀||₂``, shape ``(M,)``
    (over the concatenated singular values of ``layers``; all layers by default)."""
    sigma, sigma0 = _stacked(spectra, layers)
    return np.linalg.norm(sigma - sigma0, axis=1) / np.linalg.norm(sigma0)


def spectrum_distances(spectra: Spectra, layers: str | Sequence[str] | None = None) -> np.ndarray:
    """``(M, M)`` relative distances between members' σ vectors, ``||σ_i − σ_j||₂ / ||σ₀||₂``."""
    sigma, sigma0 = _stacked(spectra, layers)
    diff = sigma[:, None, :] - sigma[None, :, :]
    return np.linalg.norm(diff, axis=-1) / np.linalg.norm(sigma0)


@dataclass
class LayerSpectrum:
    """σ-spectrum diversity of one layer (``M`` members, ``r`` directions sorted as in ``sigma0``).

    ``relative``: ``(σ_mk − σ₀k) / σ₀k``, ``(M, r)`` (NaN where ``σ₀k = 0``); ``deviation``: per-member
    ``||σ_m − σ₀|| / ||σ₀||``, ``(M,)``; ``cv``: coefficient of variation across members per direction,
    ``std_m σ_mk / mean_m σ_mk`` (ddof 0), ``(r,)``; ``distances``: ``(M, M)`` relative distances;
    ``top_directions``: indices of the directions with the largest mean ``|relative|``, descending.
    """

    sigma: np.ndarray
    sigma0: np.ndarray
    relative: np.ndarray
    deviation: np.ndarray
    cv: np.ndarray
    distances: np.ndarray
    top_directions: np.ndarray


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)


def spectrum_diversity(spectra: Spectra, top_k: int = 5) -> dict[str, LayerSpectrum]:
    """Per-layer σ-spectrum diversity from ``{layer: (sigma (M, r), sigma0 (r,))}`` (the mapping
    ``sve.methods.spectra(model)`` returns). See :class:`LayerSpectrum` for the fields."""
    out = {}
    for name in spectra:
        sigma, sigma0 = _spectrum(name, spectra[name])
        relative = _safe_ratio(sigma - sigma0, sigma0[None, :])
        mean_abs = np.nan_to_num(np.abs(relative)).mean(0)
        out[name] = LayerSpectrum(
            sigma=sigma,
            sigma0=sigma0,
            relative=relative,
            deviation=spectrum_deviation(spectra, name),
            cv=_safe_ratio(sigma.std(0), sigma.mean(0)),
            distances=spectrum_distances(spectra, name),
            top_directions=np.argsort(-mean_abs, kind="stable")[:top_k],
        )
    return out


def spectrum_table(spectra: Spectra, top_k: int = 5) -> pd.DataFrame:
    """One row per layer: mean/max member deviation, mean CV, mean pairwise distance, top directions."""
    rows = []
    for name, s in spectrum_diversity(spectra, top_k).items():
        m = s.sigma.shape[0]
        off = ~np.eye(m, dtype=bool)
        rows.append(
            {
                "layer": name,
                "rank": len(s.sigma0),
                "mean_deviation": float(s.deviation.mean()),
                "max_deviation": float(s.deviation.max()),
                "mean_cv": float(np.nanmean(s.cv)),
                "mean_distance": float(s.distances[off].mean()) if m > 1 else 0.0,
                "top_directions": s.top_directions.tolist(),
            }
        )
    return pd.DataFrame(rows).set_index("layer")


# ----------------------------------------------------------------------------- the standard table


def _row(
    z: np.ndarray,
    y: np.ndarray,
    ood: np.ndarray | None,
    names: tuple[str, ...],
    n_bins: int,
    combine: str,
    coverage: float,
) -> dict[str, float]:
    single = z.shape[1] == 1
    logp = ensemble_log_probs(z, combine)[:, None, :]  # combined once; log-probs are valid (N, 1, C) logits
    row = {
        "accuracy": accuracy(logp, y),
        "nll": nll(logp, y),
        "brier": brier(logp, y),
        "ece": ece(logp, y, n_bins),
        "adaptive_ece": adaptive_ece(logp, y, n_bins),
        "mce": mce(logp, y, n_bins),
        "classwise_ece": classwise_ece(logp, y, n_bins),
        "aurc": aurc(logp, y),
        f"acc_at_{round(coverage * 100)}": accuracy_at_coverage(logp, y, coverage),
    }
    id_scores = uncertainty_scores(z, names, combine)
    ood_scores = uncertainty_scores(ood, names, combine) if ood is not None else {}
    for s in names:
        skip = single and s in ENSEMBLE_ONLY_SCORES
        row[f"mean_{s}"] = np.nan if skip else float(id_scores[s].mean())
        if ood is not None:
            for key, value in ood_metrics(id_scores[s], ood_scores[s]).items():
                row[f"{key}_{s}"] = np.nan if skip else value
    return row


def evaluate(
    logits: Any,
    labels: Any,
    ood_logits: Any = None,
    *,
    n_bins: int = 15,
    combine: str = "prob",
    scores: str | Iterable[str] = DEFAULT_SCORES,
    members: bool = False,
    coverage: float = 0.9,
) -> pd.DataFrame:
    """The standard table: one row ``"ensemble"`` (plus ``"member_0" …`` first when ``members=True``).

    Columns: ``accuracy, nll, brier, ece, adaptive_ece, mce, classwise_ece, aurc, acc_at_90`` (accuracy
    at ``coverage``), ``mean_<score>`` (mean ID uncertainty) and, with ``ood_logits``, ``auroc_<score>,
    aupr_in_<score>, aupr_out_<score>, fpr95_<score>`` for each uncertainty score in ``scores``
    (default msp, entropy, mutual_info, energy; ``"all"`` for every score). Ensemble-only scores
    (mutual_info, disagreement, pred_var) are NaN for single members / single models. For a
    temperature-scaled model pass ``logits / T``. ``df.loc["ensemble"].to_dict()`` gives plain floats.
    """
    _check_bins(n_bins)
    _check_combine(combine)
    names = _score_names(scores)
    z = member_logits(logits)
    y = check_labels(labels, z.shape[0], z.shape[2])
    ood = None if ood_logits is None else member_logits(ood_logits)
    if ood is not None and ood.shape[1:] != z.shape[1:]:
        raise DataError(
            f"ood_logits must have the same (M, C) as logits: {tuple(ood.shape[1:])} vs {tuple(z.shape[1:])}."
        )
    rows = {}
    if members:
        for m in range(z.shape[1]):
            member_ood = None if ood is None else ood[:, m : m + 1]
            rows[f"member_{m}"] = _row(z[:, m : m + 1], y, member_ood, names, n_bins, combine, coverage)
    rows["ensemble"] = _row(z, y, ood, names, n_bins, combine, coverage)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table


def member_table(logits: Any, labels: Any, ood_logits: Any = None, **kwargs: Any) -> pd.DataFrame:
    """:func:`evaluate` with one row per member plus ``"ensemble"`` (tidy: one row per model)."""
    return evaluate(logits, labels, ood_logits, members=True, **kwargs)
