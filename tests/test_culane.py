"""CULane F1 against an independent, literal transcription of the official evaluator (spline.cpp,
lane_compare.cpp, counter.cpp): its own tridiagonal spline solve, a full 1640x590 canvas per lane
pair, one cv2.line per segment, and brute-force matching over permutations."""
import itertools

import cv2
import numpy as np
import pytest

from parity import metrics as M

W_OFF, H_OFF, WIDTH = 1640, 590, 30


# ---- the official evaluator, transcribed -------------------------------------------------------
def official_cal_fun(pts):
    """Spline::cal_fun: natural cubic spline of x(t), y(t), t = chord length; per segment (a, b, c, d, h)."""
    n = len(pts) - 1
    h = [np.sqrt((pts[i + 1][0] - pts[i][0]) ** 2 + (pts[i + 1][1] - pts[i][1]) ** 2) for i in range(n)]
    out = []
    coef = {}
    for dim in (0, 1):
        v = [p[dim] for p in pts]
        # second derivatives M: M0 = Mn = 0, h[i-1] M[i-1] + 2 (h[i-1] + h[i]) M[i] + h[i] M[i+1] = 6 (slope_i - slope_{i-1})
        m = n - 1
        M = [0.0] * (n + 1)
        if m > 0:
            a = [h[i - 1] for i in range(1, n)]
            b = [2 * (h[i - 1] + h[i]) for i in range(1, n)]
            c = [h[i] for i in range(1, n)]
            d = [6 * ((v[i + 1] - v[i]) / h[i] - (v[i] - v[i - 1]) / h[i - 1]) for i in range(1, n)]
            for i in range(1, m):  # Thomas algorithm
                w = a[i] / b[i - 1]
                b[i] -= w * c[i - 1]
                d[i] -= w * d[i - 1]
            sol = [0.0] * m
            sol[-1] = d[-1] / b[-1]
            for i in range(m - 2, -1, -1):
                sol[i] = (d[i] - c[i] * sol[i + 1]) / b[i]
            M[1:n] = sol
        coef[dim] = [(v[i], (v[i + 1] - v[i]) / h[i] - h[i] * (2 * M[i] + M[i + 1]) / 6, M[i] / 2, (M[i + 1] - M[i]) / (6 * h[i])) for i in range(n)]
    for i in range(n):
        out.append((coef[0][i], coef[1][i], h[i]))
    return out


def official_spline_interp_times(pts, times=50):
    if len(pts) == 2:
        return [tuple(p) for p in pts]
    res = []
    for (ax, bx, cx, dx), (ay, by, cy, dy), h in official_cal_fun(pts):
        delta = h / times
        for k in range(times):
            t1 = delta * k
            res.append((ax + bx * t1 + cx * t1**2 + dx * t1**3, ay + by * t1 + cy * t1**2 + dy * t1**3))
    res.append(tuple(pts[-1]))
    return res


def official_draw(pts):
    im = np.zeros((H_OFF, W_OFF), np.uint8)
    p = np.rint(np.asarray(official_spline_interp_times(pts), np.float32)).astype(int)  # Point2f -> Point: cvRound
    for n in range(len(p) - 1):
        cv2.line(im, (int(p[n][0]), int(p[n][1])), (int(p[n + 1][0]), int(p[n + 1][1])), 1, WIDTH)
    return im


def official_similarity(lane1, lane2):
    im1, im2 = official_draw(lane1), official_draw(lane2)
    inter = float((im1 * im2).sum())
    return inter / (float(im1.sum()) + float(im2.sum()) - inter)


def official_counts(anno, detect, thr):
    if not anno:
        return 0, len(detect), 0
    if not detect:
        return 0, 0, len(anno)
    sim = np.array([[official_similarity(a, d) for d in detect] for a in anno])
    best, best_pairs = -1.0, []
    k = min(len(anno), len(detect))
    for rows in itertools.permutations(range(len(anno)), k):  # brute-force maximum matching
        for cols in itertools.permutations(range(len(detect)), k):
            total = sum(sim[r, c] for r, c in zip(rows, cols))
            if total > best + 1e-12:
                best, best_pairs = total, list(zip(rows, cols))
    tp = sum(1 for r, c in best_pairs if sim[r, c] > thr)
    return tp, len(detect) - tp, len(anno) - tp


def as_official_lanes(x, rows, w, h):
    """x[L, R] -> lists of (x, y) points at 1640x590, bottom-up, present points only, >= 2 points."""
    out = []
    for lane in x:
        pts = [(float(v) * W_OFF / w, float(r) * H_OFF / h) for v, r in zip(lane, rows) if np.isfinite(v) and v >= 0]
        pts.sort(key=lambda p: -p[1])
        if len(pts) >= 2:
            out.append(pts)
    return out


# ---- random frames with the awkward cases ------------------------------------------------------
def random_frame(rng, w, h, n_gt, n_pred):
    rows = np.linspace(0.42 * h, h - 1, 18)
    gt = np.full((n_gt, len(rows)), np.nan)
    for k in range(n_gt):
        base = w * (0.1 + 0.8 * k / max(n_gt - 1, 1))
        curve = rng.uniform(-0.6, 0.6) * (rows - rows[0]) + rng.uniform(-2e-3, 2e-3) * (rows - rows[0]) ** 2
        gt[k] = base + curve
        gt[k, : rng.integers(0, 8)] = np.nan  # ends at different rows
    pred = np.full((n_pred, len(rows)), np.nan)
    for k in range(n_pred):
        src = gt[k % n_gt] if n_gt else np.linspace(0, w, len(rows))
        pred[k] = src + rng.normal(0, rng.choice([1.0, 4.0, 15.0]), len(rows)) + rng.uniform(-20, 20)
        if rng.random() < 0.3:
            pred[k, 5:9] = np.nan  # a gap inside the lane
        if rng.random() < 0.2:
            pred[k, -3:] = -2.0  # TuSimple's absent points
        if rng.random() < 0.15:
            pred[k, :-2] = np.nan  # two points only
        if rng.random() < 0.1:
            pred[k] += w * 0.6  # partly outside the image
    return rows, gt, pred


@pytest.mark.parametrize("w, h", [(640, 360), (1280, 720)])
def test_counts_and_iou_equal_the_official_evaluator(w, h):
    rng = np.random.default_rng(w)
    for trial in range(14):
        n_gt, n_pred = int(rng.integers(0, 4)), int(rng.integers(0, 5))
        rows, gt, pred = random_frame(rng, w, h, n_gt, n_pred)
        og, op = as_official_lanes(gt, rows, w, h), as_official_lanes(pred, rows, w, h)
        got = M.culane_counts_at(pred[None], rows, gt[None], rows, w, h, (0.5, 0.3))
        for k, thr in enumerate((0.5, 0.3)):
            assert tuple(got[k][0]) == official_counts(og, op, thr), (trial, thr)
        if og and op:
            scale = np.array([w / W_OFF, h / H_OFF])
            mine = M.lane_masks_iou([np.asarray(p) * scale for p in op], [np.asarray(g) * scale for g in og], w, h)
            ref = np.array([[official_similarity(g, p) for g in og] for p in op])
            np.testing.assert_allclose(mine, ref, atol=1e-12, rtol=0)


def test_polylines_on_a_crop_draws_the_official_pixels():
    """parity draws each lane once, with cv2.polylines, in its bounding box: the same pixels as one
    cv2.line per segment on the full canvas, lanes crossing the image border included."""
    from parity.metrics.culane import LaneMask

    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(2, 9))
        pts = np.stack([rng.uniform(-100, 1740, n), np.sort(rng.uniform(-20, 610, n))[::-1]], axis=1)
        full = official_draw([tuple(p) for p in pts])
        m = LaneMask(pts)
        canvas = np.zeros_like(full)
        if m.mask.size:
            canvas[m.y0 : m.y0 + m.mask.shape[0], m.x0 : m.x0 + m.mask.shape[1]] = m.mask
        np.testing.assert_array_equal(canvas, full)


def test_gaps_are_joined_and_outer_lanes_get_the_drawn_width():
    """The old row-integrated IoU left a gap inside a lane undrawn and narrowed slanted outer lanes."""
    w, h = 640, 360
    rows = np.linspace(150, 359, 18)
    outer = 40 + 2.2 * (rows - rows[0])  # a slanted outer lane
    gapped = outer.copy()
    gapped[6:11] = np.nan
    iou = M.lane_masks_iou([np.stack([gapped[np.isfinite(gapped)], rows[np.isfinite(gapped)]], 1)],
                           [np.stack([outer, rows], 1)], w, h)[0, 0]
    assert iou > 0.97  # the gap is drawn over: the two points around it are joined
    # shifted sideways by half the drawn width measured horizontally: IoU ~1/3 whatever the slant
    slope = 2.2 * (W_OFF / w) / (H_OFF / h)  # dx/dy at the evaluator's scale
    shift = 15 * np.hypot(1, slope) * w / W_OFF  # half the horizontal extent of a 30 px stroke, in source px
    iou_shift = M.lane_masks_iou([np.stack([outer + shift, rows], 1)], [np.stack([outer, rows], 1)], w, h)[0, 0]
    assert iou_shift == pytest.approx(1 / 3, abs=0.04)


def test_hungarian_not_greedy():
    w, h = 1640, 590
    rows = np.arange(100.0, 590.0, 10.0)
    vertical = lambda x: np.full(len(rows), float(x))  # noqa: E731
    gt = np.stack([vertical(400), vertical(420)])[None]
    pred = np.stack([vertical(412), vertical(425)])[None]
    assert M.culane_counts(pred, rows, gt, rows, w, h, 0.3)[0, 0] == 2
    assert M.f1(np.array([[1, 1, 1]])) == pytest.approx(0.5)
