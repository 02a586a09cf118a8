"""The official CULane evaluator's lane strokes as one span per image row, without drawing them.

`cv::polylines(mask, lane, false, 1, 30)` draws, for every pair of consecutive integer vertices, a
filled disc of radius 15 at both ends and the quadrilateral between them (OpenCV's ThickLine), so a
lane's mask is the union of one *stamp* per segment: the two-point polyline [v_i, v_i+1]. OpenCV's
integer rasterisation is translation invariant for integer vertices away from the image border, so a
stamp depends only on its step d = v_i+1 - v_i; each step's stamp is drawn once, by OpenCV itself, on
a small canvas and kept. At the border it is not: OpenCV clips the quadrilateral's outline before
stepping along it, which can move a pixel of a stamp crossing a border; a lane with such a pixel that
none of its discs covers is left to OpenCV's drawing (`clipped_at_border`, below).

When the lane's vertices are monotone in y and every stamp is row-convex (one run of pixels per
row), the union is row-convex too: the segments meeting a row form one run of consecutive indices,
and consecutive stamps share the disc at their common vertex. Each row of the mask is then the
interval [min of the stamps' lefts, max of their rights], computed here as (a) the discs: the
leftmost/rightmost vertex of each row slid over the disc's 31 rows (the disc is symmetric and widest
at its centre, so per distinct half-width only the extreme vertex of the widest window of rows at
that width counts: 10 windows, each from two power-of-two windows, instead of 31 shifts), plus (b) for
the steps whose quadrilateral reaches beyond its two discs (diagonals, longer steps), those rows'
extents, all steps at once from a table of every step's extension. Areas and intersections are then
sums over rows of interval lengths and overlaps: exact, and no pixel is drawn.

Anything else (a lane that turns back in y, a step whose stamp has two runs in a row, a step longer
than MAX_STEP, vertices far above or below the image) is left to the caller, which draws it with
OpenCV; tests/test_culane.py checks spans against OpenCV's drawing on full canvases.

The same, compiled (`_culane_spans.c`, built at install; `native` is None where it did not build and
the numpy path below runs): lane by lane, the disc slid over each row's extreme vertices as one
vectorised pass per disc row, then the extensions, from the same OpenCV stamps (the extension table
is passed in flat). It also takes lanes that turn back in y: cut into monotone pieces, each one run
per row, joined row by row where they overlap or touch; a row where they leave a gap is two runs and
the lane goes to the caller's drawing. Both paths give the same spans wherever both hold a lane.

What the caller draws is painted here where it can be (`paint_runs`, compiled): the union of the
lane's stamps, returned as the lane's runs of pixels (a drawn lane's mask is made only where two drawn
lanes meet). Every stamp holds the discs at its two vertices, so the union is every vertex's disc plus
each step's pixels beyond its discs (as OpenCV drew them once per step); a step along a row is its
discs' hull, so a row's consecutive vertices are painted as one wide disc (both checked for every
step, against OpenCV). The same translation invariance makes it exact away from the border; near it,
only where `clipped_at_border` clears the lane. A nearly flat lane (OpenCV's stamp of a step such as
(4, -1) has a hole: two runs in a row) is painted, its runs found, in ~35 us (~65 us painting each
stamp whole), where cv2.polylines takes ~120 us to draw it into its crop (a replay's painted lanes,
AMD EPYC; a lane-change sweep's: ~48 us, from ~91).
"""
from __future__ import annotations

import functools

import numpy as np

try:  # the compiled rasteriser (parity/metrics/_culane_spans.c), built at install where a C compiler is
    from . import _culane_spans as native
except ImportError:
    native = None

MAX_STEP = 32  # longer steps (sparse samples of long segments) are drawn by the caller
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
    half = np.arange(R, 2 * R + 1)
    if not (np.array_equal(first, first[::-1]) and np.array_equal(last, last[::-1])
            and (np.diff(first[half]) >= 0).all() and (np.diff(last[half]) <= 0).all()):
        raise RuntimeError(f"OpenCV's {thickness} px cap is not symmetric and convex in y: the span rasteriser does not apply")
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


def _disc_rows(v: np.ndarray, lo: int, n: int, off: np.ndarray, better) -> np.ndarray:
    """out[:, i] = better over |r| <= R of (v[:, lo + i - r] + off[R + r]), i < n: the disc's extents
    slid over each row's extreme vertex. `off` is symmetric and no better away from r = 0, so each row
    needs, per level of `off`, only the extreme of v over the widest window at that level plus the
    level; the windows' extremes come from a table of power-of-two windows (2 lookups each)."""
    R = len(off) // 2
    table = [v[:, lo - R : lo + n + R]]  # table[k][:, j]: the extreme of v[:, lo - R + j : ... + 2**k]
    while 2 ** len(table) <= 2 * R + 1:
        w, prev = 2 ** (len(table) - 1), table[-1]
        table.append(better(prev[:, :-w], prev[:, w:]))
    out = None
    for rho in range(R + 1):
        if rho < R and off[R + rho + 1] == off[R + rho]:
            continue  # a wider window has the same offset and no worse extreme
        k = (2 * rho + 1).bit_length() - 1
        t, w = table[k], 2**k
        m = better(t[:, R - rho : R - rho + n], t[:, R + rho - w + 1 : R + rho - w + 1 + n])
        m += np.int32(off[R + rho])
        out = m if out is None else better(out, m, out=out)
    return out


def lane_spans(q: np.ndarray, width: int, height: int, thickness: int, border: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer vertices q[G, S, 2] (x, y; repeats allowed; |x|, |y| <= 2^30) of G lanes -> (left, right
    [G, height] int32, clipped to the image, left > right for an empty row; ok [G]): the rows of each
    lane's mask where `ok`; lanes not ok are the caller's to draw (their rows are not these). Compiled
    where the extension built (`native`; it also holds lanes turning back in y), numpy otherwise.
    `border=False` leaves out `clipped_at_border`, for a caller that checks many groups at once (its
    ok lanes are then only ok once that check clears them)."""
    if native is not None and q.size:
        left, right, ok = _lane_spans_native(q, width, height, thickness)
    else:
        left, right, ok = _lane_spans_numpy(q, width, height, thickness)
    if border:
        ok &= ~clipped_at_border(q, ok, width, height, thickness)
    return left, right, ok


def _lane_spans_native(q, width, height, thickness):
    G, S, _ = q.shape
    R, dl, dr = disc(thickness)
    dl, dr = dl.astype(np.int32), dr.astype(np.int32)
    ext = _extensions(thickness)
    v = np.ascontiguousarray(q, np.int32)
    left, right, ok = np.empty((G, height), np.int32), np.empty((G, height), np.int32), np.empty(G, np.uint8)
    while unknown := native.lane_spans(G, S, v, dl, dr, ext.state, ext.start, ext.count, *ext.flat,
                                       width, height, MAX_STEP, _NEAR, left, right, ok):
        ext.learn(np.asarray(unknown, np.int64))  # steps met for the first time: OpenCV draws their stamps
    return left, right, ok.view(bool)


def _lane_spans_numpy(q, width, height, thickness):
    G, S, _ = q.shape
    R, dl, dr = disc(thickness)
    x, y = (np.clip(q[..., k], -_FAR, _FAR).astype(np.int32) for k in range(2))  # contiguous: numpy is slow on an axis of 2
    dx, dy = np.diff(q[..., 0], axis=1), np.diff(y, axis=1)  # dx unclipped: a step is long wherever it lies
    ok = ((dy <= 0).all(axis=1) | (dy >= 0).all(axis=1)) & ((y >= -_NEAR) & (y < height + _NEAR)).all(axis=1)
    ok &= (np.abs(dx) <= MAX_STEP).all(axis=1) & (np.abs(dy) <= MAX_STEP).all(axis=1)
    pad = _NEAR + R + MAX_STEP + 3  # rows kept above and below the image: every disc and extension of an ok lane lands in them
    Hp = height + 2 * pad
    yy = np.clip(y, -_NEAR, height + _NEAR - 1) + pad
    flat = (np.arange(G)[:, None] * Hp + yy).ravel()
    minx, maxx = np.full(G * Hp, _BIG), np.full(G * Hp, -_BIG)
    np.minimum.at(minx, flat, x.ravel())
    np.maximum.at(maxx, flat, x.ravel())
    minx, maxx = minx.reshape(G, Hp), maxx.reshape(G, Hp)
    left, right = np.full((G, Hp), _BIG), np.full((G, Hp), -_BIG)
    # Only the image rows some vertex's disc reaches (lanes start at the horizon, not the top).
    top = max(int(yy.min()) - pad - R, 0) if yy.size else height
    bottom = min(int(yy.max()) - pad + R + 1, height) if yy.size else 0
    if bottom > top:  # a vertex on row v covers row v + r with its disc's row r
        left[:, pad + top : pad + bottom] = _disc_rows(minx, pad + top, bottom - top, dl, np.minimum)
        right[:, pad + top : pad + bottom] = _disc_rows(maxx, pad + top, bottom - top, dr, np.maximum)
    _add_extensions(left, right, x, y + pad, dx, dy, ok, thickness)
    left, right = left[:, pad : pad + height], right[:, pad : pad + height]
    np.clip(left, 0, width, out=left)  # an empty row stays left > right
    np.clip(right, -1, width - 1, out=right)
    return left, right, ok


_SIDE = 2 * MAX_STEP + 1  # steps (dx, dy) with |dx|, |dy| <= MAX_STEP, coded (dx + MAX_STEP) * _SIDE + dy + MAX_STEP
_STILL = MAX_STEP * _SIDE + MAX_STEP  # the code of (0, 0): a repeated vertex, nothing beyond its disc


class _Extensions:
    """Every step's extension beyond its discs, filled in as steps are first met: per code, how many rows
    its stamp reaches beyond the discs (n), whether it is not row-convex (bad), and per k the extensions
    of the codes with k rows (`rows`, `lefts`, `rights` [_SIDE**2, k]: offsets from the first vertex).
    The compiled rasteriser reads the same as one flat table: `state` per code (0 not drawn yet, 1 one
    run per row, 2 not), and code c's rows at flat[start[c] : start[c] + n[c]]."""

    def __init__(self, thickness: int):
        self.thickness = thickness
        self.known = np.zeros(_SIDE * _SIDE, bool)
        self.n, self.bad = np.zeros(_SIDE * _SIDE, np.int8), np.zeros(_SIDE * _SIDE, bool)
        self.tables: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.state = np.zeros(_SIDE * _SIDE, np.uint8)
        self.start, self.count = np.zeros(_SIDE * _SIDE, np.int32), np.zeros(_SIDE * _SIDE, np.int32)
        self.flat = tuple(np.zeros(0, np.int32) for _ in range(3))

    def learn(self, codes: np.ndarray) -> None:
        new = []
        for c in codes[~self.known[codes]]:
            ext = stamp_extension(int(c // _SIDE) - MAX_STEP, int(c % _SIDE) - MAX_STEP, self.thickness)
            self.known[c] = True
            self.state[c] = 2 if ext is None else 1
            if ext is None:
                self.bad[c] = True
                continue
            k = self.n[c] = self.count[c] = len(ext[0])
            if k:
                table = self.tables.setdefault(k, tuple(np.zeros((_SIDE * _SIDE, k), np.int32) for _ in range(3)))
                for t, values in zip(table, ext):
                    t[c] = values
                self.start[c] = len(self.flat[0]) + sum(len(e[0]) for e in new)
                new.append(ext)
        if new:
            self.flat = tuple(np.concatenate([f, *(e[i].astype(np.int32) for e in new)]) for i, f in enumerate(self.flat))


@functools.lru_cache(maxsize=4)
def _extensions(thickness: int) -> _Extensions:
    return _Extensions(thickness)


def _add_extensions(left, right, x, y, dx, dy, ok, thickness) -> None:
    """The quadrilaterals reaching beyond their discs, into left/right [G, rows] at rows y (padded);
    a lane with a step that is not row-convex is not ok."""
    G, S = x.shape
    code = np.clip(dx, -MAX_STEP, MAX_STEP).astype(np.int32) * _SIDE  # a longer step's lane is not ok already
    code += np.clip(dy, -MAX_STEP, MAX_STEP)
    code += _STILL
    code[~ok] = _STILL
    seen = np.zeros(_SIDE * _SIDE, bool)
    seen[code] = True
    ext = _extensions(thickness)
    ext.learn(np.flatnonzero(seen))
    ok &= ~ext.bad[code].any(axis=1)
    per, code = ext.n[code].ravel(), code.ravel()
    left, right, xf, yf = left.reshape(-1), right.reshape(-1), x.ravel(), y.ravel()
    for k, (rows, lefts, rights) in ext.tables.items():  # the steps whose stamps reach k rows beyond their discs
        f = np.flatnonzero(per == k)
        if not len(f):
            continue
        g = f // (S - 1)
        v = f + g  # the step's first vertex
        c = code[f]
        at = ((g * left.size // G + yf[v])[:, None] + rows[c]).ravel()
        xv = xf[v, None]
        np.minimum.at(left, at, (xv + lefts[c]).ravel())
        np.maximum.at(right, at, (xv + rights[c]).ravel())


def stamp_beyond_discs(dx: int, dy: int, thickness: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of segment [0, (dx, dy)]'s stamp, as OpenCV draws it, outside the discs at its two
    vertices: (row offsets, lefts, rights) from the first vertex, row by row, left to right (a row may
    hold two runs; most short steps have none). The painter adds the discs itself, and joins the discs
    of a step along a row into their hull, so a stamp that does not hold both discs, or a step along a
    row whose stamp is not that hull, is an error here (no step's is: tests/test_culane.py)."""
    R, dl, dr = disc(thickness)
    o = R + MAX_STEP + 2
    m = _draw([(o, o), (o + dx, o + dy)], thickness, 2 * o + 1)

    def discs_between(cy: int, x_lo: int, x_hi: int) -> np.ndarray:  # the discs centred on row cy, columns x_lo..x_hi
        out = np.zeros_like(m)
        for r in range(-R, R + 1):
            out[cy + r, x_lo + dl[r + R] : x_hi + dr[r + R] + 1] = 1
        return out

    discs = discs_between(o, o, o) | discs_between(o + dy, o + dx, o + dx)
    if (discs & ~m).any():
        raise RuntimeError(f"OpenCV's {thickness} px stamp of step ({dx}, {dy}) does not hold its discs: the painter does not apply")
    # the painter joins a row's discs into one run per disc row: the stamp must be their hull
    if dy == 0 and (discs_between(o, o + min(dx, 0), o + max(dx, 0)) != m).any():
        raise RuntimeError(f"OpenCV's {thickness} px stamp of step ({dx}, 0) is not its discs' hull: the painter does not apply")
    padded = np.zeros((m.shape[0], m.shape[1] + 2), np.int8)
    padded[:, 1:-1] = m & ~discs
    rows, edges = np.nonzero(np.diff(padded, axis=1))  # a run's first column, then one past its last
    return rows[0::2] - o, edges[0::2] - o, edges[1::2] - 1 - o


class _Stamps:
    """Every step's stamp beyond its discs, as runs, filled in as steps are first met, for the compiled
    painter: code c's runs at rows/lefts/rights[start[c] : start[c] + count[c]] (count -1: not drawn
    yet); `table` is what the painter takes besides the lane and the crop."""

    def __init__(self, thickness: int):
        self.thickness = thickness
        self.start, self.count = np.zeros(_SIDE * _SIDE, np.int32), np.full(_SIDE * _SIDE, -1, np.int32)
        self.flat = tuple(np.zeros(0, np.int32) for _ in range(3))
        _, dl, dr = disc(thickness)
        self.disc = dl.astype(np.int32), dr.astype(np.int32)

    def learn(self, codes: np.ndarray) -> None:
        codes = codes[self.count[codes] < 0]  # after the first lanes, nearly always none
        if not len(codes):
            return
        new = np.unique(codes).tolist()
        runs = [stamp_beyond_discs(c // _SIDE - MAX_STEP, c % _SIDE - MAX_STEP, self.thickness) for c in new]
        at = len(self.flat[0])
        for c, r in zip(new, runs):
            self.start[c], self.count[c] = at, len(r[0])
            at += len(r[0])
        self.flat = tuple(np.concatenate([f, *(r[i].astype(np.int32) for r in runs)]) for i, f in enumerate(self.flat))

    @property
    def table(self) -> tuple:
        return (_SIDE, MAX_STEP, self.start, self.count, *self.flat, *self.disc)


@functools.lru_cache(maxsize=4)
def _stamps(thickness: int) -> _Stamps:
    return _Stamps(thickness)


def paint_runs(p: np.ndarray, x0: int, y0: int, w: int, h: int, thickness: int) -> tuple[np.ndarray, ...] | None:
    """Integer vertices p[S, 2] drawn as OpenCV draws them (`cv2.polylines`, `thickness`) into a w x h
    crop at (x0, y0), as runs of pixels (image row, first column, last column; int64), row by row, left
    to right: the union of the steps' stamps, each drawn by OpenCV once (as every vertex's disc and each
    step's pixels beyond its discs). Exact where no stamp crosses the image border (OpenCV's integer
    drawing is translation invariant there); a lane that crosses it is OpenCV's drawing cropped only
    where `clipped_at_border` clears it (the caller's check, see below). None where it does not apply:
    no compiled painter, or a step longer than MAX_STEP."""
    if native is None:
        return None
    v = np.ascontiguousarray(p, np.int32)
    d = np.diff(v, axis=0)
    if len(v) < 2 or np.abs(d).max() > MAX_STEP:
        return None
    stamps = _stamps(thickness)
    stamps.learn((d[:, 0] + MAX_STEP) * _SIDE + d[:, 1] + MAX_STEP)
    room = 4 * h + 16  # a drawn lane has a few runs a row
    while True:
        out = np.empty((3, room), np.int32)
        n = native.paint_runs(len(v), v, *stamps.table, x0, y0, w, h, *out)
        if n <= room:
            return tuple(out[:, :n].astype(np.int64))
        room = n


def mask_of_runs(rows: np.ndarray, first: np.ndarray, last: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """The h x w uint8 crop at (x0, y0) of runs of pixels (image row, first, last column) inside it."""
    out = np.zeros(h * w, np.uint8)
    length = last - first + 1
    at = np.repeat((rows - y0) * w + first - x0 - np.cumsum(length) + length, length)
    out[at + np.arange(len(at))] = 1
    return out.reshape(h, w)


def areas(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.clip(right - left + 1, 0, None).sum(axis=-1, dtype=np.int64)


def span_boxes(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per lane of row spans left, right [N, H] (left > right: an empty row): its rows [top, bottom),
    columns [x0, x1] and pixels; a lane without a pixel has top = bottom = H, x0 = _BIG, x1 = -_BIG.
    Compiled where it built (one pass), numpy otherwise."""
    N, H = left.shape
    if native is not None:
        box = np.empty((N, 5), np.int64)
        native.span_boxes(N, H, np.ascontiguousarray(left, np.int32), np.ascontiguousarray(right, np.int32), box)
        return tuple(box.T)
    on = right >= left
    some = on.any(axis=1)
    top = np.where(some, on.argmax(axis=1), H)
    bottom = np.where(some, H - on[:, ::-1].argmax(axis=1), H)
    x0 = np.where(on, left, _BIG).min(axis=1, initial=_BIG)
    x1 = np.where(on, right, -_BIG).max(axis=1, initial=-_BIG)
    return top, bottom, x0, x1, areas(left, right)


def intersections(la, ra, lb, rb) -> np.ndarray:
    """Pixels two row-span masks share, per pair (leading axes broadcast)."""
    return np.clip(np.minimum(ra, rb) - np.maximum(la, lb) + 1, 0, None).sum(axis=-1, dtype=np.int64)


def pair_intersections(la, ra, lb, rb, a: np.ndarray, b: np.ndarray, r0: np.ndarray, r1: np.ndarray) -> np.ndarray:
    """Pixels lane a[k] of spans (la, ra) [Na, H] shares with lane b[k] of (lb, rb) [Nb, H], counted over
    rows [r0[k], r1[k]) (the rows both lanes' boxes hold: no other row adds a pixel). Compiled where it
    built (each pair's own rows), numpy otherwise (the rows any pair holds, 1,024 pairs at a time)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    out = np.zeros(len(a), np.int64)
    if not len(a):
        return out
    H = la.shape[1]
    r0, r1 = np.clip(r0, 0, H).astype(np.int64), np.clip(r1, 0, H).astype(np.int64)
    if native is not None:
        c = np.ascontiguousarray
        native.pair_intersections(len(a), H, c(la, np.int32), c(ra, np.int32), c(lb, np.int32), c(rb, np.int32), a, b, r0, r1, out)
        return out
    band = slice(int(r0.min()), int(max(r1.max(), r0.min())))
    for s in range(0, len(a), 1024):  # bounds the [pairs, rows] temporaries
        A, B = a[s : s + 1024], b[s : s + 1024]
        out[s : s + 1024] = intersections(la[A, band], ra[A, band], lb[B, band], rb[B, band])
    return out


def spans_of_runs(rows: np.ndarray, first: np.ndarray, last: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A drawn lane's runs (image row, first, last column) as row spans, or None when a row has two runs."""
    if len(rows) > 1 and (np.diff(rows) == 0).any():
        return None
    left, right = np.full(height, 1, np.int32), np.full(height, 0, np.int32)
    left[rows], right[rows] = first, last
    return left, right


# ---- stamps the image border changes ------------------------------------------------------------
# The quadrilateral's outline is drawn by OpenCV's Line2, which first clips the edge to the image
# (clipLine) and then steps from the clipped end: where an edge crosses a border, its pixels can move
# by one from the unclipped edge's (tried: ~5% of the stamps reaching a border). The discs (Circle)
# and the fill are clipped pixel by pixel, so only such stamps can differ from their translated
# copy. A clipped stamp depends on its step and its first vertex's distance to each border it
# reaches (clipLine's arithmetic is exact in the other coordinate), so it is drawn once per key on a
# canvas with the same borders at the same distances. Where it differs from the unclipped stamp by
# pixels no disc of the lane covers, the lane goes to OpenCV's drawing.
_NONE, _LOW, _HIGH = 0, 1, 2  # which border of an axis a stamp reaches: none, 0, or the last pixel


def _border_side(lo: np.ndarray, hi: np.ndarray, last: int, corner: np.ndarray, reach: int) -> np.ndarray:
    """Per segment spanning [lo, hi] on an axis of pixels 0..last, its quadrilateral's corners `corner`
    beyond that (+ 1 for OpenCV's fixed-point rounding) and its stamp `reach` beyond it: the border an
    edge of the quadrilateral crosses while the stamp reaches into the image; both borders (an image
    under a stroke wide) are marked _LOW | _HIGH."""
    low = (lo - corner < 0) & (hi + reach >= 0)
    high = (lo - reach <= last) & (hi + corner > last)
    return np.where(low, _LOW, _NONE) | np.where(high, _HIGH, _NONE)


def border_stamp_difference(dx: int, dy: int, side_x: int, dist_x: int, side_y: int, dist_y: int,
                            thickness: int) -> np.ndarray:
    """[n, 2] pixel offsets (x, y) from the first vertex where segment [0, (dx, dy)]'s stamp, drawn
    with the image's borders `dist` from its first vertex (x for _LOW, last - x for _HIGH), differs
    from the unclipped stamp inside the image."""
    R = disc(thickness)[0]
    m = R + MAX_STEP + 3  # beyond any stamp's reach: no edge crosses a border not asked for

    def axis(side: int, dist: int) -> tuple[int, int]:  # (first vertex's coordinate, canvas length)
        if side == _LOW:
            return dist, max(dist + m + 1, 1)
        if side == _HIGH:
            return m, max(m + dist + 1, 1)
        return m, 2 * m + 1

    (cx, w), (cy, h) = axis(side_x, dist_x), axis(side_y, dist_y)
    import cv2

    clipped = np.zeros((h, w), np.uint8)
    cv2.polylines(clipped, [np.array([[cx, cy], [cx + dx, cy + dy]], np.int32).reshape(-1, 1, 2)], False, 1, thickness=thickness)
    free = np.zeros((h + 4 * m, w + 4 * m), np.uint8)
    o = 2 * m
    cv2.polylines(free, [np.array([[cx + o, cy + o], [cx + o + dx, cy + o + dy]], np.int32).reshape(-1, 1, 2)], False, 1, thickness=thickness)
    ys, xs = np.nonzero(clipped != free[o : o + h, o : o + w])
    return np.stack([xs - cx, ys - cy], axis=1).astype(np.int64)


def clipped_at_border(q: np.ndarray, ok: np.ndarray, width: int, height: int, thickness: int) -> np.ndarray:
    """[G] bool: ok lanes of q[G, S, 2] with a stamp the image border changes at a pixel none of the
    lane's discs covers: their spans (unclipped stamps, clipped) are not OpenCV's pixels."""
    return clipped_at_border_of_groups([q], [ok], width, height, thickness)[0]


def clipped_at_border_of_groups(qs: list[np.ndarray], oks: list[np.ndarray], width: int, height: int, thickness: int) -> list[np.ndarray]:
    """`clipped_at_border` of several groups of lanes (each q[G, S, 2], S differing between groups) in
    one pass over their steps near a border: a frame's lanes come in groups by vertex count, and the
    per-call work was most of this check's cost."""
    outs = [np.zeros(len(q), bool) for q in qs]
    R, dl, dr = disc(thickness)
    half = thickness / 2 + (thickness & 1) / 2  # ThickLine moves the vertices this far across the step
    # a quadrilateral corner crossing a border has a vertex within half + 1 of it: only those lanes and
    # segments are looked at (most lanes of a frame touch no border)
    c = int(half) + 2
    steps = []
    for k, (q, ok) in enumerate(zip(qs, oks)):
        if not ok.any() or q.shape[1] < 2:
            continue
        g, s = _near_border_steps(q, ok, c, width, height)
        if len(g):
            steps.append((np.full(len(g), k), g, q[g, s].astype(np.int64), q[g, s + 1].astype(np.int64)))
    if not steps:
        return outs
    group, lane, a, b = (np.concatenate(z) for z in zip(*steps))  # per step: its group, its lane there, its two vertices
    x0, y0, x1, y1 = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    dx, dy = x1 - x0, y1 - y0
    length = np.hypot(dx, dy)
    scale = np.divide(half, length, out=np.zeros(length.shape), where=length > 0)
    corner_x = np.where(length > 0, np.abs(dy) * scale + 1, -np.inf)  # a repeated vertex has no quadrilateral
    corner_y = np.where(length > 0, np.abs(dx) * scale + 1, -np.inf)
    sx = _border_side(np.minimum(x0, x1), np.maximum(x0, x1), width - 1, corner_x, R + 2)
    sy = _border_side(np.minimum(y0, y1), np.maximum(y0, y1), height - 1, corner_y, R + 2)
    sel = np.flatnonzero((sx != _NONE) | (sy != _NONE))
    both = (sx[sel] == _LOW | _HIGH) | (sy[sel] == _LOW | _HIGH)
    for i in sel[both].tolist():  # an image narrower than a stroke: drawn
        outs[group[i]][lane[i]] = True
    sel = sel[~both]
    if not len(sel):
        return outs
    ax, ay, px, py = sx[sel], sy[sel], x0[sel], y0[sel]
    dist_x = np.where(ax == _LOW, px, np.where(ax == _HIGH, width - 1 - px, 0))
    dist_y = np.where(ay == _LOW, py, np.where(ay == _HIGH, height - 1 - py, 0))
    fields = np.stack([dx[sel], dy[sel], ax, dist_x, ay, dist_y], axis=1)
    # one int64 per key: steps are within MAX_STEP and distances within MAX_STEP + R + 2 of a border
    base = 2 * (MAX_STEP + R + 3) + 1
    key = np.zeros(len(sel), np.int64)
    for f, n in zip(fields.T, (base, base, 3, base, 3, base)):
        key = key * n + (f + base // 2 if n == base else f)
    uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    known = _BORDER_DIFFERENCES.setdefault(thickness, {})
    if len(known) > 1 << 16:  # bounded; a frame's keys are a few hundred at most
        known.clear()
    diffs = [known.get(k) for k in uniq.tolist()]
    for j in [j for j, d in enumerate(diffs) if d is None]:
        diffs[j] = known[int(uniq[j])] = border_stamp_difference(*map(int, fields[first[j]]), thickness)
    differs = np.array([len(d) > 0 for d in diffs])
    for i in np.flatnonzero(differs[inverse]).tolist():
        k, g = group[sel[i]], lane[sel[i]]
        if outs[k][g]:
            continue
        p = diffs[inverse[i]] + (px[i], py[i])
        p = p[(p[:, 0] >= 0) & (p[:, 0] < width) & (p[:, 1] >= 0) & (p[:, 1] < height)]
        if len(p) and not _covered_by_discs(p, np.asarray(qs[k][g], np.int64), R, dl, dr):
            outs[k][g] = True
    return outs


def _near_border_steps(q: np.ndarray, ok: np.ndarray, c: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(lane, step) of the ok lanes' steps of q[G, S, 2] with a vertex within c of a border, lane by
    lane: compiled where it built (one pass over the vertices), numpy otherwise."""
    if native is not None and q.dtype == np.int64:
        G, S, _ = q.shape
        lanes, steps = np.empty(G * (S - 1), np.int64), np.empty(G * (S - 1), np.int64)
        n = native.near_border_steps(G, S, np.ascontiguousarray(q), np.ascontiguousarray(ok, np.uint8), c, width, height, lanes, steps)
        return lanes[:n], steps[:n]
    x, y = q[..., 0], q[..., 1]
    near_lane = ok & ((x.min(axis=1) < c) | (x.max(axis=1) > width - 1 - c) | (y.min(axis=1) < c) | (y.max(axis=1) > height - 1 - c))
    g_near = np.flatnonzero(near_lane)
    v = q[g_near]
    near = (v[..., 0] < c) | (v[..., 0] > width - 1 - c) | (v[..., 1] < c) | (v[..., 1] > height - 1 - c)
    g, s = np.nonzero(near[:, :-1] | near[:, 1:])
    return g_near[g], s


_BORDER_DIFFERENCES: dict[int, dict[int, np.ndarray]] = {}  # thickness -> packed key -> border_stamp_difference


def _covered_by_discs(p: np.ndarray, vertices: np.ndarray, R: int, dl: np.ndarray, dr: np.ndarray) -> bool:
    """Whether every pixel p[n, 2] lies in the disc of some vertex (the discs are always OpenCV's)."""
    r = p[:, None, 1] - vertices[None, :, 1]  # [n, S]
    c = p[:, None, 0] - vertices[None, :, 0]
    near = np.abs(r) <= R
    ri = np.clip(r + R, 0, 2 * R)
    return bool((near & (c >= dl[ri]) & (c <= dr[ri])).any(axis=1).all())
