"""Case-level bootstrap: intervals, paired comparisons and rank stability.

The frames of one recorded case are not independent (the same road, light and model errors run
through all of them), so the unit that is resampled is the case. Every metric is a ratio of sums
over cases (accuracy = correct points / points, bend = sum of bends / lane-frames ...): a resample
is a vector of case multiplicities w (multinomial, sum = number of cases) and the metric of a
resample is sum_c w_c s_c / sum_c w_c n_c. That is exactly the metric recomputed on the resampled
set of cases, and one matrix product for all resamples (B x C by C x K).

Intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13); a paired comparison applies
the same resamples to both checkpoints and looks at the interval of the difference.
"""
from __future__ import annotations

import warnings

import numpy as np

LEVEL = 0.95
N_BOOT = 2000
# Below this many cases no verdict is given: with n cases all pointing one way every resample agrees,
# and the chance of that under no difference is 2 * 0.5**n (0.25 at 3 cases, 0.03 at 6).
MIN_CASES_FOR_VERDICT = 6


def case_weights(n_cases: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """[B, C] case multiplicities of `n_boot` resamples of `n_cases` cases with replacement."""
    if n_cases < 1:
        return np.zeros((n_boot, 0))
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_cases, np.full(n_cases, 1.0 / n_cases), size=n_boot).astype(np.float64)


def ratio(sums: np.ndarray, counts: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """sum_c w_c s_c / sum_c w_c n_c over axis 0 of sums/counts [C, ...] for each row of weights [B, C]
    (no weights: the plain ratio over all cases). NaN where no case has a count (a missing value is
    never averaged as 0: a case with n_c = 0 adds nothing to either sum)."""
    s = np.asarray(sums, np.float64)
    n = np.asarray(counts, np.float64)
    if not np.isfinite(s[n > 0]).all():  # a sum over counted values is a number; anything else is a bug upstream
        raise ValueError("ratio: a non-finite sum where the count is above 0")
    s = np.where(n > 0, s, 0.0)
    if weights is None:
        num, den = s.sum(axis=0), n.sum(axis=0)
    else:
        shape = s.shape[1:]
        num = (weights @ s.reshape(len(s), -1)).reshape((len(weights),) + shape)
        den = (weights @ n.reshape(len(n), -1)).reshape((len(weights),) + shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, NaN resamples left out (all NaN: NaN)."""
    a = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(samples, 100 * a, axis=0), np.nanpercentile(samples, 100 * (1 - a), axis=0)


def verdict(diff_samples: np.ndarray, higher_is_better: bool, level: float = LEVEL) -> str:
    """'better', 'worse' or 'no evidence' from the bootstrap distribution of (candidate - baseline):
    better/worse only when the whole interval of the difference lies on one side of zero."""
    d = np.asarray(diff_samples, np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return "no evidence"
    lo, hi = interval(d, level)
    if lo > 0 or hi < 0:
        return "better" if (lo > 0) == higher_is_better else "worse"
    return "no evidence"


def first_place_share(score_samples: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """[K] share of resamples in which each of K candidates is first ([B, K] samples; ties split)."""
    s = np.asarray(score_samples, np.float64)
    s = s if higher_is_better else -s
    s = np.where(np.isfinite(s), s, -np.inf)
    best = s.max(axis=1, keepdims=True)
    top = (s == best) & np.isfinite(best)
    share = top / np.maximum(top.sum(axis=1, keepdims=True), 1)
    return share.mean(axis=0)
