"""TuSimple accuracy / FP / FN, exactly as the official evaluator's LaneEval.bench scores one image."""
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


def tusimple_batch(pred: np.ndarray, gt: np.ndarray, rows: np.ndarray, image_width: float) -> np.ndarray:
    """[T, 3] (accuracy, FP, FN) for x[T, lanes, rows]: `tusimple_frame` vectorised over frames.

    Lanes are the lane slots with at least one valid point; empty slots are ignored like lanes
    missing from the TuSimple JSON.
    """
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    T, Lg, R = gt.shape
    g_ok = np.isfinite(gt)
    p_ok = np.isfinite(pred)
    g_lane = g_ok.any(axis=2)  # [T, Lg]
    p_lane = p_ok.any(axis=2)  # [T, Lp]
    n_g, n_p = g_lane.sum(axis=1), p_lane.sum(axis=1)
    # Angle of the least-squares line x = k*y + c through each GT lane's valid points.
    y = np.broadcast_to(rows, gt.shape)
    w = g_ok.astype(np.float64)
    n = w.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        my = (w * y).sum(axis=2) / n
        mx = np.where(g_ok, gt, 0).sum(axis=2) / n
        cov = (w * (y - my[..., None]) * (np.where(g_ok, gt, 0) - mx[..., None])).sum(axis=2)
        var = (w * (y - my[..., None]) ** 2).sum(axis=2)
        k = np.where((n > 1) & (var > 0), cov / var, 0.0)
    thresh = TUSIMPLE_PIXEL_THRESH * image_width / TUSIMPLE_WIDTH / np.cos(np.arctan(k))  # [T, Lg]
    G = np.where(g_ok, gt, -100.0)[:, None]  # [T, 1, Lg, R]
    P = np.where(p_ok, pred, -100.0)[:, :, None]  # [T, Lp, 1, R]
    acc = (np.abs(P - G) < thresh[:, None, :, None]).sum(axis=3) / R  # [T, Lp, Lg]
    acc = np.where(p_lane[:, :, None], acc, -np.inf)
    best = np.where(n_p[:, None] > 0, acc.max(axis=1), 0.0)  # [T, Lg]
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
