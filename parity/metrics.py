"""Lane metrics on arrays x[frame, lane, row] in source pixels (NaN = absent).

Definitions are written down in docs/metrics.md. This module holds the functions; replay and
later the ranker and gate only call them.
"""
from __future__ import annotations

import numpy as np

TUSIMPLE_WIDTH = 1280.0  # the official evaluator's threshold is 20 px at 1280 px wide
TUSIMPLE_PIXEL_THRESH = 20.0
TUSIMPLE_POINT_THRESH = 0.85


def _lane_angle(xs: np.ndarray, ys: np.ndarray) -> float:
    """Angle of a least-squares fit x = k*y + c over the lane's valid points (official get_angle)."""
    ok = np.isfinite(xs)
    if ok.sum() > 1:
        k = np.polyfit(ys[ok], xs[ok], 1)[0]
        return float(np.arctan(k))
    return 0.0


def tusimple_frame(pred: np.ndarray, gt: np.ndarray, rows: np.ndarray, image_width: float) -> tuple[float, float, float]:
    """(accuracy, FP, FN) of one frame exactly as TuSimple's LaneEval.bench computes them.

    pred, gt: x[lane, row]; lanes with no valid point are not lanes (they would not be listed in
    the TuSimple JSON). Missing points compare as -100 px, as in the official line_accuracy, so a
    point absent in both counts as correct. The 20 px threshold scales with image width.
    """
    gts = [g for g in gt if np.isfinite(g).any()]
    preds = [p for p in pred if np.isfinite(p).any()]
    if len(gts) + 2 < len(preds):
        return 0.0, 0.0, 1.0
    thresh0 = TUSIMPLE_PIXEL_THRESH * image_width / TUSIMPLE_WIDTH
    line_accs, fn, matched = [], 0.0, 0.0
    P = np.where(np.isfinite(np.asarray(preds)), np.asarray(preds), -100.0) if preds else np.zeros((0, len(rows)))
    for g in gts:
        thresh = thresh0 / np.cos(_lane_angle(g, rows))
        gg = np.where(np.isfinite(g), g, -100.0)
        accs = (np.abs(P - gg) < thresh).sum(axis=1) / len(gg) if len(P) else np.zeros(0)
        best = float(accs.max()) if accs.size else 0.0
        if best < TUSIMPLE_POINT_THRESH:
            fn += 1
        else:
            matched += 1
        line_accs.append(best)
    fp = len(preds) - matched
    if len(gts) > 4 and fn > 0:
        fn -= 1
    s = sum(line_accs)
    if len(gts) > 4:
        s -= min(line_accs)
    denom = max(min(4.0, len(gts)), 1.0)
    return s / denom, (fp / len(preds) if preds else 0.0), fn / denom


def tusimple(pred: np.ndarray, gt: np.ndarray, rows: np.ndarray, image_width: float) -> np.ndarray:
    """Per-frame [T, 3] (accuracy, FP, FN) for x[T, lane, row] arrays."""
    return np.array([tusimple_frame(p, g, rows, image_width) for p, g in zip(pred, gt)], dtype=np.float64).reshape(-1, 3)


def lateral_difference(x: np.ndarray, ref: np.ndarray) -> dict:
    """Point-wise |x - ref| where both exist, plus how often existence disagrees."""
    both = np.isfinite(x) & np.isfinite(ref)
    d = np.abs(x[both] - ref[both]).astype(np.float64)
    exist = np.isfinite(x) != np.isfinite(ref)
    return {
        "points": int(d.size),
        "mean_px": float(d.mean()) if d.size else float("nan"),
        "p99_px": float(np.percentile(d, 99)) if d.size else float("nan"),
        "max_px": float(d.max()) if d.size else float("nan"),
        "existence_disagreement": float(exist.mean()) if exist.size else float("nan"),
    }


def resample_rows(x: np.ndarray, rows_from: np.ndarray, rows_to: np.ndarray) -> np.ndarray:
    """Linearly interpolate x[..., rows_from] onto rows_to; NaN where either neighbour is absent."""
    if np.array_equal(rows_from, rows_to):
        return x
    idx = np.clip(np.searchsorted(rows_from, rows_to) - 1, 0, len(rows_from) - 2)
    r0, r1 = rows_from[idx], rows_from[idx + 1]
    w = (rows_to - r0) / (r1 - r0)
    out = x[..., idx] * (1 - w) + x[..., idx + 1] * w
    outside = (rows_to < rows_from[0]) | (rows_to > rows_from[-1])
    out[..., outside] = np.nan
    return out.astype(x.dtype)
