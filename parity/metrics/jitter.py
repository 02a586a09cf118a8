"""Jitter: the left-right swing of a lane over time, on the residual to a reference."""
from __future__ import annotations

import warnings

import numpy as np

LOOKAHEAD = {"near": 1.0, "mid": 0.55, "far": 0.2}  # position in the anchor-row index range (1 = bottom row)
OSC_THRESHOLD_PX = 0.05  # |residual change| per frame period below this is not a swing


def lookahead_rows(n_rows: int) -> dict[str, int]:
    return {k: int(round(f * (n_rows - 1))) for k, f in LOOKAHEAD.items()}


def jitter(x: np.ndarray, ref: np.ndarray, t: np.ndarray, threshold: float = OSC_THRESHOLD_PX) -> dict:
    """Left-right swing of x[T, L, K] (K look-ahead rows) against ref over timestamps t[T].

    e_t = x_t - ref_t; its change per nominal frame period de_t = (e_t - e_prev) * dt_nom / (t - t_prev)
    (timestamps, not indices: a dropped frame is not a jump). Per lane and row ([L, K]):
    `rms` of de, `p95` of |de|, `amplitude` = sqrt(2) * std(e) (a sinusoid's amplitude),
    `oscillation_hz` = sign changes of de (|de| > threshold) / (2 * the time covered by frame pairs
    where both frames have the lane), `flicker_hz` = existence changes the reference does not make,
    per second of the sequence.

    An absent value is no value: a lane and row with no pair of consecutive present frames has NaN
    rms/p95/oscillation (never 0), and a lane that exists in neither x nor ref has NaN flicker, so
    averages over lanes only count lanes that were there.
    """
    t = np.asarray(t, np.float64)
    e = x - ref
    ok = np.isfinite(e)
    dt = np.diff(t)
    dt_nom = np.median(dt) if dt.size else 1.0
    pair = ok[1:] & ok[:-1]
    de = np.where(pair, (e[1:] - e[:-1]) * (dt_nom / dt)[:, None, None], np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rms = np.sqrt(np.nanmean(de * de, axis=0))
        p95 = np.nanpercentile(np.abs(de), 95, axis=0) if de.size else np.full(x.shape[1:], np.nan)
        amplitude = np.sqrt(2) * np.nanstd(e, axis=0)
    # Oscillation: sign changes between successive significant steps, per second of observed pairs.
    sig = np.isfinite(de) & (np.abs(np.nan_to_num(de)) > threshold)
    sign = np.sign(np.nan_to_num(de))
    idx = np.where(sig, np.arange(len(de))[:, None, None], -1)
    last = np.maximum.accumulate(idx, axis=0)
    prev = np.concatenate([np.full((1, *de.shape[1:]), -1), last[:-1]], axis=0) if len(de) else last
    prev_sign = np.take_along_axis(sign, np.clip(prev, 0, None), axis=0)
    changes = (sig & (prev >= 0) & (sign != prev_sign)).sum(axis=0)
    observed = (pair * dt[:, None, None]).sum(axis=0) if len(dt) else np.zeros(x.shape[1:])
    ex, exr = np.isfinite(x), np.isfinite(ref)
    flicker = ((ex[1:] != ex[:-1]) & (exr[1:] == exr[:-1])).sum(axis=0)
    duration = max(t[-1] - t[0], dt_nom) if t.size > 1 else np.nan
    ever = (ex | exr).any(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        oscillation = np.where(observed > 0, changes / (2 * observed), np.nan)
    return {
        "rms": rms, "p95": p95, "amplitude": amplitude,
        "oscillation_hz": oscillation, "flicker_hz": np.where(ever, flicker / duration, np.nan),
    }
