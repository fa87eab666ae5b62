"""sve.metrics: cross-checks against scikit-learn / torchmetrics / naive references, edge cases,
hypothesis properties, the streaming accumulator and the evaluate() table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax, softmax
from scipy.stats import entropy as scipy_entropy
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score, roc_curve
from torchmetrics.classification import MulticlassCalibrationError

from sve import metrics
from sve.errors import ConfigError, DataError

FAST = settings(max_examples=25, deadline=None)


def make_logits(n=400, m=4, c=6, seed=0, scale=2.5):
    """Member logits with signal: the true class gets a boost, members differ by noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    z = rng.normal(size=(n, m, c)) * scale
    z[np.arange(n), :, y] += rng.uniform(0, 4, size=(n, 1))
    return z, y


def naive_bins(conf, hit, n_bins):
    """Reference equal-width binning written out as a loop over explicit edges."""
    edges = np.linspace(0, 1, n_bins + 1)
    out = []
    for b in range(n_bins):
        upper_ok = conf <= edges[b + 1] if b == n_bins - 1 else conf < edges[b + 1]
        sel = (conf >= edges[b]) & upper_ok
        if sel.any():
            out.append((sel.sum(), conf[sel].mean(), hit[sel].mean()))
    return out


def naive_ece(conf, hit, n_bins=15):
    return sum(n * abs(a - c) for n, c, a in naive_bins(conf, hit, n_bins)) / len(conf)


# ----------------------------------------------------------------------------- inputs and predictions


def test_numpy_torch_and_single_model_shapes_agree():
    z, y = make_logits()
    from_torch = metrics.nll(torch.tensor(z, dtype=torch.float32), torch.tensor(y))
    assert metrics.nll(z, y) == pytest.approx(from_torch, rel=1e-6)
    assert metrics.ece(z[:, 0], y) == metrics.ece(z[:, :1], y)
    assert isinstance(metrics.ece(z, y), float)
    assert isinstance(metrics.entropy(torch.tensor(z)), np.ndarray)


def test_combine_prob_and_logit_match_definitions():
    z, y = make_logits()
    prob = softmax(z, -1).mean(1)
    logit = softmax(z.mean(1), -1)
    np.testing.assert_allclose(metrics.predictive_probs(z), prob, rtol=1e-12)
    np.testing.assert_allclose(metrics.predictive_probs(z, "logit"), logit, rtol=1e-12)
    assert metrics.nll(z, y) == pytest.approx(log_loss(y, prob, labels=range(6)), rel=1e-10)
    assert metrics.nll(z, y, "logit") == pytest.approx(log_loss(y, logit, labels=range(6)), rel=1e-10)
    assert metrics.accuracy(z, y) == pytest.approx(np.mean(prob.argmax(1) == y))


def test_brier_is_sum_over_classes():
    z, y = make_logits()
    p = softmax(z, -1).mean(1)
    onehot = np.eye(6)[y]
    assert metrics.brier(z, y) == pytest.approx(np.mean(np.sum((p - onehot) ** 2, 1)), rel=1e-12)
    # a confident wrong prediction costs 2, a confident right one 0
    assert metrics.brier(np.array([[50.0, 0.0], [50.0, 0.0]]), np.array([1, 0])) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_are_refused(bad):
    z, y = make_logits(n=20)
    z[7, 1, 2] = bad
    with pytest.raises(DataError, match="NaN/inf.*row 7"):
        metrics.ece(z, y)
    with pytest.raises(DataError, match="NaN/inf"):
        metrics.evaluate(z, y)


def test_bad_labels_shapes_and_options_are_refused():
    z, y = make_logits(n=20)
    with pytest.raises(DataError, match=r"lie in \[0, 6\).*-1"):
        metrics.accuracy(z, np.r_[y[:-1], -1])
    with pytest.raises(DataError, match="one entry per sample"):
        metrics.nll(z, y[:-1])
    with pytest.raises(DataError, match="integer"):
        metrics.nll(z, y + 0.5)
    with pytest.raises(DataError, match=r"\(N, C\) or \(N, M, C\)"):
        metrics.ece(z[0, 0], y)
    with pytest.raises(ConfigError, match="combine"):
        metrics.ece(z, y, combine="mean")
    with pytest.raises(ConfigError, match="n_bins"):
        metrics.ece(z, y, n_bins=0)
    with pytest.raises(ConfigError, match="unknown uncertainty score"):
        metrics.uncertainty(z, "variance")


# ----------------------------------------------------------------------------- calibration error


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_and_mce_match_torchmetrics_on_random_logits(seed, n_bins):
    z, y = make_logits(seed=seed, m=1)
    probs = torch.tensor(softmax(z[:, 0], -1))
    for norm, ours in (("l1", metrics.ece), ("max", metrics.mce)):
        ref = MulticlassCalibrationError(num_classes=6, n_bins=n_bins, norm=norm)(probs, torch.tensor(y))
        assert ours(z, y, n_bins=n_bins) == pytest.approx(float(ref), abs=1e-6)  # torchmetrics: float32 sums


def test_ece_matches_torchmetrics_with_tied_confidences():
    """Many identical rows → identical confidences in one bin (ties), plus distinct ones."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(5, 4)) * 2
    z = np.repeat(base, [50, 1, 30, 2, 17], axis=0)
    y = rng.integers(0, 4, len(z))
    ref = MulticlassCalibrationError(num_classes=4, n_bins=15)(torch.tensor(softmax(z, -1)), torch.tensor(y))
    assert metrics.ece(z, y) == pytest.approx(float(ref), abs=1e-6)


def test_confidence_zero_and_one_fall_in_first_and_last_bin():
    conf = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 0.5])
    hit = np.array([0, 0, 1, 1, 0, 1])
    b = metrics.calibration_bins(conf, hit, n_bins=15)
    assert len(b.count) == 3 and b.total == 6  # no phantom 16th bin, empty bins dropped
    assert (b.lower[0], b.count[0], b.confidence[0]) == (0.0, 2, 0.0)
    assert (b.upper[-1], b.count[-1], b.confidence[-1]) == (1.0, 3, 1.0)
    assert b.ece == pytest.approx(naive_ece(conf, hit.astype(float)))
    assert b.ece == pytest.approx((2 * 0 + 3 * (1 - 2 / 3) + 1 * 0.5) / 6)


def test_saturated_softmax_confidence_one_lands_in_last_bin():
    z = np.array([[200.0, 0.0, 0.0], [200.0, 0.0, 0.0], [0.0, 300.0, 0.0]])
    y = np.array([0, 1, 1])
    assert metrics.predictive_probs(z).max(1).min() == 1.0
    b = metrics.reliability_bins(z, y)
    assert len(b.count) == 1 and b.upper[0] == 1.0 and b.count[0] == 3
    assert metrics.ece(z, y) == pytest.approx(1 / 3)


def test_bin_edges_match_naive_reference_on_exact_edges():
    """Confidences placed exactly on every bin edge (adversarial) plus uniform ones."""
    rng = np.random.default_rng(4)
    for n_bins in (1, 7, 15):
        edges = np.linspace(0, 1, n_bins + 1)
        conf = np.r_[edges, edges, rng.uniform(size=200)]
        hit = rng.integers(0, 2, len(conf)).astype(float)
        b = metrics.calibration_bins(conf, hit, n_bins)
        ref = naive_bins(conf, hit, n_bins)
        assert len(b.count) == len(ref) and b.count.sum() == len(conf)
        np.testing.assert_allclose(np.c_[b.count, b.confidence, b.accuracy], np.array(ref))
        assert np.all(b.count > 0)


def test_empty_bins_are_excluded():
    conf = np.r_[np.full(10, 0.95), np.full(5, 0.55)]
    b = metrics.calibration_bins(conf, np.ones(15), n_bins=15)
    assert b.count.tolist() == [5, 10] and len(b.lower) == 2
    assert b.mce == pytest.approx(0.45)


def test_adaptive_ece_uses_equal_mass_bins():
    rng = np.random.default_rng(5)
    conf = rng.uniform(0.2, 1, 103)
    hit = (rng.uniform(size=103) < conf).astype(float)
    b = metrics.calibration_bins(conf, hit, n_bins=10, scheme="mass")
    assert b.count.sum() == 103 and b.count.max() - b.count.min() <= 1 and len(b.count) == 10
    order = np.argsort(conf)
    ref = sum(len(c) * abs(hit[c].mean() - conf[c].mean()) for c in np.array_split(order, 10)) / 103
    assert b.ece == pytest.approx(ref)
    assert np.all(b.lower[1:] == b.upper[:-1]) and b.lower[0] == 0 and b.upper[-1] == 1
    # more bins than samples: one sample per bin
    assert len(metrics.calibration_bins(conf[:4], hit[:4], 15, "mass").count) == 4
    z, y = make_logits()
    assert metrics.adaptive_ece(z, y) == metrics.reliability_bins(z, y, scheme="mass").ece
    with pytest.raises(ConfigError, match="scheme"):
        metrics.calibration_bins(conf, hit, scheme="quantile")


def test_classwise_ece_matches_loop_reference():
    z, y = make_logits(c=4)
    p = softmax(z, -1).mean(1)
    ref = np.mean([naive_ece(p[:, c], (y == c).astype(float)) for c in range(4)])
    assert metrics.classwise_ece(z, y) == pytest.approx(ref, rel=1e-12)


def test_calibration_bins_refuses_bad_confidences():
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        metrics.calibration_bins([0.5, 1.5], [1, 0])
    with pytest.raises(DataError, match="equal length"):
        metrics.calibration_bins([0.5, 0.2], [1])


@FAST
@given(seed=st.integers(0, 10_000), classes=st.integers(2, 10))
def test_ece_of_a_calibrated_sampler_is_small_and_of_a_miscalibrated_one_is_not(seed, classes):
    rng = np.random.default_rng(seed)
    n = 20_000
    conf = rng.uniform(1 / classes, 1, n)
    calibrated = (rng.uniform(size=n) < conf).astype(float)
    overconfident = (rng.uniform(size=n) < conf**3).astype(float)
    small = metrics.calibration_bins(conf, calibrated).ece
    assert small < 0.03
    assert metrics.calibration_bins(conf, overconfident).ece > 0.1
    # and it shrinks with n (sampling bias ~ sqrt(bins / n))
    assert small < metrics.calibration_bins(conf[:500], calibrated[:500]).ece + 0.01


# ----------------------------------------------------------------------------- streaming


@FAST
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(1, 299), max_size=6),
    combine=st.sampled_from(["prob", "logit"]),
)
def test_streaming_accumulator_equals_batch(seed, cuts, combine):
    z, y = make_logits(n=300, seed=seed)
    acc = metrics.CalibrationAccumulator(n_bins=15, combine=combine)
    for part in np.split(np.arange(300), sorted(set(cuts))):
        if len(part):
            acc.update(torch.tensor(z[part]), y[part])
    got = acc.compute()
    assert got["accuracy"] == pytest.approx(metrics.accuracy(z, y, combine), abs=1e-12)
    assert got["nll"] == pytest.approx(metrics.nll(z, y, combine), rel=1e-10)
    assert got["brier"] == pytest.approx(metrics.brier(z, y, combine), rel=1e-10)
    assert got["ece"] == pytest.approx(metrics.ece(z, y, combine=combine), abs=1e-12)
    assert got["mce"] == pytest.approx(metrics.mce(z, y, combine=combine), abs=1e-12)
    assert got["classwise_ece"] == pytest.approx(metrics.classwise_ece(z, y, combine=combine), abs=1e-12)
    b, ref = acc.bins(), metrics.reliability_bins(z, y, combine=combine)
    np.testing.assert_array_equal(b.count, ref.count)
    np.testing.assert_allclose(b.accuracy, ref.accuracy)


def test_streaming_accumulator_errors():
    acc = metrics.CalibrationAccumulator()
    with pytest.raises(DataError, match="no samples"):
        acc.compute()
    z, y = make_logits(n=10)
    acc.update(z, y)
    with pytest.raises(DataError, match="classes"):
        acc.update(z[..., :3], y % 3)


# ----------------------------------------------------------------------------- selective prediction


def test_risk_coverage_on_a_known_ordering():
    # confidences strictly decreasing; errors at positions 2 and 4
    z = np.log(np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]]))
    y = np.array([0, 0, 1, 1])
    cov, risk = metrics.risk_coverage(z, y)
    np.testing.assert_allclose(cov, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0, 0, 1 / 3, 2 / 4])
    assert metrics.aurc(z, y) == pytest.approx(np.mean([0, 0, 1 / 3, 0.5]))
    assert metrics.accuracy_at_coverage(z, y, 0.5) == 1.0
    assert metrics.accuracy_at_coverage(z, y, 0.6) == pytest.approx(2 / 3)


def test_risk_coverage_ties_do_not_depend_on_input_order():
    rng = np.random.default_rng(6)
    z, y = make_logits(n=200)
    scores = rng.integers(0, 5, 200).astype(float)  # heavy ties
    perm = rng.permutation(200)
    _, r1 = metrics.risk_coverage(z, y, scores)
    _, r2 = metrics.risk_coverage(z[perm], y[perm], scores[perm])
    np.testing.assert_allclose(r1, r2, atol=1e-12)
    # one tie group: risk is the overall error rate at every coverage
    _, flat = metrics.risk_coverage(z, y, np.zeros(200))
    np.testing.assert_allclose(flat, 1 - metrics.accuracy(z, y))
    with pytest.raises(DataError, match="one value per sample"):
        metrics.aurc(z, y, scores[:10])
    with pytest.raises(ConfigError, match="coverage"):
        metrics.accuracy_at_coverage(z, y, 0)


def test_accuracy_at_coverage_matches_manual_top_k():
    z, y = make_logits(m=1)
    p = softmax(z[:, 0], -1)
    keep = np.argsort(-p.max(1))[: int(np.ceil(0.7 * len(y)))]
    assert metrics.accuracy_at_coverage(z, y, 0.7) == pytest.approx(np.mean(p[keep].argmax(1) == y[keep]))


# ----------------------------------------------------------------------------- uncertainty scores


def test_scores_match_their_definitions():
    z, _ = make_logits(n=50)
    p = softmax(z, -1)
    pbar = p.mean(1)
    np.testing.assert_allclose(metrics.msp(z), 1 - pbar.max(1))
    np.testing.assert_allclose(metrics.entropy(z), scipy_entropy(pbar, axis=1), rtol=1e-10)
    np.testing.assert_allclose(metrics.expected_entropy(z), scipy_entropy(p, axis=2).mean(1), rtol=1e-10)
    np.testing.assert_allclose(metrics.energy(z), -np.log(np.exp(z).sum(-1)).mean(1), rtol=1e-10)
    pred = pbar.argmax(1)
    np.testing.assert_allclose(metrics.disagreement(z), (z.argmax(-1) != pred[:, None]).mean(1))
    np.testing.assert_allclose(metrics.pred_var(z), p[np.arange(50), :, pred].var(1), rtol=1e-10)
    all_scores = metrics.uncertainty_scores(z)
    assert set(all_scores) == set(metrics.SCORES)
    np.testing.assert_array_equal(all_scores["mutual_info"], metrics.uncertainty(z, "mutual_info"))


def test_identical_members_have_no_epistemic_uncertainty():
    z, _ = make_logits(n=50, m=1)
    same = np.repeat(z, 3, axis=1)
    for f in (metrics.mutual_info, metrics.disagreement, metrics.pred_var):
        np.testing.assert_allclose(f(same), 0, atol=1e-12)
    assert metrics.diversity(same) == pytest.approx({"disagreement": 0.0, "kl": 0.0, "js": 0.0}, abs=1e-12)


@FAST
@given(seed=st.integers(0, 10_000), m=st.integers(1, 6), c=st.integers(2, 8), scale=st.floats(0.01, 30))
def test_entropy_decomposes_into_aleatoric_plus_epistemic(seed, m, c, scale):
    z = np.random.default_rng(seed).normal(size=(64, m, c)) * scale
    mi = metrics.mutual_info(z)
    assert np.all(mi >= 0)
    np.testing.assert_allclose(metrics.entropy(z), metrics.expected_entropy(z) + mi, atol=1e-9)
    assert np.all(metrics.entropy(z) <= np.log(c) + 1e-9)


# ----------------------------------------------------------------------------- OOD


def _ood_pairs():
    rng = np.random.default_rng(7)
    yield rng.normal(size=300), rng.normal(0.8, 1, size=37)  # unequal sizes: never truncated
    yield rng.integers(0, 4, 120).astype(float), rng.integers(1, 6, 80).astype(float)  # heavy ties
    yield np.zeros(10), np.zeros(15)  # all tied
    yield np.r_[np.ones(50)], np.r_[np.ones(5), np.full(45, 2.0)]


@pytest.mark.parametrize("pair", list(_ood_pairs()))
def test_ood_metrics_match_sklearn(pair):
    id_s, ood_s = pair
    y = np.r_[np.zeros(len(id_s)), np.ones(len(ood_s))]
    s = np.r_[id_s, ood_s]
    got = metrics.ood_metrics(id_s, ood_s)
    assert got["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert got["aupr_out"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert got["aupr_in"] == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, s)
    assert got["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)
    ours_fpr, ours_tpr, _ = metrics.roc_curve(id_s, ood_s)
    assert ours_fpr[0] == ours_tpr[0] == 0 and ours_fpr[-1] == ours_tpr[-1] == 1


def test_ood_metrics_on_separable_scores():
    got = metrics.ood_metrics(np.arange(100.0), np.arange(100.0, 130.0))
    assert got == pytest.approx({"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}, abs=1e-12)
    assert metrics.auroc(np.arange(100.0, 130.0), np.arange(100.0)) == 0.0


@FAST
@given(
    a=st.lists(st.integers(-5, 5), min_size=1, max_size=40),
    b=st.lists(st.integers(-5, 5), min_size=1, max_size=40),
)
def test_auroc_is_antisymmetric_under_swapping_sets(a, b):
    a, b = np.array(a, float), np.array(b, float)
    assert metrics.auroc(a, b) + metrics.auroc(b, a) == pytest.approx(1.0, abs=1e-12)


def test_ood_needs_both_sets_and_finite_scores():
    with pytest.raises(DataError, match="only one set"):
        metrics.auroc([], [0.1, 0.2])
    with pytest.raises(DataError, match="only one set"):
        metrics.ood_metrics([0.1, 0.2], np.array([]))
    with pytest.raises(DataError, match="NaN/inf"):
        metrics.aupr_in([0.1, np.nan], [0.3])
    with pytest.raises(ConfigError, match="tpr"):
        metrics.fpr_at_tpr([0.1], [0.2], tpr=0)


# ----------------------------------------------------------------------------- diversity


def test_pairwise_matrices():
    z, _ = make_logits(n=100, m=3)
    logp = log_softmax(z, -1)
    p = np.exp(logp)
    kl = metrics.pairwise_matrix(z, "kl")
    assert kl[0, 1] == pytest.approx(np.mean(scipy_entropy(p[:, 0], p[:, 1], axis=1)), rel=1e-10)
    assert np.all(np.diag(kl) == 0) and np.all(kl[~np.eye(3, dtype=bool)] > 0)
    js = metrics.pairwise_matrix(z, "js")
    np.testing.assert_allclose(js, js.T, atol=1e-12)
    assert js.max() <= np.log(2)
    mix = (p[:, 0] + p[:, 2]) / 2
    ref = np.mean(0.5 * scipy_entropy(p[:, 0], mix, axis=1) + 0.5 * scipy_entropy(p[:, 2], mix, axis=1))
    assert js[0, 2] == pytest.approx(ref, rel=1e-10)
    dis = metrics.pairwise_matrix(z, "disagreement")
    assert dis[1, 2] == pytest.approx(np.mean(z[:, 1].argmax(-1) != z[:, 2].argmax(-1)))
    d = metrics.diversity(z)
    assert d["js"] == pytest.approx(js[~np.eye(3, dtype=bool)].mean())
    assert metrics.diversity(z[:, :1]) == {"disagreement": 0.0, "kl": 0.0, "js": 0.0}
    with pytest.raises(ConfigError, match="kind"):
        metrics.pairwise_matrix(z, "cosine")


def _spectra():
    s0 = np.array([4.0, 2.0, 1.0, 0.5])
    sigma = np.tile(s0, (3, 1))
    sigma[1, 3] = 0.6  # member 1 moved direction 3 by +20 %
    sigma[2, 0] = 3.6  # member 2 moved direction 0 by −10 %
    return {"blocks.0.attn.qkv": (torch.tensor(sigma), torch.tensor(s0)), "head": (sigma[:, :2], s0[:2])}


def test_spectrum_diversity_on_a_constructed_spectrum():
    spectra = _spectra()
    div = metrics.spectrum_diversity(spectra, top_k=2)
    layer = div["blocks.0.attn.qkv"]
    norm0 = np.linalg.norm([4, 2, 1, 0.5])
    np.testing.assert_allclose(layer.deviation, [0, 0.1 / norm0, 0.4 / norm0])
    assert layer.relative[1, 3] == pytest.approx(0.2) and layer.relative[2, 0] == pytest.approx(-0.1)
    assert layer.top_directions.tolist() == [3, 0]
    assert layer.cv[1] == 0 and layer.cv[3] == pytest.approx(np.std([0.5, 0.6, 0.5]) / (1.6 / 3))
    assert layer.distances[1, 2] == pytest.approx(np.hypot(0.1, 0.4) / norm0)
    np.testing.assert_allclose(layer.distances, layer.distances.T)
    # all layers together: concatenated σ vectors
    both = np.r_[[4, 2, 1, 0.5], [4, 2]]
    assert metrics.spectrum_deviation(spectra)[2] == pytest.approx(np.sqrt(0.4**2 * 2) / np.linalg.norm(both))
    table = metrics.spectrum_table(spectra)
    assert list(table.index) == ["blocks.0.attn.qkv", "head"] and table.loc["head", "rank"] == 2


def test_spectrum_diversity_zero_pretrained_direction_and_errors():
    s0 = np.array([2.0, 0.0])
    div = metrics.spectrum_diversity({"l": (np.array([[2.2, 0.1], [1.8, 0.0]]), s0)})["l"]
    assert np.isnan(div.relative[:, 1]).all() and div.top_directions[0] == 0
    with pytest.raises(DataError, match=r"\(M, r\)"):
        metrics.spectrum_diversity({"l": (np.ones((2, 3)), np.ones(2))})
    with pytest.raises(DataError, match="empty"):
        metrics.spectrum_deviation({})
    with pytest.raises(DataError, match="not in spectra"):
        metrics.spectrum_distances(_spectra(), "blocks.9")
    with pytest.raises(DataError, match="pair"):
        metrics.spectrum_diversity({"l": np.ones(3)})


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_table():
    z, y = make_logits(m=3)
    ood, _ = make_logits(n=150, m=3, seed=9, scale=1.0)
    t = metrics.evaluate(torch.tensor(z), y, ood, members=True)
    assert list(t.index) == ["member_0", "member_1", "member_2", "ensemble"]
    ens = t.loc["ensemble"]
    assert ens["ece"] == pytest.approx(metrics.ece(z, y), rel=1e-12)
    assert ens["nll"] == pytest.approx(metrics.nll(z, y), rel=1e-12)
    assert ens["acc_at_90"] == pytest.approx(metrics.accuracy_at_coverage(z, y, 0.9), rel=1e-12)
    assert ens["auroc_entropy"] == metrics.auroc(metrics.entropy(z), metrics.entropy(ood))
    assert ens["fpr95_mutual_info"] == metrics.fpr_at_tpr(metrics.mutual_info(z), metrics.mutual_info(ood))
    assert t.loc["member_1", "brier"] == pytest.approx(metrics.brier(z[:, 1], y), rel=1e-12)
    logit = metrics.evaluate(z, y, combine="logit").loc["ensemble"]
    assert logit["nll"] == pytest.approx(metrics.nll(z, y, "logit"), rel=1e-12)
    assert logit["nll"] != pytest.approx(ens["nll"])
    assert np.isnan(t.loc["member_0", "auroc_mutual_info"]) and not np.isnan(t.loc["member_0", "auroc_msp"])
    member2 = metrics.auroc(metrics.energy(z[:, 2]), metrics.energy(ood[:, 2]))
    assert t.loc["member_2", "auroc_energy"] == member2
    assert metrics.member_table(z, y).shape[0] == 4
    plain = metrics.evaluate(z, y, scores="all")
    assert list(plain.index) == ["ensemble"] and "mean_pred_var" in plain and "auroc_msp" not in plain
    with pytest.raises(DataError, match="same"):
        metrics.evaluate(z, y, ood[:, :2])


def test_auroc_does_not_need_numpy_2(monkeypatch):
    """numpy < 2.0 has no ``np.trapezoid`` (the project allows numpy >= 1.26): auroc must not use it."""
    id_s, ood_s = next(_ood_pairs())
    expected = metrics.auroc(id_s, ood_s)
    monkeypatch.delattr(np, "trapezoid", raising=False)
    monkeypatch.delattr(np, "trapz", raising=False)  # deprecated in numpy 2.0, removed in 2.4
    assert metrics.auroc(id_s, ood_s) == pytest.approx(expected, abs=1e-12)
    y = np.r_[np.zeros(len(id_s)), np.ones(len(ood_s))]
    assert expected == pytest.approx(roc_auc_score(y, np.r_[id_s, ood_s]), abs=1e-12)
