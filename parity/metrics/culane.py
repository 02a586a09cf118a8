"""CULane F1 as the official CULane evaluator computes it (lane_compare.cpp, spline.cpp, counter.cpp).

Per lane: its present points (finite x >= 0) ordered bottom-up as CULane's `.lines.txt` files list
them, scaled to the evaluator's 1640x590 image (x * 1640 / W, y * 590 / H). A lane of more than two
points is resampled as the official `splineInterpTimes(points, 50)`: a natural cubic spline of x and
y over the cumulative chord length, 50 equal steps inside each segment plus the last point; a lane of
two points is used as it is. The points are stored as float32 (the official Point2f) and rounded to
integer pixels (cvRound), and each consecutive pair is drawn with `cv::line(..., thickness=30)` on a
1640x590 mask. IoU of two lanes = |A & B| / |A | B| of their masks; GT and predicted lanes are
paired by the Hungarian algorithm maximising IoU, and a pair is a true positive when IoU > the
threshold (0.5 for the official F1; 0.3 also reported). FP = predictions - TP, FN = GT - TP.

One difference, on purpose: a lane with fewer than two present points is not a lane here (neither a
prediction nor a GT lane). The official evaluator would score it with similarity 0; its files never
hold one, because the writers (ours included) drop such lanes.

Speed: each lane is drawn once per frame, in its bounding box (+- the half width) rather than on a
full canvas, and intersections are counted only where two boxes overlap; the pixels are those of
the full-canvas drawing (tests/test_culane.py checks it against an independent transcription).
Frames where every lane overlaps at most one lane of the other side skip the Hungarian algorithm.
"""
from __future__ import annotations

import numpy as np

CULANE_WIDTH_PX = 30
CULANE_IMAGE_SIZE = (1640, 590)
CULANE_IMAGE_WIDTH = float(CULANE_IMAGE_SIZE[0])
SPLINE_STEPS = 50
_PAD = CULANE_WIDTH_PX // 2 + 2


def spline_points(pts: np.ndarray, times: int = SPLINE_STEPS) -> np.ndarray:
    """The official splineInterpTimes: natural cubic spline of x and y over the chord length, `times`
    equal steps inside each segment, then the last point (Spline::cal_fun solves the same system)."""
    pts = np.asarray(pts, np.float64)
    if len(pts) <= 2:
        return pts
    seg = np.hypot(*np.diff(pts, axis=0).T)
    keep = np.concatenate([[True], seg > 0])  # a repeated point would divide by zero in cal_fun
    pts, h = pts[keep], seg[seg > 0]
    n = len(h)
    if n < 2:
        return pts
    from scipy.linalg import solve_banded

    slope = np.diff(pts, axis=0) / h[:, None]  # [n, 2]
    ab = np.zeros((3, n - 1))
    ab[0, 1:] = h[1:-1]
    ab[1] = 2 * (h[:-1] + h[1:])
    ab[2, :-1] = h[1:-1]
    m = np.zeros((n + 1, 2))  # second derivatives; natural ends: 0
    m[1:-1] = solve_banded((1, 1), ab, 6 * (slope[1:] - slope[:-1]))
    t = h[:, None] * (np.arange(times) / times)  # [n, times] local parameter
    a, b = pts[:-1], slope - h[:, None] * (2 * m[:-1] + m[1:]) / 6
    c, d = m[:-1] / 2, (m[1:] - m[:-1]) / (6 * h[:, None])
    tt = t[..., None]
    out = a[:, None] + tt * (b[:, None] + tt * (c[:, None] + tt * d[:, None]))
    return np.concatenate([out.reshape(-1, 2), pts[-1:]])


class LaneMask:
    """One lane drawn as the official evaluator draws it, kept as its bounding-box crop."""

    __slots__ = ("x0", "y0", "mask", "area")

    def __init__(self, pts: np.ndarray):
        W, H = CULANE_IMAGE_SIZE
        p = np.rint(spline_points(pts).astype(np.float32)).astype(np.int64)
        self.x0 = int(max(p[:, 0].min() - _PAD, 0))
        self.y0 = int(max(p[:, 1].min() - _PAD, 0))
        x1 = int(min(p[:, 0].max() + _PAD + 1, W))
        y1 = int(min(p[:, 1].max() + _PAD + 1, H))
        if x1 <= self.x0 or y1 <= self.y0:  # entirely off the image: draws nothing
            self.mask, self.area = np.zeros((0, 0), np.uint8), 0
            return
        import cv2

        self.mask = np.zeros((y1 - self.y0, x1 - self.x0), np.uint8)
        q = (p - (self.x0, self.y0)).astype(np.int32)
        cv2.polylines(self.mask, [q.reshape(-1, 1, 2)], False, 1, thickness=CULANE_WIDTH_PX)
        self.area = int(np.count_nonzero(self.mask))

    def intersection(self, other: "LaneMask") -> int:
        ax1, ay1 = self.x0 + self.mask.shape[1], self.y0 + self.mask.shape[0]
        bx1, by1 = other.x0 + other.mask.shape[1], other.y0 + other.mask.shape[0]
        x0, y0, x1, y1 = max(self.x0, other.x0), max(self.y0, other.y0), min(ax1, bx1), min(ay1, by1)
        if x1 <= x0 or y1 <= y0:
            return 0
        a = self.mask[y0 - self.y0 : y1 - self.y0, x0 - self.x0 : x1 - self.x0]
        b = other.mask[y0 - other.y0 : y1 - other.y0, x0 - other.x0 : x1 - other.x0]
        return int(np.count_nonzero(a & b))


def lane_points(x: np.ndarray, rows: np.ndarray, image_width: float, image_height: float) -> list[np.ndarray]:
    """x[L, R] at `rows` -> each lane's present points (>= 2), bottom-up, in 1640x590 coordinates."""
    W, H = CULANE_IMAGE_SIZE
    rows = np.asarray(rows, np.float64)
    order = np.argsort(-rows, kind="stable")
    out = []
    for lane in np.asarray(x, np.float64):
        lane = lane[order]
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(lane) & (lane >= 0)
        if ok.sum() >= 2:
            out.append(np.stack([lane[ok] * (W / image_width), rows[order][ok] * (H / image_height)], axis=1))
    return out


def lane_masks_iou(pred_lanes, gt_lanes, image_width: float, image_height: float) -> np.ndarray:
    """[Lp, Lg] IoU of one frame's lanes, each an (N, 2) array of (x, y) source-image points (N >= 2)."""
    W, H = CULANE_IMAGE_SIZE
    s = np.array([W / image_width, H / image_height])
    return _iou([LaneMask(np.asarray(p, np.float64) * s) for p in pred_lanes], [LaneMask(np.asarray(g, np.float64) * s) for g in gt_lanes])


def _iou(pm: list[LaneMask], gm: list[LaneMask]) -> np.ndarray:
    out = np.zeros((len(pm), len(gm)))
    for i, a in enumerate(pm):
        for j, b in enumerate(gm):
            inter = a.intersection(b)
            if inter:
                out[i, j] = inter / (a.area + b.area - inter)
    return out


def culane_counts_at(pred, pred_rows, gt, gt_rows, image_width: float, image_height: float, ious=(0.5, 0.3)) -> list[np.ndarray]:
    """[T, 3] (TP, FP, FN) per frame at each IoU threshold, from one drawing of each lane.

    pred x[T, Lp, Rp] at pred_rows, gt x[T, Lg, Rg] at gt_rows, source pixels; NaN or x < 0 = no point.
    """
    from scipy.optimize import linear_sum_assignment

    pred, gt = np.asarray(pred), np.asarray(gt)
    out = [np.zeros((len(gt), 3)) for _ in ious]
    for t in range(len(gt)):
        pm = [LaneMask(p) for p in lane_points(pred[t], pred_rows, image_width, image_height)]
        gm = [LaneMask(g) for g in lane_points(gt[t], gt_rows, image_width, image_height)]
        m = _iou(pm, gm)
        touch = m > 0
        if m.size and ((touch.sum(axis=0) > 1).any() or (touch.sum(axis=1) > 1).any()):
            r, c = linear_sum_assignment(-m)
            matched = m[r, c]
        else:  # every lane overlaps at most one other: the assignment is forced
            matched = m[touch]
        for k, thr in enumerate(ious):
            tp = int((matched > thr).sum())
            out[k][t] = (tp, len(pm) - tp, len(gm) - tp)
    return out


def culane_counts(pred, pred_rows, gt, gt_rows, image_width: float, image_height: float, iou: float = 0.5) -> np.ndarray:
    """[T, 3] (TP, FP, FN) per frame at one IoU threshold (see `culane_counts_at`)."""
    return culane_counts_at(pred, pred_rows, gt, gt_rows, image_width, image_height, (iou,))[0]


def f1(counts: np.ndarray) -> float:
    tp, fp, fn = np.asarray(counts).reshape(-1, 3).sum(axis=0)
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan")
