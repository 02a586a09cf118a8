"""parity.decisions.bootstrap: the case-level bootstrap behind `parity rank`.

The statistical tests simulate data whose true mean is known and count how often the 95% percentile
interval covers it. All seeds are fixed, so every number here is deterministic; the bands the
coverages are checked against are derived in the comments from the binomial error of the number of
repetitions and the known small-sample behaviour of the percentile bootstrap, not tuned to the seeds.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from parity.decisions import bootstrap as B

# ---------------------------------------------------------------------------------------------------
# 1. Coverage of the case-level percentile interval of a ratio of sums
# ---------------------------------------------------------------------------------------------------

COV_REPS, COV_CASES, COV_BOOT = 400, 30, 1000
COUNT_LO, COUNT_HI = 5, 60  # frames per case, uniform integers
SLOPE = 0.03  # the case effect's mean grows with the case's frame count (see below)
_N_MEAN = (COUNT_LO + COUNT_HI) / 2  # 32.5
_N_VAR = ((COUNT_HI - COUNT_LO + 1) ** 2 - 1) / 12  # 261.25, discrete uniform
# Frame value = 1 + SLOPE * (n_c - E n) + u_c + e_cf, u_c ~ N(0, 1) per case, e_cf ~ N(0, 1) per frame.
# The metric is frames-weighted (sum of values / number of frames), so its population value is
# E[sum_c] / E[n_c] = E[n (1 + SLOPE (n - E n))] / E n = 1 + SLOPE Var(n) / E n = 1.2412, while the
# unweighted mean of the case means is 1.0. A non-zero truth that differs from the case-average makes
# the check sensitive to the scale of the ratio and to its weighting by counts, not only to its width.
COV_TRUE = 1.0 + SLOPE * _N_VAR / _N_MEAN


def _clustered_cases(rng: np.random.Generator, n_cases: int) -> tuple[np.ndarray, np.ndarray]:
    counts = rng.integers(COUNT_LO, COUNT_HI + 1, n_cases)
    effect = 1.0 + SLOPE * (counts - _N_MEAN) + rng.normal(0.0, 1.0, n_cases)
    sums = np.array([(m + rng.normal(0.0, 1.0, n)).sum() for m, n in zip(effect, counts)])
    return sums, counts


@pytest.fixture(scope="module")
def coverage_run() -> dict:
    rng = np.random.default_rng(20240611)
    lo_miss = hi_miss = hits = 0
    unweighted_hits = 0
    for r in range(COV_REPS):
        sums, counts = _clustered_cases(rng, COV_CASES)
        w = B.case_weights(COV_CASES, COV_BOOT, seed=r)
        lo, hi = B.interval(B.ratio(sums, counts, w))
        hits += bool(lo <= COV_TRUE <= hi)
        lo_miss += bool(lo > COV_TRUE)
        hi_miss += bool(hi < COV_TRUE)
        # The same bootstrap on the wrong estimator (mean of case means, every case weighted 1):
        ulo, uhi = B.interval(B.ratio(sums / counts, np.ones(COV_CASES), w))
        unweighted_hits += bool(ulo <= COV_TRUE <= uhi)
    return {"coverage": hits / COV_REPS, "lo_miss": lo_miss, "hi_miss": hi_miss,
            "unweighted_coverage": unweighted_hits / COV_REPS}


def test_case_bootstrap_interval_covers_true_mean_at_nominal_rate(coverage_run):
    cov = coverage_run["coverage"]
    print(f"\ncase-bootstrap coverage over {COV_REPS} reps, {COV_CASES} cases: {cov:.4f} "
          f"(misses: interval above truth {coverage_run['lo_miss']}, below {coverage_run['hi_miss']}); "
          f"mean-of-case-means estimator: {coverage_run['unweighted_coverage']:.4f}")
    # Band. With R = 400 repetitions the estimated coverage has binomial sd sqrt(p (1 - p) / R):
    # 0.0109 at p = 0.95. The percentile interval of a mean of C = 30 clusters under-covers: it is
    # about mean +/- 1.96 sd_hat sqrt((C - 1) / C), i.e. a t-interval with the wrong quantile,
    # P(|t_29| < 1.96 sqrt(29/30)) = 0.936, a little less again for a ratio with unequal cluster
    # sizes (a 4000-repetition run of this design gave 0.921). Lower limit 0.88: 3 sd (sd 0.0135 at
    # p = 0.921) below the expected 0.921, 6.3 sd below nominal. Upper limit 0.99: 3.7 sd above
    # nominal; an interval too wide by ~30% or more would cover ~0.99 and fail.
    assert 0.88 <= cov <= 0.99, cov
    # A too-narrow interval drifting to one side would show as one-sided misses; both sides miss.
    assert coverage_run["lo_miss"] > 0 and coverage_run["hi_miss"] > 0


def test_coverage_check_detects_wrong_weighting(coverage_run):
    """The coverage check above has power: the mean of case means (counts ignored) targets 1.0, not
    the frames-weighted 1.24, and its coverage of 1.24 falls well outside the band (~0.75)."""
    assert coverage_run["unweighted_coverage"] < 0.85, coverage_run["unweighted_coverage"]


# ---------------------------------------------------------------------------------------------------
# 2. Resampling cases, not frames, when frames within a case are correlated
# ---------------------------------------------------------------------------------------------------

CL_REPS, CL_CASES, CL_FRAMES, CL_BOOT = 400, 10, 100, 500
CL_TRUE = 0.5  # every frame = 0.5 + case effect N(0, 1) + frame noise N(0, 0.1^2)


def _correlated_frames(rng: np.random.Generator) -> np.ndarray:
    return CL_TRUE + rng.normal(0.0, 1.0, (CL_CASES, 1)) + rng.normal(0.0, 0.1, (CL_CASES, CL_FRAMES))


def _frame_bootstrap(frames: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Naive bootstrap: the 1000 frames resampled as if they were independent."""
    flat = frames.ravel()
    return flat[rng.integers(0, flat.size, (n_boot, flat.size))].mean(axis=1)


def _case_bootstrap(frames: np.ndarray, seed: int, n_boot: int) -> np.ndarray:
    counts = np.full(len(frames), frames.shape[1])
    return B.ratio(frames.sum(axis=1), counts, B.case_weights(len(frames), n_boot, seed=seed))


@pytest.fixture(scope="module")
def clustered_run() -> dict:
    rng = np.random.default_rng(777)
    case_hits = frame_hits = 0
    width_ratio = []
    for r in range(CL_REPS):
        frames = _correlated_frames(rng)
        clo, chi = B.interval(_case_bootstrap(frames, r, CL_BOOT))
        flo, fhi = B.interval(_frame_bootstrap(frames, rng, CL_BOOT))
        case_hits += bool(clo <= CL_TRUE <= chi)
        frame_hits += bool(flo <= CL_TRUE <= fhi)
        width_ratio.append((chi - clo) / (fhi - flo))
    return {"case": case_hits / CL_REPS, "frame": frame_hits / CL_REPS, "width_ratio": np.array(width_ratio)}


def test_frame_bootstrap_interval_is_much_narrower_than_case_bootstrap():
    # Expected ratio: the mean's true sd is sqrt(1/10 + 0.01/1000) = 0.316, the iid-frame sd is
    # sqrt((1 + 0.01) / 1000) = 0.032, so the case-level interval is ~10x (x sqrt(9/10)) as wide.
    rng = np.random.default_rng(31)
    frames = _correlated_frames(rng)
    clo, chi = B.interval(_case_bootstrap(frames, 0, 2000))
    flo, fhi = B.interval(_frame_bootstrap(frames, rng, 2000))
    assert (chi - clo) > 4 * (fhi - flo), ((clo, chi), (flo, fhi))
    # Both are centred on the same estimate: the difference is the width, not the location.
    mean = frames.mean()
    assert clo < mean < chi and flo < mean < fhi


def test_case_bootstrap_keeps_coverage_where_frame_bootstrap_loses_it(clustered_run):
    print(f"\n{CL_CASES} cases x {CL_FRAMES} correlated frames, {CL_REPS} reps: coverage case-level "
          f"{clustered_run['case']:.4f}, frame-level {clustered_run['frame']:.4f}; width ratio "
          f"median {np.median(clustered_run['width_ratio']):.2f}, min {clustered_run['width_ratio'].min():.2f}")
    # Frame level: interval +/- 1.96 x 0.032 around an estimate with sd 0.316 covers with probability
    # P(|Z| < 1.96 x 0.032 / 0.316) = P(|Z| < 0.20) = 0.16; the limit 0.6 is ~30 sd (sd 0.0184) above.
    assert clustered_run["frame"] < 0.6, clustered_run["frame"]
    # Case level with only 10 cases: P(|t_9| < 1.96 sqrt(9/10)) = 0.905 (a 4000-repetition run of this
    # design gave 0.901); with 400 reps the sd is 0.015, so 0.85 is ~3.4 sd below the expected value.
    assert clustered_run["case"] > 0.85, clustered_run["case"]
    assert np.all(clustered_run["width_ratio"] > 4), clustered_run["width_ratio"].min()


# ---------------------------------------------------------------------------------------------------
# 3. ratio
# ---------------------------------------------------------------------------------------------------


def test_ratio_identity_weights_is_plain_ratio_of_sums():
    rng = np.random.default_rng(1)
    sums, counts = rng.normal(size=7) * 10, rng.integers(1, 20, 7)
    expected = sums.sum() / counts.sum()
    one = B.ratio(sums, counts, np.ones((1, 7)))
    assert one.shape == (1,)
    assert one[0] == pytest.approx(expected, rel=1e-12)
    assert B.ratio(sums, counts) == pytest.approx(expected, rel=1e-12)
    # Not the mean of the per-case ratios (which would differ for unequal counts).
    assert not math.isclose(expected, np.mean(sums / counts), rel_tol=1e-6)


def test_ratio_of_a_resample_equals_ratio_on_explicitly_resampled_cases():
    rng = np.random.default_rng(2)
    C = 9
    sums, counts = rng.normal(size=C), rng.integers(1, 30, C)
    w = B.case_weights(C, 50, seed=3)
    got = B.ratio(sums, counts, w)
    for b in range(len(w)):
        idx = np.repeat(np.arange(C), w[b].astype(int))  # the resampled list of cases
        assert len(idx) == C
        assert got[b] == pytest.approx(sums[idx].sum() / counts[idx].sum(), rel=1e-12)


def test_ratio_ignores_cases_with_zero_count_even_nan_sums():
    sums = np.array([3.0, np.nan, 5.0, np.inf, 1.0])
    counts = np.array([2, 0, 4, 0, 1])
    keep = counts > 0
    expected = sums[keep].sum() / counts[keep].sum()  # 9 / 7
    assert B.ratio(sums, counts) == pytest.approx(expected)
    w = np.array([[1, 1, 1, 1, 1], [0, 5, 0, 0, 0], [1, 3, 0, 0, 1], [0, 0, 2, 3, 0]], float)
    got = B.ratio(sums, counts, w)
    assert got[0] == pytest.approx(expected)
    assert np.isnan(got[1])  # only the count-0 case drawn: absent, not 0
    assert got[2] == pytest.approx((3.0 + 1.0) / 3)
    assert got[3] == pytest.approx(10.0 / 8)
    assert np.isfinite(got[[0, 2, 3]]).all()


def test_ratio_all_zero_counts_is_nan_not_zero():
    sums = np.array([0.0, 2.0, np.nan])
    counts = np.zeros(3)
    assert np.isnan(B.ratio(sums, counts))
    got = B.ratio(sums, counts, B.case_weights(3, 20, seed=0))
    assert got.shape == (20,) and np.isnan(got).all()


def test_ratio_with_trailing_dimensions():
    rng = np.random.default_rng(4)
    C, K, M = 6, 3, 2
    sums = rng.normal(size=(C, K, M))
    counts = rng.integers(0, 5, (C, K, M)).astype(float)
    counts[:, 1, 0] = 0  # one column absent in every case
    sums[counts == 0] = np.nan
    w = B.case_weights(C, 40, seed=5)
    got = B.ratio(sums, counts, w)
    assert got.shape == (40, K, M)
    for k in range(K):
        for m in range(M):
            col = B.ratio(sums[:, k, m], counts[:, k, m], w)
            np.testing.assert_allclose(got[:, k, m], col, rtol=1e-12, equal_nan=True)
    assert np.isnan(got[:, 1, 0]).all()
    s2, n2 = sums[:, :, 0], counts[:, :, 0]  # [C, K]
    got2 = B.ratio(s2, n2, w)
    assert got2.shape == (40, K)
    np.testing.assert_allclose(got2, got[:, :, 0], rtol=1e-12, equal_nan=True)
    point = B.ratio(s2, n2)
    assert point.shape == (K,)
    np.testing.assert_allclose(point, B.ratio(s2, n2, np.ones((1, C)))[0], rtol=1e-12, equal_nan=True)
    with np.errstate(invalid="ignore"):
        manual = np.nansum(np.where(n2 > 0, s2, 0), 0) / n2.sum(0)
    np.testing.assert_allclose(point, np.where(n2.sum(0) > 0, manual, np.nan), rtol=1e-12, equal_nan=True)


# ---------------------------------------------------------------------------------------------------
# 4. verdict
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_verdict_identical_candidate_is_no_evidence(higher_is_better):
    assert B.verdict(np.zeros(2000), higher_is_better) == "no evidence"
    # Near-identical: tiny symmetric noise around zero.
    d = np.random.default_rng(6).normal(0.0, 1e-9, 2000)
    assert B.verdict(d, higher_is_better) == "no evidence"
    assert B.verdict(np.concatenate([d, -d]), higher_is_better) == "no evidence"


def test_verdict_clear_difference_and_direction():
    up = np.random.default_rng(7).normal(1.0, 0.1, 2000)  # candidate - baseline clearly > 0
    assert B.verdict(up, higher_is_better=True) == "better"
    assert B.verdict(up, higher_is_better=False) == "worse"
    assert B.verdict(-up, higher_is_better=True) == "worse"
    assert B.verdict(-up, higher_is_better=False) == "better"


def test_verdict_uses_the_whole_interval_and_its_level():
    # Mean 0.1, sd 0.05: the 95% interval is ~[0.002, 0.198] (> 0), the 99% one ~[-0.029, 0.229].
    d = np.random.default_rng(8).normal(0.1, 0.05, 200_000)
    assert B.verdict(d, True) == "better"
    assert B.verdict(d, True, level=0.99) == "no evidence"
    # Most of the mass above zero but the lower 2.5% below: not enough.
    d2 = np.random.default_rng(9).normal(0.1, 0.1, 200_000)  # P(d < 0) = 16%
    assert B.verdict(d2, True) == "no evidence"


def test_verdict_ignores_nan_samples():
    rng = np.random.default_rng(10)
    d = rng.normal(1.0, 0.1, 2000)
    d[rng.random(2000) < 0.3] = np.nan  # 30% NaN: read as 0 they would pull the 2.5% point to 0
    assert B.verdict(d, True) == "better"
    assert B.verdict(d, False) == "worse"
    assert B.verdict(np.full(100, np.nan), True) == "no evidence"
    assert B.verdict(np.array([]), True) == "no evidence"


# ---------------------------------------------------------------------------------------------------
# 5. first_place_share
# ---------------------------------------------------------------------------------------------------


def test_first_place_shares_sum_to_one():
    s = np.random.default_rng(11).normal(size=(1000, 4))
    for hib in (True, False):
        share = B.first_place_share(s, hib)
        assert share.shape == (4,)
        assert share.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(share, np.bincount((s if hib else -s).argmax(1), minlength=4) / 1000)


def test_first_place_dominating_candidate_and_direction():
    rng = np.random.default_rng(12)
    s = rng.normal(size=(500, 3))
    s[:, 2] += 100.0  # candidate 2 is always highest
    np.testing.assert_array_equal(B.first_place_share(s, True), [0.0, 0.0, 1.0])
    s[:, 0] -= 100.0  # candidate 0 is always lowest
    np.testing.assert_array_equal(B.first_place_share(s, False), [1.0, 0.0, 0.0])


def test_first_place_ties_split():
    s = np.array([[1.0, 1.0, 0.0],   # tie 0/1
                  [2.0, 2.0, 2.0],   # three-way tie
                  [0.0, 5.0, 1.0],   # 1 wins
                  [3.0, 1.0, 3.0]])  # tie 0/2
    share = B.first_place_share(s, True)
    np.testing.assert_allclose(share, [(0.5 + 1 / 3 + 0.5) / 4, (0.5 + 1 / 3 + 1) / 4, (1 / 3 + 0.5) / 4])
    assert share.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(B.first_place_share(np.ones((10, 4)), True), [0.25] * 4)
    np.testing.assert_allclose(B.first_place_share(np.ones((10, 4)), False), [0.25] * 4)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_first_place_nan_candidate_is_never_first(higher_is_better):
    rng = np.random.default_rng(13)
    s = rng.normal(size=(400, 3))
    nan_rows = rng.random(400) < 0.5
    s[nan_rows, 1] = np.nan
    best = 1e6 if higher_is_better else -1e6
    s[~nan_rows, 1] = best  # where candidate 1 has a value it wins outright
    share = B.first_place_share(s, higher_is_better)
    assert share[1] == pytest.approx((~nan_rows).mean())
    assert share.sum() == pytest.approx(1.0)
    s[:, 1] = np.nan  # never has a value: never first
    share = B.first_place_share(s, higher_is_better)
    assert share[1] == 0.0
    assert share.sum() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------
# 6. case_weights
# ---------------------------------------------------------------------------------------------------


def test_case_weights_shape_sums_and_determinism():
    w = B.case_weights(17, 300, seed=42)
    assert w.shape == (300, 17)
    assert np.all(w >= 0) and np.all(w == np.round(w))
    np.testing.assert_array_equal(w.sum(axis=1), np.full(300, 17))
    np.testing.assert_array_equal(w, B.case_weights(17, 300, seed=42))
    assert not np.array_equal(w, B.case_weights(17, 300, seed=43))
    assert B.case_weights(5, 10, seed=0).shape == (10, 5)
    assert B.case_weights(1, 4, seed=0).tolist() == [[1.0]] * 4
    assert B.case_weights(0, 8, seed=0).shape == (8, 0)


def test_case_weights_are_uniform_resampling_with_replacement():
    C, n = 8, 40_000
    w = B.case_weights(C, n, seed=1)
    # Multinomial(C, 1/C): each multiplicity has mean 1 and variance 1 - 1/C; cases drawn evenly.
    np.testing.assert_allclose(w.mean(axis=0), 1.0, atol=0.03)  # sd of each mean 0.0047
    np.testing.assert_allclose(w.var(axis=0), 1 - 1 / C, atol=0.05)
    # With replacement: some resamples repeat a case; P(all distinct) = C! / C^C = 0.0024.
    assert (w.max(axis=1) > 1).mean() > 0.99


def test_ratio_refuses_a_non_finite_sum_that_is_counted():
    """A NaN sum with a positive count would be averaged as 0 by a nan_to_num: it is refused instead."""
    with pytest.raises(ValueError, match="non-finite sum"):
        B.ratio(np.array([1.0, np.nan]), np.array([2, 3]))
