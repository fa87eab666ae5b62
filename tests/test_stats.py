"""sve.stats: the paired t-interval against scipy, every verdict branch, sign conventions, the
equivalence check, alignment by seed, the claim table, the convergence rule, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from sve import stats
from sve.errors import ConfigError, DataError
from sve.stats import Claim, PairedDifference


def interval(low: float, high: float) -> PairedDifference:
    """A paired difference with a given interval (only low/high matter to a verdict)."""
    return PairedDifference(n=5, mean=(low + high) / 2, sd=1.0, low=low, high=high, confidence=0.95,
                            seeds=tuple(range(5)))


# ----------------------------------------------------------------------------- paired difference


@pytest.mark.parametrize("n", [2, 3, 5, 10])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_interval_matches_scipy(n, confidence):
    rng = np.random.default_rng(n)
    b = rng.normal(0.8, 0.05, n)
    a = b + rng.normal(0.01, 0.02, n)
    got = stats.paired_difference(a, b, confidence)
    ref = scipy_stats.ttest_rel(a, b).confidence_interval(confidence_level=confidence)
    assert (got.low, got.high) == pytest.approx((ref.low, ref.high), rel=1e-12, abs=1e-15)
    assert got.mean == pytest.approx(np.mean(a - b), rel=1e-12)
    assert got.sd == pytest.approx(np.std(a - b, ddof=1), rel=1e-12)
    t = scipy_stats.t.ppf((1 + confidence) / 2, n - 1)
    assert got.half_width == pytest.approx(t * got.sd / math.sqrt(n), rel=1e-12)
    assert got.n == n and got.confidence == confidence and got.seeds == tuple(range(n))


def test_pairs_are_aligned_by_seed():
    a = pd.Series([0.91, 0.85, 0.88, 0.90], index=[3, 1, 7, 5])
    b = pd.Series([0.80, 0.84, 0.86, 0.81], index=[5, 1, 3, 7])  # another order
    got = stats.paired_difference(a, b)
    in_order = stats.paired_difference(a.sort_index().to_numpy(), b.sort_index().to_numpy())
    assert (got.mean, got.low, got.high) == pytest.approx((in_order.mean, in_order.low, in_order.high))
    assert sorted(got.seeds) == [1, 3, 5, 7]
    as_dicts = stats.paired_difference(a.to_dict(), b.to_dict())
    assert (as_dicts.mean, as_dicts.low) == pytest.approx((got.mean, got.low))
    # pairing matters: the same values paired by position give the same mean but another spread
    assert stats.paired_difference(a.to_numpy(), b.to_numpy()).sd != pytest.approx(got.sd)


def test_paired_difference_bad_input():
    with pytest.raises(DataError, match="at least 2"):
        stats.paired_difference([0.9], [0.8])
    with pytest.raises(DataError, match=r"only in a \[2\], only in b \[4\]"):
        stats.paired_difference(pd.Series([1.0, 2, 3], index=[0, 1, 2]),
                                pd.Series([1.0, 2, 3], index=[0, 1, 4]))
    with pytest.raises(DataError, match=r"seed\(s\) \[1\] more than once"):
        stats.paired_difference(pd.Series([1.0, 2, 3], index=[0, 1, 1]), pd.Series([1.0, 2, 3]))
    with pytest.raises(DataError, match="NaN"):
        stats.paired_difference([0.9, np.nan, 0.8], [0.8, 0.7, 0.6])
    with pytest.raises(DataError, match="non-numeric"):
        stats.paired_difference(pd.Series(["a", "b"]), pd.Series([1.0, 2.0]))
    with pytest.raises(DataError, match="one of each"):
        stats.paired_difference(pd.Series([1.0, 2.0]), [1.0, 2.0])
    with pytest.raises(DataError, match="3 and 2 values"):
        stats.paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(DataError, match="1-D"):
        stats.paired_difference(np.ones((2, 2)), np.ones((2, 2)))
    for bad in (0, 1, 1.5, "0.95"):
        with pytest.raises(ConfigError, match="confidence"):
            stats.paired_difference([1.0, 2.0], [1.0, 1.0], confidence=bad)


# ----------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize("low, high, delta, verdict", [
    (0.5, 1.5, 0.0, "held"),
    (-1.5, -0.5, 0.0, "did not hold"),
    (-0.5, 0.5, 0.0, "inconclusive"),
    (0.0, 1.0, 0.0, "inconclusive"),  # an end point on δ: the interval contains δ
    (0.5, 1.5, 1.0, "inconclusive"),  # better, but not surely by δ = 1
    (0.5, 1.5, 2.0, "did not hold"),
    (-0.3, 0.2, -0.5, "held"),  # non-inferiority: at most 0.5 worse
])
def test_better_verdicts_when_higher_is_better(low, high, delta, verdict):
    assert stats.decide(interval(low, high), Claim("a", "b", "acc", "higher", delta)) == verdict


@pytest.mark.parametrize("low, high, verdict", [(-1.5, -0.5, "held"), (0.5, 1.5, "did not hold"),
                                                (-0.5, 0.5, "inconclusive")])
def test_lower_is_better_flips_the_sign(low, high, verdict):
    """d = a − b: a lower ECE for A is a negative difference, and that is A being better."""
    assert stats.decide(interval(low, high), Claim("a", "b", "ece", "lower")) == verdict
    flipped = {"held": "did not hold", "did not hold": "held", "inconclusive": "inconclusive"}[verdict]
    assert stats.decide(interval(low, high), Claim("a", "b", "ece", "higher")) == flipped
    # the threshold is on the gain: lower by at least 1.0 needs the whole interval below −1.0
    assert stats.decide(interval(-1.5, -0.5), Claim("a", "b", "ece", "lower", 1.0)) == "inconclusive"
    assert stats.decide(interval(-3.0, -1.5), Claim("a", "b", "ece", "lower", 1.0)) == "held"


@pytest.mark.parametrize("low, high, verdict", [
    (-0.3, 0.4, "held"),  # inside ±δ
    (0.6, 0.9, "did not hold"),  # wholly above +δ
    (-0.9, -0.6, "did not hold"),  # wholly below −δ
    (0.3, 0.7, "inconclusive"),  # straddles +δ
    (-0.7, -0.3, "inconclusive"),  # straddles −δ
    (-0.6, 0.6, "inconclusive"),  # too wide to tell
    (-0.5, 0.2, "inconclusive"),  # an end point on −δ
])
def test_close_is_an_equivalence_check(low, high, verdict):
    for direction in stats.DIRECTIONS:  # "close" has no direction
        assert stats.decide(interval(low, high), Claim("a", "b", "acc", direction, 0.5, "close")) == verdict


def test_not_converged_overrides_every_verdict():
    for low, high in ((0.5, 1.5), (-1.5, -0.5), (-0.5, 0.5)):
        for kind, delta in (("better", 0.0), ("close", 0.5)):
            claim = Claim("a", "b", "acc", threshold=delta, kind=kind)
            assert stats.decide(interval(low, high), claim, converged=False) == "not converged"
    assert set(stats.VERDICTS) == {"held", "did not hold", "inconclusive", "not converged"}


def test_claim_checks_its_fields():
    with pytest.raises(ConfigError, match="direction"):
        Claim("a", "b", "ece", "smaller")
    with pytest.raises(ConfigError, match="kind"):
        Claim("a", "b", "ece", kind="equal")
    with pytest.raises(ConfigError, match="threshold > 0"):
        Claim("a", "b", "acc", threshold=0.0, kind="close")
    with pytest.raises(ConfigError, match="finite"):
        Claim("a", "b", "acc", threshold=math.nan)
    assert Claim("sve", "single", "ece", "lower").label == "sve better than single on ece (lower is better)"
    assert "±0.01" in Claim("sve", "de", "acc", threshold=0.01, kind="close").label
    assert Claim("sve", "de", "acc", text="SVE matches DE").label == "SVE matches DE"


# ----------------------------------------------------------------------------- claim rows


def results_table(seeds=range(5)) -> pd.DataFrame:
    """A long results table: SVE's ECE is lower than single's on every seed (paired), by a margin much
    smaller than the seed-to-seed spread; two splits per run."""
    rng = np.random.default_rng(0)
    rows = []
    for s in seeds:
        base = rng.uniform(0.05, 0.15)  # the split's difficulty, shared by the methods of a seed
        for method, shift in (("sve", -0.01), ("single", 0.0), ("deep", -0.0101)):
            for split in ("test", "ood"):
                ece = base + shift + rng.normal(0, 0.001) + (0.2 if split == "ood" else 0)
                rows.append({"method": method, "seed": s, "split": split, "ece": ece,
                             "accuracy": 0.9 - base, "converged": True})
    return pd.DataFrame(rows)


def test_claim_row_decides_from_the_long_table():
    df = results_table()
    claim = Claim("sve", "single", "ece", "lower")
    row = stats.claim_row(df, claim, where={"split": "test"})
    assert list(row) == list(stats.ROW_COLUMNS)
    test = df[df.split == "test"]
    a, b = (test[test.method == m].set_index("seed")["ece"] for m in ("sve", "single"))
    diff = stats.paired_difference(a, b)
    assert (row["diff"], row["low"], row["high"]) == pytest.approx((diff.mean, diff.low, diff.high))
    assert row["n"] == 5 and row["claim"] == claim.label and (row["a"], row["b"]) == ("sve", "single")
    assert row["a_mean"] == pytest.approx(a.mean()) and row["b_mean"] == pytest.approx(b.mean())
    assert row["verdict"] == "held" and row["high"] < 0  # paired: held although the spread is larger
    assert a.std() > abs(row["diff"])
    reverse = stats.claim_row(df, Claim("sve", "single", "ece", "higher"), where={"split": "test"})
    assert reverse["verdict"] == "did not hold"
    close = Claim("sve", "deep", "ece", threshold=0.005, kind="close")
    assert stats.claim_row(df, close, where={"split": "test"})["verdict"] == "held"
    table = stats.claims_table(df, [claim, close], where={"split": "test"})
    assert list(table.columns) == list(stats.ROW_COLUMNS) and list(table.verdict) == ["held", "held"]


def test_claim_row_not_converged_still_shows_the_numbers():
    df = results_table()
    df.loc[(df.method == "single") & (df.seed == 2), "converged"] = False
    row = stats.claim_row(df, Claim("sve", "single", "ece", "lower"), where={"split": "test"})
    assert row["verdict"] == "not converged" and row["low"] < row["diff"] < row["high"] < 0
    assert (row["a_converged"], row["b_converged"]) == (5, 4)  # which side, how many runs
    unchecked = stats.claim_row(df, Claim("sve", "single", "ece", "lower"), where={"split": "test"},
                                converged=None)
    assert unchecked["verdict"] == "held" and unchecked["a_converged"] is None
    row = stats.claim_row(df, Claim("sve", "deep", "ece", "lower"), where={"split": "test"})
    assert row["verdict"] != "not converged"  # only the sides of the claim count


def test_one_seed_gives_a_difference_but_no_verdict():
    df = results_table(seeds=[3])
    row = stats.claim_row(df, Claim("sve", "single", "ece", "lower"), where={"split": "test"})
    test = df[df.split == "test"].set_index("method")["ece"]
    assert row["n"] == 1 and row["diff"] == pytest.approx(test["sve"] - test["single"])
    assert np.isnan(row["low"]) and np.isnan(row["high"]) and row["verdict"] == "inconclusive"
    df.loc[df.method == "single", "converged"] = False
    row = stats.claim_row(df, Claim("sve", "single", "ece", "lower"), where={"split": "test"})
    assert row["verdict"] == "not converged"


def test_claim_row_bad_input():
    df = results_table()
    claim = Claim("sve", "single", "ece", "lower")
    with pytest.raises(DataError, match=r"several rows per seed \(they differ in \['split'\]\).*where="):
        stats.claim_row(df, claim)
    with pytest.raises(DataError, match="'lora' has no rows.*methods: \\['deep', 'single', 'sve'\\]"):
        stats.claim_row(df, Claim("lora", "single", "ece"), where={"split": "test"})
    with pytest.raises(DataError, match=r"lack column\(s\) \['brier'\]"):
        stats.claim_row(df, Claim("sve", "single", "brier"), where={"split": "test"})
    with pytest.raises(DataError, match="sve.stats.converged"):
        stats.claim_row(df.drop(columns="converged"), claim, where={"split": "test"})
    with pytest.raises(DataError, match="where: column 'member'"):
        stats.claim_row(df, claim, where={"member": "ensemble"})
    with pytest.raises(DataError, match="True/False"):
        stats.claim_row(df.assign(converged=1), claim, where={"split": "test"})
    with pytest.raises(DataError, match=r"only in a \[4\]"):
        stats.claim_row(df[~((df.method == "single") & (df.seed == 4))], claim, where={"split": "test"})
    with pytest.raises(DataError, match="DataFrame"):
        stats.claim_row(df.to_dict("records"), claim)


# ----------------------------------------------------------------------------- convergence rule


def history(*nll: float) -> list[dict]:
    return [{"epoch": i, "val_nll": v, "val_acc": 0.5} for i, v in enumerate(nll)]


@pytest.mark.parametrize("nll, expected", [
    ((1.0, 0.8, 0.85), True),  # best before the last epoch
    ((1.0, 0.8, 0.8), True),  # a tie: reached before the last epoch
    ((1.0, 0.8, 0.799), True),  # the last epoch improved it by 0.125 % < 1 %
    ((1.0, 0.8, 0.76), False),  # by 5 %: still improving
    ((0.7,), False),  # one epoch: nothing to compare
    ((), False),
    ((1.0, 0.8, math.nan), False),  # diverged at the end
    ((math.nan, 0.8, 0.85), True),  # a non-finite earlier epoch is left out
    ((math.inf, 0.5), False),  # no finite earlier epoch
])
def test_convergence_rule(nll, expected):
    assert stats.converged(history(*nll)) is expected
    assert stats.converged(pd.DataFrame({"val_nll": list(nll)})) is expected


def test_convergence_tolerance_is_relative_and_strict():
    h = history(1.0, 0.75)  # the last epoch improved by exactly 25 %
    assert stats.last_epoch_gain(h) == 0.25
    assert not stats.converged(h, tol=0.25) and stats.converged(h, tol=0.2500001)
    assert stats.last_epoch_gain(history(2.0, 1.0, 2.5)) == -1.5  # got worse by 150 % of the best
    assert math.isnan(stats.last_epoch_gain(history(0.5)))
    assert stats.converged(history(1.0, 0.8, 0.799)) == (stats.CONVERGENCE_TOL > 0.00125)


def test_convergence_per_member():
    ok, still_improving = history(1.0, 0.8, 0.85), history(1.0, 0.8, 0.7)
    assert stats.converged([ok, ok]) and not stats.converged([ok, still_improving])
    assert stats.converged([pd.DataFrame(ok), pd.DataFrame(ok)])


def test_convergence_bad_input():
    with pytest.raises(DataError, match="val_nll.*fit with val="):
        stats.converged([{"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "train_loss": 0.9}])
    with pytest.raises(DataError, match="'val_nll' column"):
        stats.converged(pd.DataFrame({"train_loss": [1.0, 0.9]}))
    for bad in (-0.1, 1.0, "1%"):
        with pytest.raises(ConfigError, match="tol"):
            stats.converged(history(1.0, 0.9), tol=bad)
