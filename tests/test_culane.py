"""CULane F1 against an independent, literal transcription of the official evaluator (spline.cpp,
lane_compare.cpp, counter.cpp): Point2f (float32) points, `cal_fun`'s own tridiagonal elimination in
plain Python, a full 1640x590 canvas per lane of each pair, one cv2.line per segment, IoU by numpy,
and brute-force matching over permutations."""
import collections
import functools
import itertools
import math

import cv2
import numpy as np
import pytest

from parity import metrics as M
from parity.metrics import culane as CU
from parity.metrics import culane_spans as SP

W_OFF, H_OFF, WIDTH = 1640, 590, 30


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def span_rasteriser(request, monkeypatch):
    """Every test here runs on both paths: the compiled span rasteriser and spline samples (built at
    install) and the numpy path a machine without a C compiler gets. A missing compiled module fails:
    CI has a compiler."""
    if request.param == "numpy":
        monkeypatch.setattr(SP, "native", None)
        monkeypatch.setattr(CU, "_spline_native", None)
    elif SP.native is None or CU._spline_native is None:
        pytest.fail("parity.metrics._culane_spans or _culane_spline did not build (pip install -e . compiles them with the C compiler)")
    CU.clear_caches()  # no spans carried over from the other rasteriser
    yield request.param
    CU.clear_caches()


# ---- the official evaluator, transcribed -------------------------------------------------------
def official_cal_fun(point_v):
    """Spline::cal_fun. point_v: Point2f, i.e. (np.float32, np.float32); `a.x - b.x` is float arithmetic."""
    n = len(point_v)
    Mx, My = [0.0] * n, [0.0] * n
    A, B, C, Dx, Dy = ([0.0] * (n - 2) for _ in range(5))
    h = [0.0] * (n - 1)
    X = lambda i: point_v[i][0]  # noqa: E731
    Y = lambda i: point_v[i][1]  # noqa: E731
    for i in range(n - 1):
        h[i] = math.sqrt(math.pow(float(X(i + 1) - X(i)), 2) + math.pow(float(Y(i + 1) - Y(i)), 2))
    for i in range(n - 2):
        A[i] = h[i]
        B[i] = 2 * (h[i] + h[i + 1])
        C[i] = h[i + 1]
        Dx[i] = 6 * (float(X(i + 2) - X(i + 1)) / h[i + 1] - float(X(i + 1) - X(i)) / h[i])
        Dy[i] = 6 * (float(Y(i + 2) - Y(i + 1)) / h[i + 1] - float(Y(i + 1) - Y(i)) / h[i])
    C[0] = C[0] / B[0]  # TDMA
    Dx[0] = Dx[0] / B[0]
    Dy[0] = Dy[0] / B[0]
    for i in range(1, n - 2):
        tmp = B[i] - A[i] * C[i - 1]
        C[i] = C[i] / tmp
        Dx[i] = (Dx[i] - A[i] * Dx[i - 1]) / tmp
        Dy[i] = (Dy[i] - A[i] * Dy[i - 1]) / tmp
    Mx[n - 2] = Dx[n - 3]
    My[n - 2] = Dy[n - 3]
    for i in range(n - 4, -1, -1):
        Mx[i + 1] = Dx[i] - C[i] * Mx[i + 2]
        My[i + 1] = Dy[i] - C[i] * My[i + 2]
    Mx[0] = Mx[n - 1] = My[0] = My[n - 1] = 0
    func_v = []
    for i in range(n - 1):
        func_v.append(dict(
            a_x=float(X(i)), b_x=float(X(i + 1) - X(i)) / h[i] - (2 * h[i] * Mx[i] + h[i] * Mx[i + 1]) / 6,
            c_x=Mx[i] / 2, d_x=(Mx[i + 1] - Mx[i]) / (6 * h[i]),
            a_y=float(Y(i)), b_y=float(Y(i + 1) - Y(i)) / h[i] - (2 * h[i] * My[i] + h[i] * My[i + 1]) / 6,
            c_y=My[i] / 2, d_y=(My[i + 1] - My[i]) / (6 * h[i]), h=h[i]))
    return func_v


def official_spline_interp_times(tmp_line, times=50):
    """Spline::splineInterpTimes for > 2 points (lane_compare.cpp never calls it with 2)."""
    res = []
    for f in official_cal_fun(tmp_line):
        delta = f["h"] / times
        for k in range(times):
            t1 = delta * k
            x1 = f["a_x"] + f["b_x"] * t1 + f["c_x"] * math.pow(t1, 2) + f["d_x"] * math.pow(t1, 3)
            y1 = f["a_y"] + f["b_y"] * t1 + f["c_y"] * math.pow(t1, 2) + f["d_y"] * math.pow(t1, 3)
            res.append((np.float32(x1), np.float32(y1)))  # Point2f(x1, y1)
    res.append(tmp_line[-1])
    return res


def point2f(lane):
    return tuple((np.float32(x), np.float32(y)) for x, y in lane)  # as read_lane_file stores them


@functools.lru_cache(maxsize=64)  # a pure function of the lane: drawn once for all its pairs in a frame
def official_draw(lane):
    lane = point2f(lane)
    p_interp = list(lane) if len(lane) == 2 else official_spline_interp_times(lane, 50)
    im = np.zeros((H_OFF, W_OFF), np.uint8)
    for n in range(len(p_interp) - 1):
        # cv::line takes Point: Point2f -> Point is cvRound (half to even) of each coordinate
        p0 = (int(np.rint(p_interp[n][0])), int(np.rint(p_interp[n][1])))
        p1 = (int(np.rint(p_interp[n + 1][0])), int(np.rint(p_interp[n + 1][1])))
        cv2.line(im, p0, p1, 1, WIDTH)
    return im


def official_similarity(lane1, lane2):
    """LaneCompare::get_lane_similarity (IOU)."""
    if len(lane1) < 2 or len(lane2) < 2:
        return 0.0
    im1, im2 = official_draw(tuple(lane1)), official_draw(tuple(lane2))
    sum_1, sum_2 = float(im1.sum(dtype=np.float64)), float(im2.sum(dtype=np.float64))
    inter_sum = float((im1 * im2).sum(dtype=np.float64))
    return inter_sum / (sum_1 + sum_2 - inter_sum)


def official_counts(anno, detect, thr):
    """Counter::count_im_pair with a brute-force maximum-total-similarity matching."""
    if not anno:
        return 0, len(detect), 0
    if not detect:
        return 0, 0, len(anno)
    sim = np.array([[official_similarity(a, d) for d in detect] for a in anno])
    best, best_pairs = -1.0, []
    k = min(len(anno), len(detect))
    for rows in itertools.permutations(range(len(anno)), k):
        for cols in itertools.permutations(range(len(detect)), k):
            total = sum(sim[r, c] for r, c in zip(rows, cols))
            if total > best + 1e-12:
                best, best_pairs = total, list(zip(rows, cols))
    tp = sum(1 for r, c in best_pairs if sim[r, c] > thr)
    return tp, len(detect) - tp, len(anno) - tp


def as_official_lanes(x, rows, w, h):
    """x[L, R] -> the `.lines.txt` lanes at 1640x590: present points (finite, x >= 0), bottom-up,
    lanes of >= 2 points."""
    out = []
    for lane in x:
        pts = [(float(v) * W_OFF / w, float(r) * H_OFF / h) for v, r in zip(lane, rows) if np.isfinite(v) and v >= 0]
        pts.sort(key=lambda p: -p[1])
        if len(pts) >= 2:
            out.append(tuple(pts))
    return out


# ---- random frames with the awkward cases ------------------------------------------------------
def random_lanes(rng, w, h, rows, n, like=None, like_rows=None):
    """n lanes at `rows`; with `like` (GT lanes at like_rows) predictions near them: noise, offsets,
    gaps, -2 points, two- and three-point lanes, lanes leaving the image, ending at other rows."""
    x = np.full((n, len(rows)), np.nan)
    for k in range(n):
        src = like[k % len(like)] if like is not None and len(like) else None
        ok = np.isfinite(src) & (src >= 0) if src is not None else None
        if src is not None and ok.sum() >= 2:
            x[k] = np.interp(rows, like_rows[ok], src[ok])  # like_rows ascending
            x[k][(rows < like_rows[ok].min()) | (rows > like_rows[ok].max())] = np.nan
            x[k] += rng.normal(0, rng.choice([0.5, 3.0, 12.0]), len(rows)) + rng.uniform(-25, 25)
        else:
            base = w * (0.1 + 0.8 * k / max(n - 1, 1)) + rng.uniform(-0.1, 0.1) * w
            r = rows - rows.min()
            x[k] = base + rng.uniform(-0.9, 0.9) * r + rng.uniform(-3e-3, 3e-3) * r**2
        u = rng.random()
        if u < 0.25:
            x[k, : rng.integers(1, len(rows) // 2)] = np.nan  # ends at a different row
        elif u < 0.4:
            a = rng.integers(2, len(rows) - 6)
            x[k, a : a + rng.integers(2, 6)] = np.nan  # a gap inside the lane
        if rng.random() < 0.15:
            x[k, -rng.integers(1, 4):] = -2.0  # TuSimple's absent points
        if rng.random() < 0.1:
            keep = rng.choice(len(rows), int(rng.integers(2, 4)), replace=False)  # two or three points
            x[k, np.setdiff1d(np.arange(len(rows)), keep)] = np.nan
        if rng.random() < 0.1:
            x[k] += w * rng.uniform(0.3, 0.7)  # leaves the image on the right
        if rng.random() < 0.05:
            x[k, :] = np.nan
            x[k, rng.integers(len(rows))] = w / 2  # one point only: not a lane
    return x


def check_frames(w, h, seed, trials, gt_rows_n=14, pred_rows_n=None):
    rng = np.random.default_rng(seed)
    gt_rows = np.linspace(0.4 * h, h - 1, gt_rows_n)
    pred_rows = gt_rows if pred_rows_n is None else np.linspace(0.38 * h, h - 1, pred_rows_n)
    Lg, Lp = 4, 5
    gt = np.full((trials, Lg, len(gt_rows)), np.nan)
    pred = np.full((trials, Lp, len(pred_rows)), np.nan)
    for t in range(trials):
        n_gt, n_pred = int(rng.integers(0, Lg + 1)), int(rng.integers(0, Lp + 1))
        gt[t, :n_gt] = random_lanes(rng, w, h, gt_rows, n_gt)
        pred[t, :n_pred] = random_lanes(rng, w, h, pred_rows, n_pred, like=gt[t, :n_gt], like_rows=gt_rows)
        pred[t] = pred[t, rng.permutation(Lp)]
    got = M.culane_counts_at(pred, pred_rows, gt, gt_rows, w, h, (0.5, 0.3))
    hung = 0
    for t in range(trials):
        og, op = as_official_lanes(gt[t], gt_rows, w, h), as_official_lanes(pred[t], pred_rows, w, h)
        for k, thr in enumerate((0.5, 0.3)):
            assert tuple(got[k][t]) == official_counts(og, op, thr), (seed, t, thr)
        if og and op:
            scale = np.array([w / W_OFF, h / H_OFF])
            mine = M.lane_masks_iou([np.asarray(p) * scale for p in op], [np.asarray(g) * scale for g in og], w, h)
            ref = np.array([[official_similarity(g, p) for g in og] for p in op])
            np.testing.assert_allclose(mine, ref, atol=1e-12, rtol=0)
            touch = ref > 0
            hung += bool((touch.sum(0) > 1).any() or (touch.sum(1) > 1).any())
    return got, hung


@pytest.mark.parametrize("w, h", [(640, 360), (1280, 720)])
def test_counts_and_iou_equal_the_official_evaluator(w, h):
    got, hung = check_frames(w, h, seed=w, trials=12)
    assert hung > 0  # the Hungarian path and the forced-assignment shortcut are both exercised
    assert got[1][:, 0].sum() > got[0][:, 0].sum() > 0 and got[0][:, 1].sum() > 0 and got[0][:, 2].sum() > 0


def test_batched_over_frames_chunks_and_other_pred_rows(monkeypatch):
    """Many frames in one call, frame and lane chunks smaller than the work, predictions at rows other
    than the GT's: each frame's counts still those of the evaluator on that frame alone."""
    monkeypatch.setattr(CU, "_CHUNK_FRAMES", 5)
    monkeypatch.setattr(CU, "_CHUNK_LANES", 3)
    check_frames(640, 360, seed=7, trials=11, gt_rows_n=12, pred_rows_n=17)


def test_frames_already_scored_at_the_same_pixels_take_their_counts_and_only_those(monkeypatch):
    """A second runner whose lanes round to the vertices already scored against the same GT frame (ONNX
    Runtime fp32 after torch) takes those frames' counts without rasterising them again; its frames
    that differ are rasterised and scored, and every count is still the official evaluator's."""
    w, h, trials = 640, 360, 10
    rng = np.random.default_rng(5)
    rows = np.linspace(0.4 * h, h - 1, 14)
    gt = np.full((trials, 4, len(rows)), np.nan)
    pred = np.full((trials, 4, len(rows)), np.nan)
    for t in range(trials):
        gt[t] = random_lanes(rng, w, h, rows, 4)
        pred[t] = random_lanes(rng, w, h, rows, 4, like=gt[t], like_rows=rows)
    first = M.culane_counts_at(pred, rows, gt, rows, w, h, (0.5, 0.3))
    moved = [1, 4, 7]
    other = pred.copy()
    other[moved] += 40.0  # beyond the 30 px stroke: these frames score otherwise
    rasterised = []
    spans = CU._lane_spans
    monkeypatch.setattr(CU, "_lane_spans", lambda q: rasterised.append(len(q)) or spans(q))
    second = M.culane_counts_at(other, rows, gt, rows, w, h, (0.5, 0.3))
    lanes_moved = sum(len(as_official_lanes(other[t], rows, w, h)) for t in moved)
    assert sum(rasterised) <= lanes_moved  # the frames that did not move were not drawn again
    for k, thr in enumerate((0.5, 0.3)):
        for t in range(trials):
            want = official_counts(as_official_lanes(gt[t], rows, w, h), as_official_lanes(other[t], rows, w, h), thr)
            assert tuple(second[k][t]) == want, (t, thr)
        assert any(tuple(second[k][t]) != tuple(first[k][t]) for t in moved)  # a stale count would be caught


def test_empty_frames_and_not_lanes():
    rows = np.linspace(200, 359, 10)
    gt = np.full((3, 2, 10), np.nan)
    pred = np.full((3, 3, 10), np.nan)
    gt[1, 0] = np.linspace(100, 200, 10)
    pred[2, 0] = np.linspace(100, 200, 10)
    pred[2, 1, 4] = 300.0  # one point: not a lane
    pred[2, 2] = -2.0  # all absent
    got = M.culane_counts_at(pred, rows, gt, rows, 640, 360)
    assert [c.tolist() for c in got] == [[[0, 0, 0], [0, 0, 1], [0, 1, 0]]] * 2
    assert M.lane_masks_iou([], [], 640, 360).shape == (0, 0)
    iou = M.lane_masks_iou([np.array([[10.0, 300.0]])], [np.array([[10.0, 300.0], [20.0, 200.0]])], 640, 360)
    assert iou.tolist() == [[0.0]]  # a one-point lane: similarity 0, as officially


def test_lane_masks_iou_draws_points_as_given_negative_x_included():
    rng = np.random.default_rng(5)
    w, h = 1280, 720
    lanes = []
    for _ in range(5):
        n = int(rng.integers(2, 7))
        y = np.sort(rng.uniform(250, 719, n))[::-1]
        lanes.append(np.stack([rng.uniform(-150, 300, n) + 0.8 * (720 - y), y], axis=1))  # some x < 0
    mine = M.lane_masks_iou(lanes[:2], lanes[2:], w, h)
    off = [tuple(map(tuple, ln * (W_OFF / w, H_OFF / h))) for ln in lanes]
    ref = np.array([[official_similarity(g, p) for g in off[2:]] for p in off[:2]])
    np.testing.assert_allclose(mine, ref, atol=1e-12, rtol=0)
    assert (ref > 0).sum() >= 2


def test_spline_is_the_natural_cubic_spline_over_chord_length():
    """cal_fun's samples (bit for bit against the transcription) are scipy's natural cubic spline
    of x(t), y(t) over the cumulative chord length, to float32 resolution."""
    from scipy.interpolate import CubicSpline

    rng = np.random.default_rng(11)
    for n in (3, 4, 7, 30):
        pts = np.stack([rng.uniform(0, 1640, n), np.sort(rng.uniform(0, 590, n))[::-1]], axis=1).astype(np.float32)
        mine = CU.spline_interp_times(pts[None])[0]
        ref = np.array(official_spline_interp_times(point2f(pts.tolist())), np.float32)
        np.testing.assert_array_equal(mine, ref)
        t = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(pts.astype(np.float64), axis=0).T))])
        ts = np.concatenate([t[:-1, None] + np.diff(t)[:, None] * np.arange(50) / 50, ]).ravel()
        cs = CubicSpline(t, pts.astype(np.float64), bc_type="natural")(np.append(ts, t[-1]))
        np.testing.assert_allclose(mine, cs, atol=3e-4, rtol=0)  # float32 storage: 1.2e-4 at 1640


def test_drawn_points_are_the_official_samples_bottom_up():
    """The points drawn between are the evaluator's: the lane's points bottom-up (rows given top-down
    here), scaled to 1640x590 as Point2f, splineInterpTimes(50) for > 2 points, cvRound. (The order
    hardly shows in the pixels: the same curve sampled from the other end draws the same mask here.)"""
    rng = np.random.default_rng(2)
    w, h = 1280, 720
    rows = np.array([300.0, 420.0, 515.0, 700.0])  # top-down
    x = np.stack([rng.uniform(100, 1200, 4) for _ in range(6)])
    x[1, 1] = np.nan  # three points
    x[2, [0, 2]] = np.nan  # two points
    x[3, 3] = -2.0
    got = CU._frame_pixels(x[None], rows, w, h)[0]
    assert len(got) == 6
    for lane, q in zip(x, got):
        ok = np.isfinite(lane) & (lane >= 0)
        pts = point2f([(v * W_OFF / w, r * H_OFF / h) for v, r in zip(lane[ok][::-1], rows[ok][::-1])])
        s = list(pts) if len(pts) == 2 else official_spline_interp_times(pts)
        ref = np.rint(np.array(s, np.float32)).astype(int)
        ref = ref[np.r_[True, (np.diff(ref, axis=0) != 0).any(axis=1)]]
        np.testing.assert_array_equal(q, ref)
        assert q[0, 1] == ref[:, 1].max()  # starts at the bottom
        full = official_draw(tuple(map(tuple, np.array(pts, np.float64).tolist())))
        np.testing.assert_array_equal(CU.LaneMask(pixels=q).full(), full)


def test_polylines_on_a_crop_draws_the_official_pixels():
    """parity draws each lane once, with cv2.polylines, in its bounding box, consecutive samples on
    the same pixel merged: the same pixels as one cv2.line per segment on the full canvas, for lanes
    crossing every image border, dense spline samples and lanes on one pixel."""
    rng = np.random.default_rng(3)
    cases = []
    for _ in range(25):
        n = int(rng.integers(2, 9))
        cases.append(np.stack([rng.uniform(-120, 1760, n), np.sort(rng.uniform(-40, 630, n))[::-1]], axis=1))
    cases += [np.array([[5.0, 3.0], [5.2, 3.3]]), np.array([[820.0, 300.0], [820.4, 300.1], [821.0, 299.0]]),
              np.array([[-30.0, 100.0], [-20.0, 50.0]]), np.array([[1700.0, 620.0], [1660.0, 600.0], [1639.0, 580.0]])]
    for pts in cases:
        pts = pts.astype(np.float32)
        full = official_draw(tuple(map(tuple, pts.tolist())))
        m = CU.LaneMask(pts)
        np.testing.assert_array_equal(m.full(), full)
        assert m.area == int(full.sum())


def _lines_on_full_canvas(p):
    im = np.zeros((H_OFF, W_OFF), np.uint8)
    for a, b in zip(p[:-1], p[1:]):
        cv2.line(im, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 1, WIDTH)
    return im


def test_lanes_painted_from_opencv_stamps_are_its_drawing(span_rasteriser, monkeypatch):
    """A lane the span rasteriser leaves to drawing (a nearly flat lane: OpenCV's stamp of a step such
    as (4, -1) has two runs in a row) is painted as the union of its steps' stamps, each drawn by
    OpenCV once: the pixels of one cv2.line per segment on the full canvas, inside the image and over
    every border. Near a border it is painted only where the border leaves the lane's pixels as they
    are (else drawn); painted both inside and at a border here, and drawn throughout without the
    compiled painter."""
    rng = np.random.default_rng(11)
    painted = collections.Counter()
    paint = SP.paint_runs

    def counted(p, *args):
        out = paint(p, *args)
        lo, hi = p.min(axis=0), p.max(axis=0)
        inside = (lo > CU._PAD).all() and hi[0] < W_OFF - 1 - CU._PAD and hi[1] < H_OFF - 1 - CU._PAD
        painted["inside" if inside else "border"] += out is not None
        return out

    monkeypatch.setattr(SP, "paint_runs", counted)
    starts = [(400, 300), (1000, 200)] + [(x, y) for x in (3, 820, 1636) for y in (2, 300, 587)]
    lanes = []
    for k in range(60):
        n = int(rng.integers(2, 160))
        flat = np.stack([rng.integers(1, 6, n - 1), rng.integers(-1, 1, n - 1)], axis=1) * rng.choice([-1, 1], 2)
        steps = flat if k % 3 else rng.integers(-SP.MAX_STEP - 1, SP.MAX_STEP + 2, (n - 1, 2))
        if k % 6 == 5:
            steps = steps[:, ::-1]  # steep: along a side border
        lanes.append(np.concatenate([[starts[k % len(starts)]], starts[k % len(starts)] + np.cumsum(steps, axis=0)]))
    # lanes whose stamps the border clips at pixels no disc covers: the union of unclipped stamps is not
    # OpenCV's drawing there (found by search), so they are drawn
    clipped_lanes = [[[1637, 354], [1614, 379]], [[-1, 69], [15, 67], [41, 99], [39, 75], [22, 86]],
                     [[1369, -3], [1366, 15], [1340, 26], [1310, 37]]]
    for k, p in enumerate(lanes + [np.array(q) for q in clipped_lanes]):
        p = np.asarray(p, np.int32)
        if k >= len(lanes):
            assert SP.clipped_at_border(p.astype(np.int64)[None], np.ones(1, bool), W_OFF, H_OFF, WIDTH)[0]
        want = _lines_on_full_canvas(p)
        for clipped in (None, bool(SP.clipped_at_border(p.astype(np.int64)[None], np.ones(1, bool), W_OFF, H_OFF, WIDTH)[0])):
            m = CU.LaneMask(pixels=p, clipped=clipped)
            runs = m.runs()  # painted: the painter's own; drawn: the mask's
            np.testing.assert_array_equal(m.full(), want, err_msg=f"lane {k}")
            assert m.area == int(want.sum())
            ys, xs = np.nonzero(want)  # row by row, left to right
            starts = np.flatnonzero(np.diff(ys, prepend=-1) | (np.diff(xs, prepend=-2) != 1))
            ends = np.append(starts[1:], len(xs)) - 1
            for got, expected in zip(runs, (ys[starts], xs[starts], xs[ends])):
                np.testing.assert_array_equal(got, expected, err_msg=f"lane {k}")
    if span_rasteriser == "compiled":
        assert painted["inside"] > 10 and painted["border"] > 5, painted
    else:
        assert not painted["inside"] and not painted["border"]


def test_gaps_are_joined_and_outer_lanes_get_the_drawn_width():
    """The old row-integrated IoU left a gap inside a lane undrawn and narrowed slanted outer lanes."""
    w, h = 640, 360
    rows = np.linspace(150, 359, 18)
    outer = 40 + 2.2 * (rows - rows[0])  # a slanted outer lane (dx/dy = 3.4 at 1640x590)
    gapped = outer.copy()
    gapped[6:11] = np.nan
    pts = lambda x: np.stack([x[np.isfinite(x)], rows[np.isfinite(x)]], 1)  # noqa: E731
    iou = M.lane_masks_iou([pts(gapped)], [pts(outer)], w, h)[0, 0]
    assert iou > 0.97  # the gap is drawn over: the two points around it are joined (old: ~0.7)
    # the full 30 px stroke across the lane's direction: area = 30 x length (+ the round caps)
    m = CU.LaneMask(pts(outer) * (W_OFF / w, H_OFF / h))
    length = np.hypot(*np.diff(pts(outer) * (W_OFF / w, H_OFF / h), axis=0).T).sum()
    assert m.area == pytest.approx(30 * length + np.pi * 15**2, rel=0.02)
    # shifted sideways by half the drawn width measured horizontally: IoU ~1/3 whatever the slant
    slope = 2.2 * (W_OFF / w) / (H_OFF / h)
    shift = 15 * np.hypot(1, slope) * w / W_OFF
    iou_shift = M.lane_masks_iou([pts(outer + shift)], [pts(outer)], w, h)[0, 0]
    assert iou_shift == pytest.approx(1 / 3, abs=0.04)


def test_hungarian_not_greedy():
    w, h = 1640, 590
    rows = np.arange(100.0, 590.0, 10.0)
    vertical = lambda x: np.full(len(rows), float(x))  # noqa: E731
    gt = np.stack([vertical(400), vertical(420)])[None]
    pred = np.stack([vertical(412), vertical(425)])[None]
    assert M.culane_counts(pred, rows, gt, rows, w, h, 0.3)[0, 0] == 2
    assert M.f1(np.array([[1, 1, 1]])) == pytest.approx(0.5)


def test_small_frames_count_the_matches_scipys_assignment_counts(monkeypatch):
    """Enumerating every assignment of a few lanes gives the counts scipy's linear_sum_assignment gives,
    sparse and tied IoUs included; a tie that changes the counts is left to scipy itself."""
    from scipy.optimize import linear_sum_assignment

    def scipys(m, ious):
        rr, cc = linear_sum_assignment(-m)
        return [int((m[rr, cc] > t).sum()) for t in ious]

    rng = np.random.default_rng(5)
    for _ in range(400):
        m = rng.choice([0.0, 0.2, 0.31, 0.45, 0.5, 0.55, 0.7, 0.9, 1.0], size=tuple(rng.integers(1, 7, 2)), p=[0.4] + [0.075] * 8)
        if rng.random() < 0.5:
            m = np.where(m > 0, rng.random(m.shape), 0.0)
        assert CU._matched_over(m, (0.5, 0.3)) == scipys(m, (0.5, 0.3)), m
    tie = np.array([[0.6, 0.3], [0.3, 0.0]])  # 0.6 + 0.0 == 0.3 + 0.3: one pair over 0.5, or none
    calls = []
    monkeypatch.setattr("scipy.optimize.linear_sum_assignment", lambda c: calls.append(c) or linear_sum_assignment(c))
    assert CU._matched_over(tie, (0.5,)) == scipys(tie, (0.5,)) and len(calls) == 1
    assert CU._matched_over(np.array([[0.6, 0.3], [0.3, 0.2]]), (0.5,)) == [1] and len(calls) == 1  # unique best: no scipy
    ulp = np.array([[0.3, 0.1], [0.2, 0.0]])  # 0.3 + 0.0 vs 0.1 + 0.2 (= 0.30000000000000004): a tie all the same
    assert CU._matched_over(ulp, (0.25,)) == scipys(ulp, (0.25,)) and len(calls) == 2


def test_frames_solved_together_count_what_each_frame_alone_counts():
    """Contested frames of one shape are matched in one batch: each frame's counts are scipy's on that
    frame alone, whichever frames share its batch (ties that go to scipy among them)."""
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(11)
    for shape in ((2, 2), (3, 4), (4, 3), (5, 5)):
        m = rng.choice([0.0, 0.3, 0.45, 0.5, 0.6, 0.9], size=(60, *shape), p=[0.4] + [0.12] * 5)
        m[::7] = np.where(m[::7] > 0, rng.random(m[::7].shape), 0.0)
        m[3, :2, :2] = [[0.6, 0.3], [0.3, 0.0]]  # a tie that changes the counts
        got = CU._matched_over_frames(m, (0.5, 0.3))
        for f in range(len(m)):
            rr, cc = linear_sum_assignment(-m[f])
            assert list(got[f]) == [int((m[f][rr, cc] > t).sum()) for t in (0.5, 0.3)], (shape, f, m[f])


@pytest.mark.parametrize("w, h, noise", [(640, 360, 0.0), (1280, 720, 3.0)])
def test_row_spans_are_opencvs_pixels(w, h, noise):
    """Lanes as one span per row (no drawing) are exactly the pixels cv2.line draws on the full
    canvas, diagonal and long steps (their quadrilaterals) and lanes off every border included; the
    lanes the spans cannot hold (two runs in a row, turning back in y) go to OpenCV's drawing."""
    rng = np.random.default_rng(int(w + 10 * noise))
    rows = np.linspace(0.3 * h, h - 1, 16)
    lanes = 0
    for t in range(40):
        x = random_lanes(rng, w, h, rows, 4) + rng.normal(0, noise, (4, len(rows)))
        L = CU._Lanes(x[None], rows, w, h)
        for i, lane in zip(L.frames[0], as_official_lanes(x, rows, w, h)):
            full = official_draw(lane)
            np.testing.assert_array_equal(L.mask(i).full(), full)
            assert L.area[i] == full.sum()
            lanes += 1
    assert lanes > 100


def _similarity_or_0(a, b):
    try:
        return official_similarity(a, b)
    except ZeroDivisionError:  # both lanes entirely off the image: the official 0/0, parity's 0
        return 0.0


def test_lanes_with_two_runs_in_a_row_are_intersected_on_their_drawing():
    """Heavy noise makes lanes that turn back in y or run sideways (OpenCV's drawing, not spans): their
    IoU with span lanes, and with each other, equals the all-drawn IoU of full canvases."""
    rng = np.random.default_rng(11)
    w, h = 640, 360
    rows = np.linspace(0.4 * h, h - 1, 18)
    drawn = 0
    for t in range(30):
        g = random_lanes(rng, w, h, rows, 4)
        drawn += _check_pair_iou(g + rng.normal(0, 8, g.shape), g, rows, w, h)
    assert drawn > 5


def test_lanes_that_only_graze_are_paired_with_their_shared_pixels():
    """Pairs are intersected only where their boxes meet: lanes a stroke width apart (sharing one column,
    or none) and lanes whose ends share a few rows get the IoU of the full canvases, not 0 and not more."""
    w, h = 1640, 590  # the evaluator's canvas: no scaling
    rows = np.linspace(300, 580, 8)
    for dx in range(26, 34):  # strokes 30 px wide: from overlapping to apart
        g = np.full((1, len(rows)), 400.0)
        p = np.full((1, len(rows)), 400.0 + dx)
        _check_pair_iou(p, g, rows, w, h)
    for gap in range(26, 34):  # the predicted lane ends `gap` rows above the GT lane's top: their caps meet, or not
        g = np.full((1, len(rows)), 700.0)
        p_rows = np.linspace(100, rows[0] - gap, 6)
        _check_pair_iou(np.full((1, len(p_rows)), 700.0), g, rows, w, h, p_rows)
        _check_pair_iou(g, np.full((1, len(p_rows)), 700.0), p_rows, w, h, rows)  # and the GT lane above


def _check_pair_iou(p, g, rows, w, h, p_rows=None):
    """p at p_rows (default: rows), g at rows: IoU from the spans equals the full canvases'. Returns how
    many predicted lanes were drawn (not spans)."""
    p_rows = rows if p_rows is None else p_rows
    P, G = CU._Lanes(p[None], p_rows, w, h), CU._Lanes(g[None], rows, w, h)
    frame, r, c, iou = CU._pairs(P, G)
    got = np.zeros((len(P.frames[0]), len(G.frames[0])))
    got[r, c] = iou
    op, og = as_official_lanes(p, p_rows, w, h), as_official_lanes(g, rows, w, h)
    ref = np.array([[_similarity_or_0(a, b) for b in og] for a in op]).reshape(len(op), len(og))
    np.testing.assert_allclose(got, ref, atol=1e-12, rtol=0)
    return len(P.drawn)


def test_each_steps_stamp_is_opencvs_two_point_polyline():
    R, dl, dr = SP.disc(WIDTH)
    for dx, dy in [(1, 1), (2, 0), (0, 3), (-5, 7), (12, -2), (31, 32)]:
        o = 60
        ref = np.zeros((2 * o, 2 * o), np.uint8)
        cv2.line(ref, (o, o), (o + dx, o + dy), 1, WIDTH)
        q = np.array([[[o, o], [o + dx, o + dy]]], np.int64)
        left, right, ok = SP.lane_spans(q, 2 * o, 2 * o, WIDTH)
        if not ok[0]:
            assert SP.stamp_extension(dx, dy, WIDTH) is None
            continue
        got = CU.LaneMask.from_spans(left[0], right[0])
        full = np.zeros_like(ref)
        full[got.y0 : got.y1, got.x0 : got.x1] = got.mask
        np.testing.assert_array_equal(full, ref, err_msg=str((dx, dy)))


def _opencv_mask(q, w, h):
    m = np.zeros((h, w), np.uint8)
    cv2.polylines(m, [np.asarray(q, np.int32).reshape(-1, 1, 2)], False, 1, thickness=WIDTH)
    return m


def _spans_mask(left, right, w):
    cols = np.arange(w)
    return ((cols >= left[:, None]) & (cols <= right[:, None])).astype(np.uint8)


def _u_turn(x0, y0, down, across, back):
    """Integer vertices going `down` rows, `across` columns along the bottom row (2 px steps), then
    `back` rows up again."""
    ys = list(range(y0, y0 + down + 1))
    xs = [x0] * len(ys)
    xs += list(range(x0 + 2, x0 + across + 1, 2))
    ys += [y0 + down] * (len(xs) - len(ys))
    ys += list(range(y0 + down - 1, y0 + down - back - 1, -1))
    xs += [x0 + across] * (len(ys) - len(xs))
    return np.array(list(zip(xs, ys)), np.int64)


def test_lanes_turning_back_in_y_are_spans_where_their_pieces_meet(span_rasteriser):
    """The compiled rasteriser cuts a lane where it turns back in y and joins its monotone pieces row by
    row: a U whose arms overlap is one run per row (spans, equal to OpenCV's drawing); arms a gap apart
    are two runs in their rows (not ok: drawn by the caller). The numpy path leaves both to drawing."""
    w, h = 400, 300
    narrow, wide = _u_turn(100, 60, 120, 10, 80), _u_turn(100, 60, 120, 60, 80)
    assert len(narrow) == 1 + 120 + 5 + 80 and len(wide) == 1 + 120 + 30 + 80
    left, right, ok = SP.lane_spans(np.stack([narrow[:200], wide[:200]]), w, h, WIDTH)
    if span_rasteriser == "numpy":
        assert not ok.any()
        return
    assert ok.tolist() == [True, False]
    np.testing.assert_array_equal(_spans_mask(left[0], right[0], w), _opencv_mask(narrow[:200], w, h))
    runs = [len(np.flatnonzero(np.diff(np.r_[0, r, 0]) == 1)) for r in _opencv_mask(wide[:200], w, h)]
    assert max(runs) == 2  # OpenCV's drawing of the wide U has two runs in a row


def test_compiled_and_numpy_spans_agree_on_random_lanes(span_rasteriser):
    """Random integer lanes (steps up to 40 px, some monotone, some turning back, some off the image):
    wherever both rasterisers hold a lane as spans they are the same; where only the compiled one does
    (a lane turning back), its spans are OpenCV's drawing."""
    if span_rasteriser == "numpy":
        pytest.skip("compares the two: runs once")
    rng = np.random.default_rng(5)
    w, h = 640, 360
    both = compiled_only = 0
    for trial in range(120):
        G, S, m = int(rng.integers(1, 6)), int(rng.integers(2, 120)), [3, 8, 33][trial % 3]
        step = rng.integers(-m, m + 1, (G, S, 2))
        step[..., 1] = np.abs(step[..., 1]) // (1 + trial % 4)
        if trial % 5 == 0:
            step[..., 1] *= -1
        if trial % 2:
            step[:, S // 2 :, 1] *= -1  # turns back half way
        start = np.stack([rng.integers(-60, w + 60, G), np.where(trial % 5 == 0, h - 10, rng.integers(-20, 60, G))], 1)
        q = start[:, None, :] + np.cumsum(step, axis=1)
        a = SP._lane_spans_native(q, w, h, WIDTH)
        b = SP._lane_spans_numpy(q, w, h, WIDTH)
        assert (a[2] >= b[2]).all()
        for k in np.flatnonzero(a[2] & b[2]):
            np.testing.assert_array_equal(a[0][k], b[0][k])
            np.testing.assert_array_equal(a[1][k], b[1][k])
            both += 1
        for k in np.flatnonzero(a[2] & ~b[2]):
            np.testing.assert_array_equal(_spans_mask(a[0][k], a[1][k], w), _opencv_mask(q[k], w, h))
            compiled_only += 1
    assert both > 50 and compiled_only > 10


def _lanes_hugging(border, rng, w, h, G, S):
    """G lanes of S integer vertices, steps up to 24 px, running along `border` of a w x h image
    (within ~25 px of it, some vertices outside it), monotone in y."""
    along = rng.integers(1, 25, (G, S))
    across = rng.integers(-6, 7, (G, S))
    if border in ("left", "right"):
        x = np.clip(rng.integers(-20, 26, (G, 1)) + np.cumsum(across, axis=1), -25, 30)
        x = x if border == "left" else w - 1 - x
        y = rng.integers(-10, h // 3, (G, 1)) + np.cumsum(along, axis=1)
    else:
        rise = np.where(rng.random((G, S)) < 0.3, rng.integers(8, 13, (G, S)), 0)  # flatter steps have two runs a row
        y = np.clip(rng.integers(-12, 12, (G, 1)) + np.cumsum(rise, axis=1), -14, 30)  # spans reach 16 px beyond
        y = y if border == "top" else h - 1 - y[:, ::-1]
        x = rng.integers(-10, w // 3, (G, 1)) + np.cumsum(along, axis=1)
        if border == "corner":  # down the left border into the bottom-left corner
            x = np.clip(rng.integers(-20, 26, (G, 1)) + np.cumsum(across, axis=1), -25, 30)
            y = h - 1 - np.cumsum(along[:, ::-1], axis=1)[:, ::-1] + rng.integers(-20, 26, (G, 1))
    return np.stack([x, y], axis=2).astype(np.int64)


@pytest.mark.parametrize("border", ["left", "right", "top", "bottom", "corner"])
def test_stamps_crossing_the_image_border_are_opencvs_pixels(span_rasteriser, border):
    """OpenCV clips a stroke's outline edges to the image before stepping along them, so a stamp
    crossing a border is not always its translated copy: such lanes are drawn unless the lane's discs
    cover the pixels it changes. Sparse lanes along each border: every lane held as spans is OpenCV's
    drawing on the full image, and some were left to drawing because of the border alone."""
    rng = np.random.default_rng(["left", "right", "top", "bottom", "corner"].index(border))
    w, h = 240, 160
    q = _lanes_hugging(border, rng, w, h, 150, 8)
    left, right, ok = SP.lane_spans(q, w, h, WIDTH)
    for k in np.flatnonzero(ok):
        np.testing.assert_array_equal(_spans_mask(left[k], right[k], w), _opencv_mask(q[k], w, h), err_msg=str(q[k].tolist()))
    fn = SP._lane_spans_native if span_rasteriser == "native" else SP._lane_spans_numpy
    before = fn(q, w, h, WIDTH)[2]
    assert ok.sum() > 60 and (before & ~ok).sum() > 0


def test_the_border_check_of_many_groups_is_each_groups_own():
    """_Lanes checks the border for all its groups of lanes (vertex counts differing) in one pass: each
    group's flags are those the group gets alone, lanes near every border, some flagged."""
    rng = np.random.default_rng(17)
    w, h = 240, 160
    qs = [_lanes_hugging(border, rng, w, h, 40, S) for border, S in (("left", 5), ("bottom", 8), ("corner", 3), ("top", 8), ("right", 11))]
    oks = [SP.lane_spans(q, w, h, WIDTH, border=False)[2] for q in qs]
    together = SP.clipped_at_border_of_groups(qs, oks, w, h, WIDTH)
    alone = [SP.clipped_at_border(q, ok, w, h, WIDTH) for q, ok in zip(qs, oks)]
    for a, b in zip(together, alone):
        np.testing.assert_array_equal(a, b)
    assert sum(int(a.sum()) for a in alone) > 0 and SP.clipped_at_border_of_groups([], [], w, h, WIDTH) == []


def test_a_border_stamps_difference_is_where_opencvs_clipped_drawing_differs():
    """border_stamp_difference(step, sides, distances) equals, offset by the first vertex, the pixels
    where the two-point polyline drawn on a full image differs from the same polyline drawn unclipped
    (on a larger canvas): at each border and corner, at distances inside and outside the image."""
    rng = np.random.default_rng(11)
    w, h, pad = 200, 150, 100
    L, H, N = SP._LOW, SP._HIGH, SP._NONE
    found = 0
    for _ in range(300):
        sx, sy = [(L, N), (H, N), (N, L), (N, H), (L, L), (H, H), (L, H)][int(rng.integers(0, 7))]
        dist_x, dist_y = (int(d) if s != N else 0 for s, d in zip((sx, sy), rng.integers(-14, 18, 2)))
        dx, dy = (int(d) for d in rng.integers(-24, 25, 2))
        x = dist_x if sx == L else w - 1 - dist_x if sx == H else w // 2
        y = dist_y if sy == L else h - 1 - dist_y if sy == H else h // 2
        if (sx == N and not 0 <= x + dx < w) or (sy == N and not 0 <= y + dy < h):
            continue
        image = _opencv_mask([[x, y], [x + dx, y + dy]], w, h)
        free = _opencv_mask([[x + pad, y + pad], [x + dx + pad, y + dy + pad]], w + 2 * pad, h + 2 * pad)[pad:-pad, pad:-pad]
        ys, xs = np.nonzero(image != free)
        want = sorted(zip((xs - x).tolist(), (ys - y).tolist()))
        got = sorted(map(tuple, SP.border_stamp_difference(dx, dy, sx, dist_x, sy, dist_y, WIDTH).tolist()))
        assert got == want, (dx, dy, sx, dist_x, sy, dist_y)
        found += bool(want)
    assert found > 5


def test_compiled_rasteriser_rejects_arrays_of_the_wrong_size(span_rasteriser):
    """The C code checks every buffer against the lane geometry: a wrong one is a ValueError, never a
    read or write past its end."""
    if SP.native is None:
        pytest.skip("the compiled rasteriser")
    R, dl, dr = SP.disc(WIDTH)
    ext = SP._extensions(WIDTH)
    q = np.zeros((2, 5, 2), np.int32)
    left, right, ok = np.empty((2, 50), np.int32), np.empty((2, 50), np.int32), np.empty(2, np.uint8)
    args = [dl.astype(np.int32), dr.astype(np.int32), ext.state, ext.start, ext.count, *ext.flat, 60, 50, SP.MAX_STEP, 16]
    ext.learn(np.asarray(SP.native.lane_spans(2, 5, q, *args, left, right, ok), np.int64))  # the still step, if new
    assert SP.native.lane_spans(2, 5, q, *args, left, right, ok) == []
    with pytest.raises(ValueError, match="left is 392 bytes, expected 400"):
        SP.native.lane_spans(2, 5, q, *args, left[:, :-1].copy(), right, ok)
    with pytest.raises(ValueError, match="vertices"):
        SP.native.lane_spans(3, 5, q, *args, left, right, ok)
    with pytest.raises(ValueError, match="odd length"):
        SP.native.lane_spans(2, 5, q, dl[:-1].astype(np.int32), *args[1:], left, right, ok)


def test_steps_near_the_border_compiled_are_numpys(span_rasteriser, monkeypatch):
    """The compiled scan for the steps a border can change lists numpy's (lane, step) pairs in numpy's
    order: lanes inside, along and across every border, not-ok lanes skipped, one-vertex lanes."""
    if span_rasteriser == "numpy":
        pytest.skip("compares the two: runs once")
    rng = np.random.default_rng(8)
    for S in (1, 2, 7, 60):
        q = np.stack([rng.integers(-40, W_OFF + 40, (50, S)), rng.integers(-40, H_OFF + 40, (50, S))], axis=2).astype(np.int64)
        q[:10] = q[:10] // 4 + 200  # well inside
        ok = rng.random(50) > 0.2
        got = SP._near_border_steps(q, ok, 17, W_OFF, H_OFF)
        monkeypatch.setattr(SP, "native", None)
        want = SP._near_border_steps(q, ok, 17, W_OFF, H_OFF)
        monkeypatch.undo()
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w, err_msg=f"S {S}")
    with pytest.raises(ValueError, match="int64"):
        SP.native.near_border_steps(2, 3, np.zeros((2, 3, 2), np.int64), np.ones(1, np.uint8), 17, W_OFF, H_OFF,
                                    np.empty(4, np.int64), np.empty(4, np.int64))


def test_span_boxes_compiled_are_numpys(span_rasteriser, monkeypatch):
    """Each lane's rows, columns and pixels from its spans, compiled, equal numpy's: lanes with gaps,
    one row, the first and last rows, and no pixel at all."""
    if span_rasteriser == "numpy":
        pytest.skip("compares the two: runs once")
    rng = np.random.default_rng(9)
    left = rng.integers(-5, W_OFF, (40, H_OFF)).astype(np.int32)
    right = (left + rng.integers(-30, 30, left.shape)).astype(np.int32)
    for k, rows in ((0, slice(None)), (1, slice(0, -1)), (2, slice(1, None)), (3, slice(None))):  # no pixel; the last row; the first
        left[k, rows], right[k, rows] = W_OFF, -1
    left[1, -1], right[1, -1], left[2, 0], right[2, 0] = 10, 20, 10, 20
    right[3, 300] = left[3, 300] = 7  # one pixel
    got = SP.span_boxes(left, right)
    monkeypatch.setattr(SP, "native", None)
    want = SP.span_boxes(left, right)
    for g, w, name in zip(got, want, ("top", "bottom", "x0", "x1", "area")):
        np.testing.assert_array_equal(g, w, err_msg=name)
    top, bottom, x0, x1, area = got
    assert (top[0], bottom[0], area[0]) == (H_OFF, H_OFF, 0) and (top[1], bottom[1]) == (H_OFF - 1, H_OFF)
    assert (top[2], bottom[2]) == (0, 1) and (top[3], bottom[3], x0[3], x1[3], area[3]) == (300, 301, 7, 7, 1)


def test_pair_intersections_are_the_spans_shared_pixels(span_rasteriser):
    """Pixels shared by pairs of span lanes, counted over the rows both boxes hold, equal the plain sum
    over every row (both paths); a lane or row outside the arrays is an error in the compiled one."""
    rng = np.random.default_rng(10)
    la = rng.integers(0, 200, (30, 60)).astype(np.int32)
    ra = (la + rng.integers(-20, 40, la.shape)).astype(np.int32)
    lb = rng.integers(0, 200, (20, 60)).astype(np.int32)
    rb = (lb + rng.integers(-20, 40, lb.shape)).astype(np.int32)
    a, b = rng.integers(0, 30, 3000), rng.integers(0, 20, 3000)
    top_a, bottom_a, *_ = SP.span_boxes(la, ra)
    top_b, bottom_b, *_ = SP.span_boxes(lb, rb)
    got = SP.pair_intersections(la, ra, lb, rb, a, b, np.maximum(top_a[a], top_b[b]), np.minimum(bottom_a[a], bottom_b[b]))
    np.testing.assert_array_equal(got, SP.intersections(la[a], ra[a], lb[b], rb[b]))
    assert got.min() == 0 and got.max() > 0
    if span_rasteriser == "compiled":
        out = np.empty(1, np.int64)
        for lane, row in ((30, 0), (0, 61)):
            with pytest.raises(ValueError, match="outside the spans"):
                SP.native.pair_intersections(1, 60, la, ra, lb, rb, np.array([lane]), np.zeros(1, np.int64), np.zeros(1, np.int64),
                                             np.array([row]), out)


def test_every_steps_stamp_is_its_discs_and_the_pixels_painted_beyond_them(span_rasteriser):
    """The painter paints each vertex's disc (joining those one column apart on a row) and each step's
    pixels beyond its discs: for every step up to MAX_STEP, a two-vertex lane painted so is OpenCV's
    stamp, and so is a row of vertices one column apart and a lane of that step repeated."""
    if SP.native is None:
        pytest.skip("the compiled painter")
    M, o = SP.MAX_STEP, 120
    for dx in range(-M, M + 1):
        for dy in range(-M, M + 1):
            for p in ([(o, o), (o + dx, o + dy)], [(o, o), (o + dx, o + dy), (o + 2 * dx, o + 2 * dy), (o + 2 * dx + 1, o + 2 * dy)]):
                p = np.array(p, np.int32)
                runs = SP.paint_runs(p, 0, 0, 2 * o + 1, 2 * o + 1, WIDTH)
                want = _lines_on_full_canvas(p)[: 2 * o + 1, : 2 * o + 1]
                np.testing.assert_array_equal(SP.mask_of_runs(*runs, 0, 0, 2 * o + 1, 2 * o + 1), want, err_msg=f"step ({dx}, {dy})")


def test_compiled_painter_rejects_arrays_of_the_wrong_size_and_stamps_outside_the_crop(span_rasteriser):
    """paint_runs checks its buffers, its steps and where each run lands: a ValueError, never a write past
    the crop; more runs than its outputs hold are counted, not written; its canvas is left clear."""
    if SP.native is None:
        pytest.skip("the compiled painter")
    q = np.array([[40, 40], [44, 39], [48, 39]], np.int32)
    st = SP._Stamps(WIDTH)  # its own table: only these two steps' stamps
    st.learn(np.array([(4 + SP.MAX_STEP) * SP._SIDE + (-1 + SP.MAX_STEP), (4 + SP.MAX_STEP) * SP._SIDE + SP.MAX_STEP]))
    table = st.table
    out = np.zeros((3, 400), np.int32)
    n = SP.native.paint_runs(3, q, *table, 0, 0, 90, 80, *out)
    np.testing.assert_array_equal(SP.mask_of_runs(*out[:, :n], 0, 0, 90, 80), _lines_on_full_canvas(q)[:80, :90])
    few = np.full((3, 5), -7, np.int32)
    assert SP.native.paint_runs(3, q, *table, 0, 0, 90, 80, *few) == n and (few == out[:, :5]).all()
    with pytest.raises(ValueError, match="one length"):
        SP.native.paint_runs(3, q, *table, 0, 0, 90, 80, out[0], out[1], out[2, :-1].copy())
    with pytest.raises(ValueError, match="vertices"):
        SP.native.paint_runs(4, q, *table, 0, 0, 90, 80, *out)
    with pytest.raises(ValueError, match="outside the crop"):
        SP.native.paint_runs(3, q, *table, 30, 0, 90, 80, *out)
    with pytest.raises(ValueError, match="longer than max_step"):
        SP.native.paint_runs(2, np.array([[0, 0], [SP.MAX_STEP + 1, 0]], np.int32), *table, 0, 0, 90, 80, *out)
    with pytest.raises(ValueError, match="without its stamp"):
        SP.native.paint_runs(2, np.array([[40, 40], [40, 41]], np.int32), *table, 0, 0, 90, 80, *out)
    with pytest.raises(ValueError, match="without its stamp"):  # its first step painted, then refused
        SP.native.paint_runs(3, np.array([[20, 20], [24, 19], [24, 20]], np.int32), *table, 0, 0, 90, 80, *out)
    assert SP.native.paint_runs(3, q, *table, 0, 0, 90, 80, *out) == n  # nothing of the refused lane left
    np.testing.assert_array_equal(SP.mask_of_runs(*out[:, :n], 0, 0, 90, 80), _lines_on_full_canvas(q)[:80, :90])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow to inf and inf - inf, on purpose
def test_compiled_spline_vertices_are_numpys(span_rasteriser):
    """The compiled spline (coefficients and samples), rounded, equals numpy's
    `_round(_spline_samples(_spline_coefficients(...)))` vertex for vertex: lanes on the canvas, far off
    it (clipped to +-2^30), and beyond float32 (inf, then NaN); three points (one equation) to many."""
    if span_rasteriser == "numpy":
        pytest.skip("compares the two: runs once")
    rng = np.random.default_rng(3)
    for scale in (1.0, 1e3, 1e9, 1e37):
        for n in (3, 4, 5, 18, 56):
            y = np.sort(rng.uniform(0, 590, (40, n)), axis=1)[:, ::-1] + np.arange(n)[::-1] * 1e-3
            x = rng.uniform(-200, 1800, (40, n)) * scale
            P = np.stack([x, y], axis=2).astype(np.float32)
            got = CU._spline_vertices(P)
            want = CU._round(CU._spline_samples(CU._spline_coefficients(P), P[:, -1]))
            assert got.dtype == want.dtype == np.int64
            np.testing.assert_array_equal(got, want, err_msg=f"scale {scale} n {n}")
