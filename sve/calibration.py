"""Temperature scaling (Guo et al. 2017) for single models and ensembles.

One scalar ``T > 0`` divides the logits: ``p(y|x) = softmax(z / T)``. ``T`` is fitted on held-out
validation logits by minimising the NLL. For an ensemble ``(N, M, C)`` the same ``T`` divides every
member's logits and the NLL is that of the *combined* prediction, by default the averaged
probabilities ``1/M Σ_m softmax(z_m / T)`` (``combine="logit"``: ``softmax(mean_m z_m / T)``), so
``T`` calibrates what the ensemble actually predicts, not each member alone.

The fit optimises ``t = log T`` (so ``T`` stays positive) with L-BFGS (scipy's L-BFGS-B, exact
gradient), started from the best point of a coarse grid over ``T ∈ [e⁻³, e³]``. With ``s = z / T``,
``∂ log softmax(s)_y / ∂t = −(s_y − Σ_c p_c s_c)``; for the probability mean the per-member terms
are weighted by each member's share of ``p̄_y``. Inputs must be logits: arrays that look like
probabilities (non-negative rows summing to 1) are refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize

from sve.errors import ConfigError, DataError, SVEError
from sve.metrics import COMBINES, check_labels, ensemble_log_probs, log_softmax, member_logits


def _refuse_probabilities(z: np.ndarray) -> None:
    if z.min() >= 0 and np.allclose(z.sum(-1), 1.0, atol=1e-4):
        raise DataError(
            "these look like probabilities (non-negative rows that sum to 1), but temperature scaling "
            "needs logits: pass the model's pre-softmax outputs (or np.log(probs) if that is all you have)."
        )


def nll_and_grad(z: np.ndarray, y: np.ndarray, log_t: float, combine: str = "prob") -> tuple[float, float]:
    """NLL of the combined prediction of ``z / exp(log_t)`` and its derivative with respect to ``log_t``.

    ``z``: ``(N, M, C)`` validated logits; ``y``: ``(N,)`` labels.
    """
    rows = np.arange(len(y))
    s = (z.mean(1, keepdims=True) if combine == "logit" else z) / np.exp(log_t)  # (N, M', C)
    logp = log_softmax(s)
    d_member = -(s[rows, :, y] - (np.exp(logp) * s).sum(-1))  # ∂ log p_m,y / ∂t, (N, M')
    weights = np.exp(log_softmax(logp[rows, :, y], axis=1))  # p_m,y / Σ_m' p_m',y: each member's share of p̄_y
    value = -float(np.mean(ensemble_log_probs(s, "prob")[rows, y]))
    return value, -float(np.mean((weights * d_member).sum(1)))


def fit_temperature(logits: Any, labels: Any, *, combine: str = "prob", max_iter: int = 100) -> float:
    """Temperature ``T`` minimising the validation NLL of ``softmax(z / T)`` (see the module docstring).

    ``logits``: ``(N, C)`` or ``(N, M, C)`` (numpy or torch); ``labels``: ``(N,)`` class ids.
    """
    if combine not in COMBINES:
        raise ConfigError(f"combine={combine!r} is not known; use one of {COMBINES}.")
    z = member_logits(logits)
    _refuse_probabilities(z)
    y = check_labels(labels, z.shape[0], z.shape[2])
    grid = np.linspace(-3.0, 3.0, 25)
    start = grid[np.argmin([nll_and_grad(z, y, t, combine)[0] for t in grid])]
    result = minimize(lambda t: nll_and_grad(z, y, float(t[0]), combine), x0=[start], jac=True,
                      method="L-BFGS-B", bounds=[(-10.0, 10.0)], options={"maxiter": max_iter})
    value = float(np.exp(result.x[0]))
    if not np.isfinite(value) or not np.isfinite(result.fun):
        raise SVEError("temperature fit diverged (non-finite NLL); check the validation logits and labels.")
    return value


class TemperatureScaler:
    """``fit(val_logits, val_labels)`` then ``transform(logits)`` → ``logits / T`` (same type as given).

    After ``fit``: ``temperature``, and ``nll_before`` / ``nll_after`` on the fitting data.
    """

    def __init__(self, combine: str = "prob") -> None:
        self.combine = combine
        self.temperature = 1.0
        self.nll_before = self.nll_after = float("nan")

    def fit(self, logits: Any, labels: Any, max_iter: int = 100) -> TemperatureScaler:
        z = member_logits(logits)
        y = check_labels(labels, z.shape[0], z.shape[2])
        self.temperature = fit_temperature(z, y, combine=self.combine, max_iter=max_iter)
        self.nll_before = nll_and_grad(z, y, 0.0, self.combine)[0]
        self.nll_after = nll_and_grad(z, y, float(np.log(self.temperature)), self.combine)[0]
        return self

    def transform(self, logits: Any) -> Any:
        """``logits / T``: a torch tensor stays a tensor (same dtype), anything else becomes float64 numpy."""
        if hasattr(logits, "detach"):
            return logits / self.temperature
        return np.asarray(logits, dtype=np.float64) / self.temperature

    __call__ = transform
