"""CULane F1 as the official CULane evaluator computes it (lane_compare.cpp, spline.cpp, counter.cpp).

What is drawn. Per lane: its present points (finite x >= 0; x < 0 is an absent point, as TuSimple's
-2) ordered bottom-up (decreasing y) as CULane's `.lines.txt` files and parity's exporter list them,
scaled to the evaluator's 1640x590 image (`x * 1640 / W`, `y * 590 / H`, float64) and stored as
float32, as the evaluator reads a file into `Point2f`. A lane of exactly two points is used as it is;
a longer one is resampled as `Spline::splineInterpTimes(points, 50)`: a natural cubic spline of x(t)
and y(t) over the cumulative chord length t (`Spline::cal_fun`, with its own arithmetic: float32
differences of the points, the same tridiagonal elimination, `a + b t + c t^2 + d t^3`), 50 equal
steps inside each segment (k = 0..49) and then the last point; the samples are stored as float32
(`Point2f`), rounded to integer pixels (`cvRound`, half to even) and every consecutive pair is drawn
with `cv::line(mask, p_n, p_n+1, 1, 30)` (LINE_8) on a 1640x590 mask.

What is matched. IoU of two lanes = |A & B| / (|A| + |B| - |A & B|) of their masks. GT and predicted
lanes are paired by the Hungarian algorithm maximising the total IoU (scipy's linear_sum_assignment;
the official code uses its own Kuhn-Munkres, which can break exact ties differently); a GT lane is a
true positive when its pair has IoU > the threshold (strictly; 0.5 for the official F1, 0.3 also
reported, both from one drawing). FP = predictions - TP, FN = GT - TP; F1 = 2TP / (2TP + FP + FN).

Where this differs from the official evaluator, on purpose:
- A lane with fewer than two present points is not a lane here: neither a prediction (no FP) nor a
  GT lane (no FN). The official evaluator would keep it and give it similarity 0 (an FP or an FN),
  but its files never hold one, because the writers (CULane's, and parity's exporter) drop such
  lanes; dropping them here is what the evaluator sees on parity's export.
- Two consecutive points at the same place (a zero chord) would divide by zero in `cal_fun`; the
  repeated point is dropped first. Anchor rows are distinct, so lanes built from rows never have one.
- `lane_masks_iou` gives IoU 0 where both masks are empty (lanes entirely off the image); the
  official 0/0 is NaN, which is not > any threshold either.
- Samples beyond +-2^30 px (no real lane; OpenCV's float -> int conversion would overflow there) are
  clipped, and an x beyond float32's range is no point.
- `t^3` is t*t*t rather than libm's pow(t, 3): at most an ulp of float64 apart, far below the
  float32 the samples are stored in.

Speed (drawing was the cost). Lanes of all frames are resampled together (grouped by point count;
the spline's coefficients, samples and their rounding compiled, numpy where no compiler) and, instead
of being drawn, held as one span of pixels per image row (`culane_spans`: the union of OpenCV's own
per-step stamps, exact where every row of the lane is one run; compiled, with numpy as the fallback);
areas, boxes and intersections are sums over rows (compiled). The few lanes that are not one run per
row (two runs in a row, a long near-horizontal step; for the numpy path any lane turning back in y)
are painted as their runs of pixels from the same stamps (`culane_spans.paint_runs`), or drawn with
cv2.polylines in their bounding box where the image border clips a stamp (the same caps and segments
as one cv::line per pair, consecutive samples on the same pixel merged), and intersected on their
runs. GT lanes are computed once per content for every runner scored on the same frames, and,
on the numpy path, a lane whose vertices equal one already rasterised (ONNX Runtime fp32's lanes
mostly round to torch's pixels) reuses its spans (found by a 64-bit key of all lanes at once, reused
only after comparing the vertices).
Only pairs whose bounding boxes meet are intersected, and only on the rows their boxes span; a drawn
lane is intersected as its runs of pixels. Frames where every lane overlaps at most one lane of the
other side skip the Hungarian algorithm (the assignment is forced, counted for all frames at once).
The others, up to 6 lanes a side, enumerate every assignment (all frames of the same lane counts at
once) and take scipy's only where two near-best assignments count differently (the counts of any
maximising assignment otherwise; scipy.optimize's import alone is ~0.9 s of a command).
tests/test_culane.py checks spans and drawings against an independent literal transcription
drawing full canvases.
"""
from __future__ import annotations

import collections
import functools
import itertools

import numpy as np

from . import culane_spans as SP

try:  # the compiled spline samples (parity/metrics/_culane_spline.c), built at install where a C compiler is
    from . import _culane_spline as _spline_native
except ImportError:
    _spline_native = None

CULANE_WIDTH_PX = 30
CULANE_IMAGE_SIZE = (1640, 590)  # (width, height) of the official evaluator's canvas
CULANE_IMAGE_WIDTH = float(CULANE_IMAGE_SIZE[0])
SPLINE_STEPS = 50
_PAD = CULANE_WIDTH_PX // 2 + 2  # the drawing reaches 15 px (round caps, polygon edges) from a point
_CHUNK_FRAMES = 256  # frames resampled and drawn together (bounds the memory of the samples)
_CHUNK_LANES = 64  # lanes per spline evaluation and span computation
_MASK_CACHE_BYTES = 256 << 20  # per cache: GT spans and drawn lanes kept for the next runner scored on the same frames


# ---- resampling: Spline::splineInterpTimes, vectorised over lanes of the same point count -------
def _spline_coefficients(pts: np.ndarray):
    """pts [G, n, 2] float32 (n >= 3, no zero chord) -> per segment (a, b, c, d) [G, n-1, 2] and the
    chord h [G, n-1], with the official `cal_fun`'s arithmetic: differences of the float32 points in
    float32 (float - float in the C++), the rest in float64, the same elimination order."""
    G, n, _ = pts.shape
    d = (pts[:, 1:] - pts[:, :-1]).astype(np.float64)
    h = np.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])  # pow(float, 2) is exact in double
    slope = d / h[..., None]
    A = h[:, :-1]
    B = 2 * (h[:, :-1] + h[:, 1:])
    C = h[:, 1:].copy()
    D = 6 * (slope[:, 1:] - slope[:, :-1])  # [G, n - 2, 2]
    C[:, 0] = C[:, 0] / B[:, 0]
    D[:, 0] = D[:, 0] / B[:, 0, None]
    for i in range(1, n - 2):  # TDMA, forward
        tmp = B[:, i] - A[:, i] * C[:, i - 1]
        C[:, i] = C[:, i] / tmp
        D[:, i] = (D[:, i] - A[:, i, None] * D[:, i - 1]) / tmp[:, None]
    M = np.zeros((G, n, 2))  # second derivatives; natural ends M[0] = M[n-1] = 0
    M[:, n - 2] = D[:, n - 3]
    for i in range(n - 4, -1, -1):  # back substitution
        M[:, i + 1] = D[:, i] - C[:, i, None] * M[:, i + 2]
    hh = h[..., None]
    b = slope - (2 * hh * M[:, :-1] + hh * M[:, 1:]) / 6
    return pts[:, :-1].astype(np.float64), b, M[:, :-1] / 2, (M[:, 1:] - M[:, :-1]) / (6 * hh), h


def _spline_samples(coef, last: np.ndarray, times: int = SPLINE_STEPS) -> np.ndarray:
    """(a, b, c, d, h) of G lanes and their last points [G, 2] -> [G, (n-1) * times + 1, 2] float32:
    `a + b t + c t^2 + d t^3` at t = (h / times) k, k < times, stored as Point2f, then the last point."""
    a, b, c, d, h = coef
    G, m = h.shape
    t1 = (h / times)[..., None] * np.arange(times, dtype=np.float64)  # [G, n-1, times]
    t2 = t1 * t1
    t3 = t2 * t1  # pow(t, 3) in the C++: at most an ulp apart
    out = np.empty((G, m * times + 1, 2), np.float32)
    for j in range(2):  # x, then y: each with the samples on the inner axis (numpy is slow on an inner axis of 2)
        v = b[..., j, None] * t1
        v += a[..., j, None]
        v += c[..., j, None] * t2
        v += d[..., j, None] * t3
        out[:, :-1, j] = v.reshape(G, -1)  # stored as float32, as Point2f
    out[:, -1] = last
    return out


def spline_interp_times(pts: np.ndarray, times: int = SPLINE_STEPS) -> np.ndarray:
    """The official `splineInterpTimes(points, times)` of G lanes of n >= 3 points each: pts [G, n, 2]
    (float32, as Point2f; no two consecutive points equal) -> [G, (n - 1) * times + 1, 2] float32."""
    pts = np.asarray(pts, np.float32)
    return _spline_samples(_spline_coefficients(pts), pts[:, -1], times)


def spline_points(pts: np.ndarray, times: int = SPLINE_STEPS) -> np.ndarray:
    """One lane's (N, 2) points at 1640x590 -> the float32 points the evaluator draws between: the
    points themselves for two, `splineInterpTimes(points, 50)` for more."""
    p = _drop_repeats(np.asarray(pts, np.float32))
    return p if len(p) <= 2 else spline_interp_times(p[None], times)[0]


def _drop_repeats(p: np.ndarray) -> np.ndarray:
    if len(p) < 2:
        return p
    keep = np.concatenate([[True], (p[1:] != p[:-1]).any(axis=1)])
    if keep.all():
        return p
    p = p[keep]
    return p if len(p) >= 2 else np.concatenate([p, p])  # one place: the evaluator draws p -> p


def _pixels(samples: np.ndarray) -> np.ndarray:
    """Float32 samples [S, 2] -> the integer points cv::line receives (cvRound: half to even), with
    consecutive repeats merged (a zero-length segment only repeats a round cap already drawn: the
    same pixels); at least two points (p -> p draws the cap)."""
    return _pixels_batch(np.asarray(samples, np.float32)[None])[0]


def _pixels_batch(samples: np.ndarray) -> list[np.ndarray]:
    q = _round(samples).astype(np.int32)
    keep = np.ones(q.shape[:2], bool)
    keep[:, 1:] = (q[:, 1:] != q[:, :-1]).any(axis=2)
    out = []
    for qi, ki in zip(q, keep):
        qi = qi[ki]
        out.append(qi if len(qi) >= 2 else np.concatenate([qi, qi]))
    return out


# ---- drawing ------------------------------------------------------------------------------------
def _painted(p: np.ndarray, x0: int, y0: int, x1: int, y1: int, clipped: bool | None = None) -> tuple[np.ndarray, ...] | None:
    """Pixel vertices p[S, 2] as OpenCV draws them, within [y0:y1, x0:x1], as runs of pixels (image row,
    first, last column), from each step's stamp (culane_spans.paint_runs): several times faster than
    cv2.polylines on a lane of a few hundred steps. Where the border clips a stamp it draws differently,
    so a lane near it is painted only when no such pixel escapes its discs (`clipped_at_border`, or
    `clipped` where the caller found it for many lanes at once), as the span rasteriser does; None: it
    is drawn."""
    if SP.native is None:
        return None
    W, H = CULANE_IMAGE_SIZE
    lo, hi = p.min(axis=0), p.max(axis=0)
    if (lo > _PAD).all() and hi[0] < W - 1 - _PAD and hi[1] < H - 1 - _PAD:  # every stamp inside the image
        return SP.paint_runs(p, x0, y0, x1 - x0, y1 - y0, CULANE_WIDTH_PX)
    if (lo < -SP._NEAR).any() or hi[0] >= W + SP._NEAR or hi[1] >= H + SP._NEAR:
        return None
    if clipped is None:
        clipped = SP.clipped_at_border(p[None], np.ones(1, bool), W, H, CULANE_WIDTH_PX)[0]
    if clipped:
        return None
    ux0, uy0 = lo - _PAD
    whole = SP.paint_runs(p, int(ux0), int(uy0), int(hi[0] + _PAD + 1 - ux0), int(hi[1] + _PAD + 1 - uy0), CULANE_WIDTH_PX)
    if whole is None:
        return None
    rows, first, last = whole  # cropped to the image's part
    first, last = np.maximum(first, x0), np.minimum(last, x1 - 1)
    keep = (rows >= y0) & (rows < y1) & (first <= last)
    return rows[keep], first[keep], last[keep]


class LaneMask:
    """One lane drawn as the official evaluator draws it, kept as its bounding-box crop.

    `LaneMask(points)` takes one lane's (N >= 2, 2) points at 1640x590 in drawing order."""

    __slots__ = ("x0", "y0", "x1", "y1", "_mask", "area", "_runs")

    def __init__(self, pts: np.ndarray | None = None, *, pixels: np.ndarray | None = None, clipped: bool | None = None):
        """`clipped`: whether the image border clips a stamp of these pixels where no disc of the lane
        covers it (culane_spans.clipped_at_border), where the caller knows; None: found if needed."""
        self._runs = None
        if pixels is None:
            pixels = _pixels(spline_points(pts))
        self._draw(pixels, clipped)

    def _draw(self, p: np.ndarray, clipped: bool | None = None) -> None:
        W, H = CULANE_IMAGE_SIZE
        self.x0 = int(max(p[:, 0].min() - _PAD, 0))
        self.y0 = int(max(p[:, 1].min() - _PAD, 0))
        self.x1 = int(min(p[:, 0].max() + _PAD + 1, W))
        self.y1 = int(min(p[:, 1].max() + _PAD + 1, H))
        if self.x1 <= self.x0 or self.y1 <= self.y0:  # entirely off the image: draws nothing
            self.x1, self.y1 = self.x0, self.y0
            self._mask, self.area = np.zeros((0, 0), np.uint8), 0
            return
        self._mask, self._runs = None, _painted(p, self.x0, self.y0, self.x1, self.y1, clipped)
        if self._runs is not None:  # its mask is made if another drawn lane meets it
            self.area = int((self._runs[2] - self._runs[1] + 1).sum())
            return
        import cv2

        self._mask = np.zeros((self.y1 - self.y0, self.x1 - self.x0), np.uint8)
        q = (p - (self.x0, self.y0)).astype(np.int32)
        cv2.polylines(self._mask, [q.reshape(-1, 1, 2)], False, 1, thickness=CULANE_WIDTH_PX)
        self.area = int(np.count_nonzero(self._mask))

    @classmethod
    def from_spans(cls, left: np.ndarray, right: np.ndarray) -> "LaneMask":
        """A lane given as row spans (left > right: an empty row) as its bounding-box crop."""
        m = cls.__new__(cls)
        m._runs = None
        rows = np.flatnonzero(right >= left)
        if not len(rows):
            m.x0 = m.y0 = m.x1 = m.y1 = 0
            m._mask, m.area = np.zeros((0, 0), np.uint8), 0
            return m
        m.y0, m.y1 = int(rows[0]), int(rows[-1]) + 1
        m.x0, m.x1 = int(left[rows].min()), int(right[rows].max()) + 1
        cols = np.arange(m.x0, m.x1)
        m._mask = ((cols >= left[m.y0 : m.y1, None]) & (cols <= right[m.y0 : m.y1, None])).astype(np.uint8)
        m.area = int(np.count_nonzero(m._mask))
        return m

    @property
    def mask(self) -> np.ndarray:
        """The lane's bounding-box crop (uint8), made from its runs the first time it is asked for."""
        if self._mask is None:
            self._mask = SP.mask_of_runs(*self._runs, self.x0, self.y0, self.x1 - self.x0, self.y1 - self.y0)
        return self._mask

    @property
    def nbytes(self) -> int:
        return (self._mask.nbytes if self._mask is not None else 0) + (sum(r.nbytes for r in self._runs) if self._runs else 0)

    def full(self) -> np.ndarray:
        """The 1640x590 mask (for tests and pictures)."""
        W, H = CULANE_IMAGE_SIZE
        out = np.zeros((H, W), np.uint8)
        out[self.y0 : self.y1, self.x0 : self.x1] = self.mask
        return out

    def runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The mask as runs of pixels (image row, first column, last column), row by row, left to right;
        found once (a drawn lane meets several lanes of the other side)."""
        if self._runs is None:
            if not self.area:
                self._runs = (np.zeros(0, np.int64),) * 3
            else:
                h, w = self.mask.shape
                flat = np.zeros(h * (w + 1) + 1, bool)  # a zero before the first row and after each row
                flat[1:].reshape(h, w + 1)[:, :w] = self.mask
                edge = np.flatnonzero(flat[1:] != flat[:-1])  # a run's first pixel, then one past its last
                start, end = edge[0::2], edge[1::2]
                row = start // (w + 1)
                self._runs = (row + self.y0, start - row * (w + 1) + self.x0, end - 1 - row * (w + 1) + self.x0)
        return self._runs

    def pixels_within(self, left: np.ndarray, right: np.ndarray) -> int:
        """How many of the lane's pixels lie in the row spans [left[y], right[y]] of the image."""
        rows, first, last = self.runs()
        return int(np.clip(np.minimum(last, right[rows]) - np.maximum(first, left[rows]) + 1, 0, None).sum())

    def intersection(self, other: "LaneMask") -> int:
        x0, y0 = max(self.x0, other.x0), max(self.y0, other.y0)
        x1, y1 = min(self.x1, other.x1), min(self.y1, other.y1)
        if x1 <= x0 or y1 <= y0:
            return 0
        a = self.mask[y0 - self.y0 : y1 - self.y0, x0 - self.x0 : x1 - self.x0]
        b = other.mask[y0 - other.y0 : y1 - other.y0, x0 - other.x0 : x1 - other.x0]
        return int(np.count_nonzero(a & b))


def _iou(pm: list[LaneMask], gm: list[LaneMask]) -> np.ndarray:
    out = np.zeros((len(pm), len(gm)))
    for i, a in enumerate(pm):
        for j, b in enumerate(gm):
            inter = a.intersection(b)
            if inter:
                out[i, j] = inter / (a.area + b.area - inter)
    return out


# ---- lanes from arrays --------------------------------------------------------------------------
def _frame_vertices(x: np.ndarray, rows, image_width: float, image_height: float):
    """x[T, L, R] at `rows` (source px; NaN or x < 0 = no point) -> groups of lanes with >= 2 points
    as (frame [G], lane [G], integer vertices [G, S, 2] the evaluator draws between: cvRound of the
    float32 samples, repeats kept)."""
    W, H = CULANE_IMAGE_SIZE
    x = np.asarray(x, np.float64)
    rows = np.asarray(rows, np.float64)
    order = np.argsort(-rows, kind="stable")  # bottom-up
    x = x[..., order]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(x) & (x >= 0)
    with np.errstate(over="ignore"):
        X = (np.where(valid, x, 0.0) * W / image_width).astype(np.float32)  # x * 1640 / W, read as Point2f
    valid &= np.isfinite(X)  # beyond float32 (> 3e38 px): no point
    Y = (rows[order] * H / image_height).astype(np.float32)
    cnt = valid.sum(axis=2)
    for n in np.unique(cnt[cnt >= 2]):
        t, l = np.nonzero(cnt == n)
        idx = np.argsort(~valid[t, l], axis=1, kind="stable")[:, :n]  # the present points, in order
        P = np.stack([np.take_along_axis(X[t, l], idx, axis=1), Y[idx]], axis=2)  # [G, n, 2] float32
        zero = (P[:, 1:] == P[:, :-1]).all(axis=2).any(axis=1)  # a repeated point (not with distinct rows)
        for k in np.flatnonzero(zero):
            yield t[k : k + 1], l[k : k + 1], _round(spline_points(P[k])[None])
        ok = np.flatnonzero(~zero)
        for s in range(0, len(ok), _CHUNK_LANES):
            sl = ok[s : s + _CHUNK_LANES]
            yield t[sl], l[sl], _round(P[sl]) if n == 2 else _spline_vertices(P[sl])


def _spline_vertices(P: np.ndarray) -> np.ndarray:
    """_round(_spline_samples(...)) of lanes P[G, n, 2] float32 (n >= 3, no zero chord): compiled where
    it built (coefficients and samples, the same float64 operations in the same order: the same
    vertices), numpy otherwise."""
    if _spline_native is None:
        return _round(_spline_samples(_spline_coefficients(P), P[:, -1]))
    G, n, _ = P.shape
    out = np.empty((G, (n - 1) * SPLINE_STEPS + 1, 2), np.int64)
    _spline_native.spline_lanes(G, n, SPLINE_STEPS, np.ascontiguousarray(P, np.float32), out)
    return out


def _frame_pixels(x: np.ndarray, rows, image_width: float, image_height: float) -> list[list[np.ndarray]]:
    """Per frame, per lane with >= 2 points (in lane order), the integer points cv::line receives,
    consecutive repeats merged (`_pixels`): what the OpenCV path draws."""
    out: list[dict] = [{} for _ in range(len(x))]
    for t, l, q in _frame_vertices(x, rows, image_width, image_height):
        for tk, lk, p in zip(t, l, _pixels_batch(q)):
            out[tk][lk] = p
    return [[f[k] for k in sorted(f)] for f in out]


class _Lanes:
    """One side's lanes of a chunk of frames: row spans of every lane, and the drawn masks of the
    few whose rows are not one run (`drawn`); `frames[t]` lists frame t's lanes in lane order."""

    def __init__(self, x, rows, image_width: float, image_height: float, groups=None):
        """`groups`: the lanes' (frame, lane, vertices) groups, where the caller has them (`_frame_vertices`
        of x, or a subset of them: the other frames then have no lane)."""
        H = CULANE_IMAGE_SIZE[1]
        T = len(x)
        ids, lefts, rights, self.drawn = [], [], [], {}
        n = 0
        groups = list(_frame_vertices(x, rows, image_width, image_height) if groups is None else groups)
        rasterised = [_lane_spans(q) for _, _, q in groups]
        # every lane's: the ok lanes' spans hold only where it is False, the others are painted only there
        clipped = SP.clipped_at_border_of_groups([q for *_, q in groups], [np.ones(len(q), bool) for *_, q in groups],
                                                 *CULANE_IMAGE_SIZE, CULANE_WIDTH_PX)
        for (t, l, q), (left, right, ok), border in zip(groups, rasterised, clipped):
            drawn = np.flatnonzero(~ok | border)
            for k, pixels in zip(drawn, _pixels_batch(q[drawn]) if len(drawn) else ()):  # painted from OpenCV's stamps, or drawn by OpenCV
                m = _mask(pixels, bool(border[k]))
                spans = SP.spans_of_runs(*m.runs(), H)
                if spans is None:
                    self.drawn[n + k] = m
                else:
                    left[k], right[k] = spans
            ids.append(np.stack([t, l, n + np.arange(len(t))], axis=1))
            lefts.append(left)
            rights.append(right)
            n += len(t)
        self.left = np.concatenate(lefts) if lefts else np.zeros((0, H), np.int32)
        self.right = np.concatenate(rights) if rights else np.zeros((0, H), np.int32)
        ids = np.concatenate(ids) if ids else np.zeros((0, 3), np.int64)
        ids = ids[np.lexsort((ids[:, 1], ids[:, 0]))]
        self.order = ids[:, 2]  # lane ids frame by frame, in lane order
        self.cut = np.searchsorted(ids[:, 0], np.arange(T + 1))  # frame t's lanes: order[cut[t]:cut[t + 1]]
        self.frames = [self.order[self.cut[t] : self.cut[t + 1]] for t in range(T)]
        self._boxes()

    def _boxes(self) -> None:
        """Each lane's rows [top, bottom), columns [x0, x1] (empty lanes: top = bottom) and pixels; pairs
        whose boxes do not meet share no pixel and are never intersected."""
        H = self.left.shape[1]
        self.top, self.bottom, self.x0, self.x1, self.area = SP.span_boxes(self.left, self.right)
        for i, m in self.drawn.items():  # their spans are not their pixels
            self.top[i], self.bottom[i], self.x0[i], self.x1[i] = (m.y0, m.y1, m.x0, m.x1 - 1) if m.area else (H, H, SP._BIG, -SP._BIG)
            self.area[i] = m.area
        self.is_drawn = np.zeros(len(self.left), bool)
        self.is_drawn[list(self.drawn)] = True

    @property
    def nbytes(self) -> int:
        return self.left.nbytes + self.right.nbytes + sum(m.nbytes for m in self.drawn.values())

    def mask(self, i: int) -> "LaneMask":
        if i in self.drawn:
            return self.drawn[i]
        return LaneMask.from_spans(self.left[i], self.right[i])


class _Recent:
    """Values by content key, the least recently used dropped once their bytes pass `budget`. An
    OrderedDict: a plain dict's oldest key is found by skipping every slot popped before it, which
    made eviction quadratic once a cache filled."""

    def __init__(self, budget: int, size):
        self.budget, self.size, self.bytes, self.store = budget, size, 0, collections.OrderedDict()

    def get(self, key: bytes, make):
        value = self.find(key)
        if value is None:
            value = make()
            self.bytes += self.size(value)
            self.store[key] = value
        while self.bytes > self.budget and len(self.store) > 1:
            self.bytes -= self.size(self.store.popitem(last=False)[1])
        return value

    def put(self, key, value) -> None:
        """Keep `value` under `key` (replacing what was there), the least recently used dropped past the budget."""
        old = self.store.pop(key, None)
        if old is not None:
            self.bytes -= self.size(old)
        self.get(key, lambda: value)

    def find(self, key: bytes):
        """The value kept under `key` (now the most recently used), or None; nothing is made."""
        value = self.store.get(key)
        if value is not None:
            self.store.move_to_end(key)
        return value


def _lane_spans(q: np.ndarray):
    """SP.lane_spans of lanes [G, S, 2] before the border check (`_Lanes` checks all its groups at once),
    each lane's spans computed once per distinct set of vertices:
    runners whose lanes round to the same pixels as torch's (ONNX Runtime fp32: nearly every lane)
    reuse torch's instead of rasterising them again. Exact: a lane's spans depend on its vertices only,
    and a kept lane is reused only when its vertices equal these (the key only finds it). The compiled
    rasteriser (~8 us a lane) computes every lane: finding, comparing and keeping lanes cost more than
    the lanes they saved (a replay's F1 calls, AMD EPYC: 0.206 ms a frame without the cache, 0.225 with)."""
    if SP.native is not None:
        return SP.lane_spans(q, *CULANE_IMAGE_SIZE, CULANE_WIDTH_PX, border=False)
    v = q.astype(np.int32)  # vertices are within +-2^30 (`_round`)
    keys = _vertex_keys(v)
    found = []
    for k in range(len(q)):
        f = _SPANS.find(keys[k])
        found.append(f if f is not None and np.array_equal(f[0], v[k]) else None)
    miss = [k for k, f in enumerate(found) if f is None]
    H = CULANE_IMAGE_SIZE[1]
    left, right, ok = np.empty((len(q), H), np.int32), np.empty((len(q), H), np.int32), np.empty(len(q), bool)
    for k, f in enumerate(found):
        if f is not None:
            left[k], right[k], ok[k] = f[1:]
    if miss:  # the lanes not kept, in one vectorised pass
        left[miss], right[miss], ok[miss] = SP.lane_spans(q[miss], *CULANE_IMAGE_SIZE, CULANE_WIDTH_PX, border=False)
    for k in miss:
        _SPANS.put(keys[k], (v[k].copy(), left[k].copy(), right[k].copy(), bool(ok[k])))
    return left, right, ok


def _vertex_keys(v: np.ndarray) -> list[tuple[int, int]]:
    """A 64-bit key per lane of vertices v[G, S, 2] (a random linear form mod 2^64, and S), for all
    lanes at once: hashing each lane's bytes was a tenth of CULane F1. Only a lookup key: equal
    vertices are checked before anything is reused."""
    flat = np.ascontiguousarray(v).view(np.uint64).reshape(len(v), -1)  # each vertex's (x, y) as one word
    h = (flat * _key_weights(flat.shape[1])).sum(axis=1, dtype=np.uint64)  # wraps mod 2^64
    return [(int(x), v.shape[1]) for x in h]


@functools.lru_cache(maxsize=64)
def _key_weights(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 2**64, n, dtype=np.uint64, endpoint=False) | np.uint64(1)


_GT_LANES = _Recent(_MASK_CACHE_BYTES, lambda lanes: lanes.nbytes)  # content hash of a GT chunk -> its _Lanes
# (GT chunk, frame, IoUs, the frame's vertices) -> (the key's bytes, its counts): the runners of a case
# are scored one after another, so a few chunks' frames are all a reuse needs (~16 KB a frame)
_COUNTS = _Recent(32 << 20, lambda v: v[0] + v[1].nbytes)
_KEY_OVERHEAD = 200  # bytes a key holds beside its vertices' (the tuple, the GT digest, the bytes object's header)
_SPANS = _Recent(_MASK_CACHE_BYTES, lambda v: v[0].nbytes + v[1].nbytes + v[2].nbytes)  # key of a lane's vertices -> (them, left, right, one run)


def clear_caches() -> None:
    """Forget every kept GT chunk, span and drawing (what a process that just started holds: a
    benchmark timing one run after another in the same process calls this before each)."""
    for cache in (_GT_LANES, _SPANS, _MASKS, _COUNTS):
        cache.store.clear()
        cache.bytes = 0


def _gt_key(gt: np.ndarray, rows, image_width: float, image_height: float) -> bytes:
    """A GT chunk's content key: its lanes, rows and image size."""
    import hashlib

    h = hashlib.sha1(np.ascontiguousarray(gt, np.float64).tobytes())
    h.update(np.ascontiguousarray(rows, np.float64).tobytes())
    h.update(np.array([image_width, image_height, *gt.shape], np.float64).tobytes())
    return h.digest()


def _gt_lanes(key: bytes, gt: np.ndarray, rows, image_width: float, image_height: float) -> _Lanes:
    """GT lanes as spans once for every runner, pipeline and perturbation scored on the same frames
    (kept by content, not by name: `key` is `_gt_key` of the rest)."""
    return _GT_LANES.get(key, lambda: _Lanes(gt, rows, image_width, image_height))


def _frame_keys(groups, T: int) -> list[bytes]:
    """Per frame, its lanes' vertices as bytes (each lane's index and vertex count as int64, then its
    int32 vertices, in lane order): two frames whose bytes are equal draw the same pixels. A group's
    lanes are laid out as one buffer, each lane's bytes a slice of it."""
    rows, frame, lane = [], [], []
    for t, l, q in groups:
        head = np.stack([l, np.full(len(l), q.shape[1])], axis=1).astype(np.int64).view(np.uint8)
        v = np.ascontiguousarray(q, np.int32).reshape(len(q), -1).view(np.uint8)  # vertices are within +-2^30 (`_round`)
        buf, w = np.concatenate([head, v], axis=1).tobytes(), head.shape[1] + v.shape[1]
        rows += [buf[i : i + w] for i in range(0, len(buf), w)]
        frame.append(t)
        lane.append(l)
    if not rows:
        return [b""] * T
    frame, lane = np.concatenate(frame), np.concatenate(lane)
    order = np.lexsort((lane, frame))
    cut = np.searchsorted(frame[order], np.arange(T + 1)).tolist()
    order = order.tolist()
    return [b"".join([rows[i] for i in order[cut[f] : cut[f + 1]]]) for f in range(T)]


def _round(samples: np.ndarray) -> np.ndarray:
    """cvRound of the float32 samples (half to even); beyond +-2^30 px (no real lane) clipped, where
    OpenCV's conversion would overflow."""
    if samples.dtype.kind != "f":  # already whole pixels
        return np.clip(samples, -(2**30), 2**30).astype(np.int64)
    r = np.nan_to_num(samples, nan=0.0)
    np.clip(r, -(2.0**30), 2.0**30, out=r)
    return np.rint(r, out=r).astype(np.int64)


def _pairs(P: _Lanes, G: _Lanes):
    """Every (predicted, GT) pair of the same frame whose boxes meet, as flat arrays: frame, the two
    lanes' places in their frame (r, c), and their IoU. Pairs not listed have IoU 0."""
    n_p, n_g = np.diff(P.cut), np.diff(G.cut)
    per = n_p * n_g
    frame = np.repeat(np.arange(len(per)), per)
    k = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
    r, c = k // n_g[frame], k % n_g[frame]
    a, b = P.order[P.cut[frame] + r], G.order[G.cut[frame] + c]
    meet = (P.top[a] < G.bottom[b]) & (G.top[b] < P.bottom[a]) & (P.x0[a] <= G.x1[b]) & (G.x0[b] <= P.x1[a])
    frame, r, c, a, b = frame[meet], r[meet], c[meet], a[meet], b[meet]
    inter = SP.pair_intersections(P.left, P.right, G.left, G.right, a, b, np.maximum(P.top[a], G.top[b]), np.minimum(P.bottom[a], G.bottom[b]))
    for k in np.flatnonzero(P.is_drawn[a] | G.is_drawn[b]):  # a lane whose rows are not one run: counted on its drawing
        inter[k] = _drawn_intersection(P, a[k], G, b[k])
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(inter > 0, inter / (P.area[a] + G.area[b] - inter), 0.0)
    return frame, r, c, iou


def _drawn_intersection(P: _Lanes, i: int, G: _Lanes, j: int) -> int:
    if i in P.drawn and j in G.drawn:
        return P.drawn[i].intersection(G.drawn[j])
    if i in P.drawn:
        return P.drawn[i].pixels_within(G.left[j], G.right[j])
    return G.drawn[j].pixels_within(P.left[i], P.right[i])


# ---- public API ---------------------------------------------------------------------------------
def lane_masks_iou(pred_lanes, gt_lanes, image_width: float, image_height: float) -> np.ndarray:
    """[Lp, Lg] IoU of one frame's lanes as the official evaluator computes it.

    Each lane is an (N, 2) array of (x, y) source-image points, drawn in the order given (CULane files
    list them bottom-up); non-finite points are dropped, and a lane with fewer than two points left
    has IoU 0 with everything (the official similarity 0). Points are scaled to 1640x590 first.
    """
    W, H = CULANE_IMAGE_SIZE

    def mask(lane) -> LaneMask | None:
        p = np.asarray(lane, np.float64).reshape(-1, 2)
        p = p[np.isfinite(p).all(axis=1)]
        if len(p) < 2:
            return None
        return LaneMask(np.stack([p[:, 0] * W / image_width, p[:, 1] * H / image_height], axis=1).astype(np.float32))

    pm, gm = [mask(p) for p in pred_lanes], [mask(g) for g in gt_lanes]
    out = np.zeros((len(pm), len(gm)))
    ip, ig = [i for i, m in enumerate(pm) if m], [j for j, m in enumerate(gm) if m]
    if ip and ig:
        out[np.ix_(ip, ig)] = _iou([pm[i] for i in ip], [gm[j] for j in ig])
    return out


def culane_counts_at(pred, pred_rows, gt, gt_rows, image_width: float, image_height: float, ious=(0.5, 0.3)) -> list[np.ndarray]:
    """[T, 3] (TP, FP, FN) per frame at each IoU threshold in `ious`, from one drawing of each lane.

    pred x[T, Lp, Rp] at pred_rows[Rp], gt x[T, Lg, Rg] at gt_rows[Rg], source-image pixels of an
    image_width x image_height image; NaN or x < 0 = no point. Lanes with fewer than two points are
    not lanes (see the module docstring).
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    T = len(gt)
    if len(pred) != T:
        raise ValueError(f"pred has {len(pred)} frames, gt {T}")
    out = np.zeros((len(ious), T, 3))
    for s in range(0, T, _CHUNK_FRAMES):
        chunk = slice(s, min(s + _CHUNK_FRAMES, T))
        out[:, chunk] = _chunk_counts(pred[chunk], pred_rows, gt[chunk], gt_rows, image_width, image_height, tuple(ious))
    return list(out)


def _chunk_counts(pred, pred_rows, gt, gt_rows, image_width: float, image_height: float, ious: tuple) -> np.ndarray:
    """[len(ious), T, 3] counts of a chunk of frames. A frame whose lanes round to the same vertices as
    a frame already scored against the same GT frame (another runner: ONNX Runtime fp32's lanes are
    nearly always torch's to the pixel) takes its counts: the counts depend on those pixels only, and
    the whole key, vertices included, must be equal (a dict compares the bytes, not a hash)."""
    T = len(pred)
    g_key = _gt_key(gt, gt_rows, image_width, image_height)
    groups = list(_frame_vertices(pred, pred_rows, image_width, image_height))
    keys = [(g_key, t, ious, f) for t, f in enumerate(_frame_keys(groups, T))]
    known = [_COUNTS.find(k) for k in keys]
    todo = np.array([c is None for c in known], bool)
    out = np.zeros((len(ious), T, 3))
    if todo.any():
        P = _Lanes(pred, pred_rows, image_width, image_height, groups=_frames_of(groups, todo))
        G = _gt_lanes(g_key, gt, gt_rows, image_width, image_height)
        n_p, n_g = np.diff(P.cut), np.diff(G.cut)
        tp = _true_positives(*_pairs(P, G), n_p, n_g, ious)
        out[:] = np.stack([np.stack([tp[j], n_p - tp[j], n_g - tp[j]], axis=1) for j in range(len(ious))])
    for t in range(T):
        if todo[t]:
            _COUNTS.put(keys[t], (len(keys[t][3]) + _KEY_OVERHEAD, out[:, t].copy()))
        else:
            out[:, t] = known[t][1]
    return out


def _frames_of(groups, keep: np.ndarray):
    """The (frame, lane, vertices) groups of the frames `keep` marks."""
    for t, l, q in groups:
        sel = keep[t]
        if sel.any():
            yield t[sel], l[sel], q[sel]


def _true_positives(frame, r, c, iou, n_p, n_g, ious) -> list[np.ndarray]:
    """Per frame, the GT lanes matched with IoU > each threshold. A frame where every lane overlaps at
    most one lane of the other side has its assignment forced; the others go to `_matched_over`."""
    T = len(n_p)
    touch = iou > 0
    frame, r, c, iou = frame[touch], r[touch], c[touch], iou[touch]
    width = int(max(n_p.max(initial=0), n_g.max(initial=0))) + 1
    contested = np.zeros(T, bool)
    for lane in (r, c):
        key = frame * width + lane
        u, n = np.unique(key, return_counts=True)
        contested[u[n > 1] // width] = True
    free = ~contested[frame]
    tp = [np.bincount(frame[free & (iou > t)], minlength=T) for t in ious]
    shape = n_p * (width + 1) + n_g  # contested frames are solved together per (predicted, GT) lane count
    for key in np.unique(shape[contested]):
        frames = np.flatnonzero(contested & (shape == key))
        at = contested[frame] & (shape[frame] == key)  # those frames' pairs
        m = np.zeros((len(frames), n_p[frames[0]], n_g[frames[0]]))
        m[np.searchsorted(frames, frame[at]), r[at], c[at]] = iou[at]
        counts = _matched_over_frames(m, ious)
        for j in range(len(ious)):
            tp[j][frames] = counts[:, j]
    return tp


_TIE = 1e-9  # assignments whose total IoU is this close to the best are ties (scipy's own sums err by ~1e-15)
_ENUMERATED = 6  # up to this many lanes a side, every assignment is enumerated


def _matched_over(m: np.ndarray, ious) -> list[int]:
    """How many pairs of the assignment maximising the total IoU (scipy's linear_sum_assignment) have
    IoU > each threshold, for one frame's IoU matrix m (see `_matched_over_frames`)."""
    return [int(k) for k in _matched_over_frames(np.asarray(m, np.float64)[None], ious)[0]]


def _matched_over_frames(m: np.ndarray, ious) -> np.ndarray:
    """`_matched_over` of F frames' IoU matrices m[F, p, g] at once: [F, len(ious)]. Frames of a few
    lanes enumerate every assignment: where the best is unique, or every near-best gives the same
    counts, any maximising algorithm gives those counts, and importing scipy.optimize (~0.9 s of a
    command) is left to the frames that need its tie-breaking."""
    F = len(m)
    a = m.transpose(0, 2, 1) if m.shape[1] > m.shape[2] else m  # rows <= columns: each row gets a distinct column
    out = np.zeros((F, len(ious)), np.int64)
    todo = np.ones(F, bool)
    if a.shape[2] <= _ENUMERATED and a.shape[1]:
        cols = _injections(*a.shape[1:])
        chosen = a[:, np.arange(a.shape[1]), cols]  # [F, assignments, rows]
        total = chosen.sum(axis=2)
        near = total >= total.max(axis=1, keepdims=True) - _TIE
        counts = np.stack([(chosen > thr).sum(axis=2) for thr in ious], axis=2)  # [F, assignments, thresholds]
        first = counts[np.arange(F), near.argmax(axis=1)]
        agree = ((counts == first[:, None]).all(axis=2) | ~near).all(axis=1)
        out[agree], todo = first[agree], ~agree
    for f in np.flatnonzero(todo):
        from scipy.optimize import linear_sum_assignment

        rr, cc = linear_sum_assignment(-m[f])
        out[f] = [(m[f][rr, cc] > thr).sum() for thr in ious]
    return out


@functools.lru_cache(maxsize=64)
def _injections(rows: int, cols: int) -> np.ndarray:
    """Every assignment of `rows` rows to distinct columns of `cols`: [cols! / (cols - rows)!, rows]."""
    return np.array(list(itertools.permutations(range(cols), rows)), np.int64).reshape(-1, rows)


_MASKS = _Recent(_MASK_CACHE_BYTES, lambda m: m.nbytes)  # sha1 of a lane's pixels -> its LaneMask


def _mask(q: np.ndarray, clipped: bool | None = None) -> LaneMask:
    """A lane with two runs in a row, drawn once per distinct set of pixels (a reduced-precision
    runner's lanes mostly round to the same pixels as torch's); `clipped` as LaneMask's."""
    import hashlib

    return _MASKS.get(hashlib.sha1(np.ascontiguousarray(q).tobytes()).digest(), lambda: LaneMask(pixels=q, clipped=clipped))


def culane_counts(pred, pred_rows, gt, gt_rows, image_width: float, image_height: float, iou: float = 0.5) -> np.ndarray:
    """[T, 3] (TP, FP, FN) per frame at one IoU threshold (see `culane_counts_at`)."""
    return culane_counts_at(pred, pred_rows, gt, gt_rows, image_width, image_height, (iou,))[0]


def f1(counts: np.ndarray) -> float:
    tp, fp, fn = np.asarray(counts).reshape(-1, 3).sum(axis=0)
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan")
