"""The official CULane evaluator's lane strokes as one span per image row, without drawing them.

`cv::polylines(mask, lane, false, 1, 30)` draws, for every pair of consecutive integer vertices, a
filled disc of radius 15 at both ends and the quadrilateral between them (OpenCV's ThickLine), so a
lane's mask is the union of one *stamp* per segment: the two-point polyline [v_i, v_i+1]. OpenCV's
integer rasterisation is translation invariant for integer vertices, so a stamp depends only on its
step d = v_i+1 - v_i; each step's stamp is drawn once, by OpenCV itself, on a small canvas and kept.

When the lane's vertices are monotone in y and every stamp is row-convex (one run of pixels per
row), the union is row-convex too: the segments meeting a row form one run of consecutive indices,
and consecutive stamps share the disc at their common vertex. Each row of the mask is then the
interval [min of the stamps' lefts, max of their rights], computed here as (a) the discs: the
leftmost/rightmost vertex of each row slid over the disc's 31 rows, plus (b) for the steps whose
quadrilateral reaches beyond its two discs (diagonals, longer steps), those rows' extents. Areas and
intersections are then sums over rows of interval lengths and overlaps: exact, and no pixel is drawn.

Anything else (a lane that turns back in y, a step whose stamp has two runs in a row, a step longer
than MAX_STEP, vertices far above or below the image) is left to the caller, which draws it with
OpenCV; tests/test_culane.py checks spans against OpenCV's drawing on full canvases.
"""
from __future__ import annotations

import functools

import numpy as np

MAX_STEP = 32  # longer steps (sparse samples of long segments) are drawn by the caller
_ROWS_OFF = 64  # rows kept above and below the image for vertices just outside it
_NEAR = 16  # vertices may lie this far above or below the image (their discs reach into it)
_FAR = 1 << 28  # |x| beyond this is far off any image: clipped, so spans fit int32
_BIG = np.int32(1 << 29)


def _draw(points, thickness: int, size: int) -> np.ndarray:
    import cv2

    m = np.zeros((size, size), np.uint8)
    cv2.polylines(m, [np.asarray(points, np.int32).reshape(-1, 1, 2)], False, 1, thickness=thickness)
    return m


def _row_extents(m: np.ndarray, o: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Rows (offset by -o) with pixels, their first and last columns (offset by -o), and whether every
    row is one run."""
    rows = np.flatnonzero(m.any(axis=1))
    first = m[rows].argmax(axis=1)
    last = m.shape[1] - 1 - m[rows, ::-1].argmax(axis=1)
    convex = bool((m[rows].sum(axis=1, dtype=np.int64) == last - first + 1).all())
    return rows - o, first - o, last - o, convex


@functools.lru_cache(maxsize=4)
def disc(thickness: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(radius R, left[2R+1], right[2R+1]): the cap OpenCV draws at a vertex, row r - R covering
    columns [c + left[r], c + right[r]] of a vertex at column c."""
    o = thickness + 2
    rows, first, last, convex = _row_extents(_draw([(o, o), (o, o)], thickness, 2 * o + 1), o)
    R = int(-rows[0])
    if not (convex and np.array_equal(rows, np.arange(-R, R + 1))):
        raise RuntimeError(f"OpenCV's {thickness} px cap is not one run per row: the span rasteriser does not apply")
    return R, first.astype(np.int64), last.astype(np.int64)


@functools.lru_cache(maxsize=8192)
def stamp_extension(dx: int, dy: int, thickness: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The rows where segment [0, (dx, dy)]'s stamp reaches beyond its two end discs, as (row offsets,
    lefts, rights) from the first vertex; None when the stamp is not one run per row."""
    R, dl, dr = disc(thickness)
    o = R + MAX_STEP + 2
    rows, first, last, convex = _row_extents(_draw([(o, o), (o + dx, o + dy)], thickness, 2 * o + 1), o)
    if not convex:
        return None
    lo, hi = np.full(len(rows), _BIG), np.full(len(rows), -_BIG)
    for cy, cx in ((0, 0), (dy, dx)):  # the two discs' extents in each stamp row
        r = rows - cy
        on = np.abs(r) <= R
        lo[on] = np.minimum(lo[on], cx + dl[r[on] + R])
        hi[on] = np.maximum(hi[on], cx + dr[r[on] + R])
    ext = (first < lo) | (last > hi)
    return rows[ext].astype(np.int64), first[ext].astype(np.int64), last[ext].astype(np.int64)


def lane_spans(q: np.ndarray, width: int, height: int, thickness: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer vertices q[G, S, 2] (x, y; repeats allowed) of G lanes -> (left, right [G, height]
    int32, clipped to the image, left > right for an empty row; ok [G]): the rows of each lane's
    mask where `ok`; lanes not ok are the caller's to draw."""
    G, S, _ = q.shape
    R, dl, dr = disc(thickness)
    x, y = np.clip(q[..., 0], -_FAR, _FAR).astype(np.int32), q[..., 1]
    d = np.diff(q, axis=1)
    ok = ((d[..., 1] <= 0).all(axis=1) | (d[..., 1] >= 0).all(axis=1))
    ok &= ((y >= -_NEAR) & (y < height + _NEAR)).all(axis=1) & (np.abs(d) <= MAX_STEP).all(axis=(1, 2))
    Hp = height + 2 * _ROWS_OFF
    yy = (np.clip(y, -_NEAR, height + _NEAR - 1) + _ROWS_OFF).astype(np.int64)
    flat = (np.arange(G)[:, None] * Hp + yy).ravel()
    minx, maxx = np.full(G * Hp, _BIG), np.full(G * Hp, -_BIG)
    np.minimum.at(minx, flat, x.ravel())
    np.maximum.at(maxx, flat, x.ravel())
    minx, maxx = minx.reshape(G, Hp), maxx.reshape(G, Hp)
    left, right = np.full((G, height), _BIG), np.full((G, height), -_BIG)
    # Only the image rows some vertex's disc reaches (lanes start at the horizon, not the top).
    top = max(int(yy.min()) - _ROWS_OFF - R, 0) if yy.size else height
    bottom = min(int(yy.max()) - _ROWS_OFF + R + 1, height) if yy.size else 0
    for r in range(-R, R + 1):  # a vertex on row v covers row v + r with its disc's row r
        rows = slice(_ROWS_OFF - r + top, _ROWS_OFF - r + bottom)
        np.minimum(left[:, top:bottom], minx[:, rows] + np.int32(dl[r + R]), out=left[:, top:bottom])
        np.maximum(right[:, top:bottom], maxx[:, rows] + np.int32(dr[r + R]), out=right[:, top:bottom])
    _add_extensions(left, right, x, y, d, ok, height, thickness)
    np.clip(left, 0, width, out=left)  # an empty row stays left > right
    np.clip(right, -1, width - 1, out=right)
    return left, right, ok


def _add_extensions(left, right, x, y, d, ok, height, thickness) -> None:
    """The quadrilaterals reaching beyond their discs; a lane with a step that is not row-convex is not ok."""
    g, i = np.nonzero((d != 0).any(axis=2) & ok[:, None])
    if not len(g):
        return
    code = (d[g, i, 0] + MAX_STEP) * (2 * MAX_STEP + 1) + (d[g, i, 1] + MAX_STEP)
    # The distinct steps by a table over every possible step, not a sort: tens of thousands of steps, 4,225 codes.
    seen = np.zeros((2 * MAX_STEP + 1) ** 2, bool)
    seen[code] = True
    codes = np.flatnonzero(seen)
    left, right = left.reshape(-1), right.reshape(-1)
    for c in codes:  # a few distinct steps per lane set: one vectorised pass per step and extension row
        ext = stamp_extension(int(c // (2 * MAX_STEP + 1)) - MAX_STEP, int(c % (2 * MAX_STEP + 1)) - MAX_STEP, thickness)
        if ext is not None and not len(ext[0]):
            continue
        at = np.flatnonzero(code == c)
        if ext is None:
            ok[g[at]] = False
            continue
        gv, iv = g[at], i[at]
        xv, yv, base = x[gv, iv], y[gv, iv], gv * height
        for r, el, er in zip(*ext):
            yy = yv + r
            keep = (yy >= 0) & (yy < height)
            flat, xk = (base + yy, xv) if keep.all() else ((base + yy)[keep], xv[keep])
            np.minimum.at(left, flat, xk + np.int32(el))
            np.maximum.at(right, flat, xk + np.int32(er))


def areas(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.clip(right - left + 1, 0, None).sum(axis=-1, dtype=np.int64)


def intersections(la, ra, lb, rb) -> np.ndarray:
    """Pixels two row-span masks share, per pair (leading axes broadcast)."""
    return np.clip(np.minimum(ra, rb) - np.maximum(la, lb) + 1, 0, None).sum(axis=-1, dtype=np.int64)


def spans_of_runs(rows: np.ndarray, first: np.ndarray, last: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A drawn lane's runs (image row, first, last column) as row spans, or None when a row has two runs."""
    if len(rows) > 1 and (np.diff(rows) == 0).any():
        return None
    left, right = np.full(height, 1, np.int32), np.full(height, 0, np.int32)
    left[rows], right[rows] = first, last
    return left, right
