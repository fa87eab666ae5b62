"""sve.calibration: temperature scaling lowers NLL on miscalibrated logits, finds the NLL minimum,
handles ensembles, and refuses probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sve import metrics
from sve.calibration import TemperatureScaler, fit_temperature, nll_and_grad
from sve.errors import ConfigError, DataError


def sample(n, c=8, m=1, sharpness=1.0, seed=0, member_noise=0.0):
    """Labels drawn from softmax(z) (so z is calibrated), returned as logits scaled by ``sharpness``
    (> 1: over-confident, < 1: under-confident) and, for ensembles, per-member noise."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * 2.0
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.minimum((p.cumsum(1) < rng.uniform(size=(n, 1))).sum(1), c - 1)  # y ~ Categorical(p)
    members = z[:, None, :] + member_noise * rng.normal(size=(n, m, c))
    return members * sharpness, y


def grid_nll(z, y, temps, combine="prob"):
    return np.array([metrics.nll(z / t, y, combine) for t in temps])


def test_overconfident_model_gets_t_above_one_and_lower_nll_on_held_out_data():
    z, y = sample(3000, sharpness=3.0)
    val, test = slice(0, 1500), slice(1500, None)
    scaler = TemperatureScaler().fit(z[val], y[val])
    assert scaler.temperature == pytest.approx(3.0, rel=0.15)  # undoes the sharpening
    assert scaler.nll_after < scaler.nll_before - 0.1
    assert metrics.nll(scaler(z[test]), y[test]) < metrics.nll(z[test], y[test]) - 0.1
    assert metrics.ece(scaler(z[test]), y[test]) < metrics.ece(z[test], y[test]) / 2


def test_underconfident_model_gets_t_below_one():
    z, y = sample(2000, sharpness=0.4, seed=1)
    t = fit_temperature(z[:, 0], y)
    assert t == pytest.approx(0.4, rel=0.15)
    assert metrics.nll(z / t, y) < metrics.nll(z, y)


def test_calibrated_model_keeps_t_near_one():
    z, y = sample(4000, seed=2)
    assert fit_temperature(z, y) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("combine", ["prob", "logit"])
def test_ensemble_temperature_minimises_nll_of_the_combined_prediction(combine):
    z, y = sample(1500, m=4, sharpness=2.5, member_noise=1.5, seed=3)
    t = fit_temperature(torch.tensor(z), torch.tensor(y), combine=combine)
    temps = np.exp(np.linspace(-1.0, 2.0, 151))
    nlls = grid_nll(z, y, temps, combine)
    assert metrics.nll(z / t, y, combine) <= nlls.min() + 1e-6  # no grid point does better
    assert t == pytest.approx(temps[nlls.argmin()], rel=0.02)
    assert metrics.nll(z / t, y, combine) < metrics.nll(z, y, combine) - 0.05


def test_ensemble_temperature_is_not_a_member_temperature():
    """The ensemble T calibrates the averaged probabilities, which are softer than each member."""
    z, y = sample(1500, m=5, sharpness=2.0, member_noise=3.0, seed=4)
    t_ens = fit_temperature(z, y)
    t_member = fit_temperature(z[:, 0], y)
    assert t_ens < t_member
    scaler = TemperatureScaler().fit(z, y)
    assert scaler.temperature == pytest.approx(t_ens)
    assert scaler.nll_after == pytest.approx(metrics.nll(z / t_ens, y))


def test_probabilities_are_refused_but_log_probabilities_accepted():
    z, y = sample(300, m=3, sharpness=3.0)
    probs = metrics.member_probs(z)
    with pytest.raises(DataError, match="look like probabilities.*logits"):
        fit_temperature(probs, y)
    with pytest.raises(DataError, match="look like probabilities"):
        fit_temperature(probs[:, 0], y)
    with pytest.raises(DataError, match="look like probabilities"):
        TemperatureScaler().fit(torch.tensor(probs, dtype=torch.float32), y)
    assert fit_temperature(np.log(probs), y) == pytest.approx(fit_temperature(z, y), rel=1e-4)


def test_bad_inputs_give_clear_errors():
    z, y = sample(100)
    bad = z.copy()
    bad[3, 0, 1] = np.nan
    with pytest.raises(DataError, match="NaN/inf"):
        fit_temperature(bad, y)
    with pytest.raises(DataError, match=r"lie in \[0, 8\)"):
        fit_temperature(z, y + 1)
    with pytest.raises(DataError, match="one entry per sample"):
        fit_temperature(z, y[:50])


def test_transform_keeps_the_input_type():
    z, y = sample(500, sharpness=2.0)
    scaler = TemperatureScaler().fit(z, y)
    out = scaler.transform(torch.tensor(z, dtype=torch.float32))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor(z / scaler.temperature, dtype=torch.float32))
    np.testing.assert_allclose(scaler(z), z / scaler.temperature)


@pytest.mark.parametrize("combine", ["prob", "logit"])
def test_nll_gradient_matches_finite_differences_and_metrics_nll(combine):
    z, y = sample(200, m=3, sharpness=2.0, member_noise=1.0, seed=5)
    for log_t in (-0.7, 0.0, 0.9):
        value, grad = nll_and_grad(z, y, log_t, combine)
        assert value == pytest.approx(metrics.nll(z / np.exp(log_t), y, combine), rel=1e-12)
        h = 1e-5
        up, down = nll_and_grad(z, y, log_t + h, combine)[0], nll_and_grad(z, y, log_t - h, combine)[0]
        numeric = (up - down) / (2 * h)
        assert grad == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    with pytest.raises(ConfigError, match="combine"):
        fit_temperature(z, y, combine="mean")
