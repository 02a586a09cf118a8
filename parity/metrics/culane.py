"""CULane-style F1: IoU of lanes drawn 30 px wide at 1640 px width, Hungarian matching."""
from __future__ import annotations

import numpy as np

CULANE_WIDTH_PX = 30.0
CULANE_IMAGE_WIDTH = 1640.0


def lane_iou(pred: np.ndarray, gt: np.ndarray, rows: np.ndarray, image_width: float) -> np.ndarray:
    """[T, Lp, Lg] IoU of lanes drawn 30 px wide (at 1640 px image width, scaled to this width).

    The drawn mask's IoU is integrated row by row: at each anchor row a lane covers a horizontal
    segment of width w / cos(angle); overlap and union are summed over the rows where either lane
    exists (each row standing for its share of the image height). No rasterisation, so it is exact
    for straight segments between anchor rows and vectorised over frames.
    """
    w = CULANE_WIDTH_PX * image_width / CULANE_IMAGE_WIDTH
    dy = np.gradient(np.asarray(rows, np.float64)).astype(np.float32)

    def half_width(x):
        with np.errstate(invalid="ignore"):
            slope = np.nan_to_num(np.gradient(x.astype(np.float32), axis=-1) / dy, nan=0.0)  # end rows: taken as vertical
        return 0.5 * w * np.sqrt(1 + slope * slope)

    pred, gt = pred.astype(np.float32), gt.astype(np.float32)
    hp, hg = half_width(pred), half_width(gt)
    area_p = (np.where(np.isfinite(pred), 2 * hp, 0) * dy).sum(axis=2)  # [T, Lp]
    area_g = (np.where(np.isfinite(gt), 2 * hg, 0) * dy).sum(axis=2)  # [T, Lg]
    lo = np.maximum((pred - hp)[:, :, None], (gt - hg)[:, None])
    hi = np.minimum((pred + hp)[:, :, None], (gt + hg)[:, None])
    inter = np.nan_to_num(np.clip(hi - lo, 0, None), nan=0.0)  # NaN where either lane is absent
    I = (inter * dy).sum(axis=3)
    U = area_p[:, :, None] + area_g[:, None] - I
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(U > 0, I / U, 0.0)


def culane_counts(pred: np.ndarray, gt: np.ndarray, rows: np.ndarray, image_width: float, iou: float = 0.5) -> np.ndarray:
    """[T, 3] (TP, FP, FN) per frame: Hungarian matching on IoU, a match counts if IoU > `iou`."""
    return culane_counts_at(pred, gt, rows, image_width, (iou,))[0]


def culane_counts_at(pred, gt, rows, image_width: float, ious=(0.5, 0.3)) -> list[np.ndarray]:
    """`culane_counts` at several IoU thresholds from one IoU computation."""
    from scipy.optimize import linear_sum_assignment

    p_lane = np.isfinite(pred).sum(axis=2) >= 2
    g_lane = np.isfinite(gt).sum(axis=2) >= 2
    iou_m = lane_iou(pred, gt, rows, image_width) * (p_lane[:, :, None] & g_lane[:, None, :])
    touch = iou_m > 0
    # Where every lane overlaps at most one lane of the other side, the assignment is forced;
    # only frames with competing overlaps need the Hungarian algorithm.
    contested = np.flatnonzero((touch.sum(axis=2) > 1).any(axis=1) | (touch.sum(axis=1) > 1).any(axis=1))
    pairs = {}
    for t in contested:
        m = iou_m[t][np.ix_(p_lane[t], g_lane[t])]
        r, c = linear_sum_assignment(-m)
        pairs[t] = m[r, c]
    out = []
    for thr in ious:
        tp = (iou_m > thr).sum(axis=(1, 2))
        for t, matched in pairs.items():
            tp[t] = int((matched > thr).sum())
        out.append(np.stack([tp, p_lane.sum(axis=1) - tp, g_lane.sum(axis=1) - tp], axis=1).astype(np.float64))
    return out


def f1(counts: np.ndarray) -> float:
    tp, fp, fn = np.asarray(counts).reshape(-1, 3).sum(axis=0)
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan")
