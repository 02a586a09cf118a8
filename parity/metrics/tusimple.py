"""TuSimple accuracy / FP / FN, exactly as the official evaluator's LaneEval.bench scores one image.

Lanes are x[lane, row] at the GT's rows (h_samples). A lane slot is a lane when it has any finite
value (a lane listed in the TuSimple JSON); its points with x < 0 or NaN are missing, as the
official evaluator reads x < 0 (it writes -2). Missing points compare as -100 px (official
line_accuracy), so a point missing in both counts as a hit. The 20 px threshold is the official
one at 1280 px wide and scales with the image width (10 px at 640), so it means the same angle.
The official run-time rule (> 200 ms per image scores 0, 0, 1) is applied by `parity score` to
predictions that carry a run_time; a replay's own accuracy does not depend on the machine's speed.
"""
from __future__ import annotations

import numpy as np

TUSIMPLE_WIDTH = 1280.0  # the official evaluator's threshold is 20 px at 1280 px wide
TUSIMPLE_PIXEL_THRESH = 20.0
TUSIMPLE_POINT_THRESH = 0.85
TUSIMPLE_MAX_RUN_TIME_MS = 200.0


def pixel_threshold(image_width: float) -> float:
    return TUSIMPLE_PIXEL_THRESH * image_width / TUSIMPLE_WIDTH


def _lane_angle(xs: np.ndarray, ys: np.ndarray) -> float:
    """Angle of a least-squares fit x = k*y + c over the lane's present points (official get_angle)."""
    ok = np.isfinite(xs) & (xs >= 0)
    if ok.sum() > 1:
        k = np.polyfit(ys[ok], xs[ok], 1)[0]
        return float(np.arctan(k))
    return 0.0


def tusimple_frame(pred: np.ndarray, gt: np.ndarray, rows: np.ndarray, image_width: float) -> tuple[float, float, float]:
    """(accuracy, FP, FN) of one frame: the official per-image rules, a lane at a time."""
    gts = [g for g in gt if np.isfinite(g).any()]
    preds = [p for p in pred if np.isfinite(p).any()]
    if len(gts) + 2 < len(preds):
        return 0.0, 0.0, 1.0

    def filled(a):
        a = np.asarray(a, np.float64)
        return np.where(np.isfinite(a) & (a >= 0), a, -100.0)

    P = filled(preds) if preds else np.zeros((0, len(rows)))
    line_accs, fn, matched = [], 0.0, 0.0
    for g in gts:
        thresh = pixel_threshold(image_width) / np.cos(_lane_angle(g, rows))
        accs = (np.abs(P - filled(g)) < thresh).sum(axis=1) / len(g) if len(P) else np.zeros(0)
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


def tusimple_batch(pred: np.ndarray, gt: np.ndarray, rows: np.ndarray, image_width: float) -> np.ndarray:
    """[T, 3] (accuracy, FP, FN) for x[T, lanes, rows]: `tusimple_frame` vectorised over frames."""
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    g_lane = np.isfinite(gt).any(axis=2)  # [T, Lg]: listed lanes
    p_lane = np.isfinite(pred).any(axis=2)  # [T, Lp]
    with np.errstate(invalid="ignore"):
        g_ok = np.isfinite(gt) & (gt >= 0)  # present points
        p_ok = np.isfinite(pred) & (pred >= 0)
    n_g, n_p = g_lane.sum(axis=1), p_lane.sum(axis=1)
    # Angle of the least-squares line x = k*y + c through each GT lane's present points.
    y = np.broadcast_to(rows, gt.shape)
    w = g_ok.astype(np.float64)
    n = w.sum(axis=2)
    gx = np.where(g_ok, gt, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        my = (w * y).sum(axis=2) / n
        mx = gx.sum(axis=2) / n
        cov = (w * (y - my[..., None]) * (gx - mx[..., None])).sum(axis=2)
        var = (w * (y - my[..., None]) ** 2).sum(axis=2)
        k = np.where((n > 1) & (var > 0), cov / var, 0.0)
    thresh = pixel_threshold(image_width) / np.cos(np.arctan(k))  # [T, Lg]
    G = np.where(g_ok, gt, -100.0)[:, None]  # [T, 1, Lg, R]
    P = np.where(p_ok, pred, -100.0)[:, :, None]  # [T, Lp, 1, R]
    R = gt.shape[2]
    acc = (np.abs(P - G) < thresh[:, None, :, None]).sum(axis=3) / R  # [T, Lp, Lg]
    acc = np.where(p_lane[:, :, None], acc, -np.inf)
    best = np.where(n_p[:, None] > 0, acc.max(axis=1, initial=-np.inf), 0.0)  # [T, Lg]
    best = np.where(g_lane, best, np.nan)
    matched = np.nansum(best >= TUSIMPLE_POINT_THRESH, axis=1)
    fn = n_g - matched
    fn = np.where((n_g > 4) & (fn > 0), fn - 1, fn)
    s = np.nansum(best, axis=1)
    s = np.where(n_g > 4, s - np.nanmin(np.where(g_lane, best, np.inf), axis=1), s)
    denom = np.maximum(np.minimum(4.0, n_g), 1.0)
    out = np.stack([s / denom, np.where(n_p > 0, (n_p - matched) / np.maximum(n_p, 1), 0.0), fn / denom], axis=1)
    out[n_g + 2 < n_p] = (0.0, 0.0, 1.0)
    return out
