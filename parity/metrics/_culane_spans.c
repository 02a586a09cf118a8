/* culane_spans.lane_spans, compiled: each lane's rows of the official evaluator's 30 px strokes as one
 * span per row, lane by lane in one pass. The geometry (discs at the vertices, each step's extension
 * beyond its discs, which lanes are left to OpenCV's drawing) is culane_spans.py's; the stamps
 * themselves (the disc's extents, every step's extension rows) are drawn by OpenCV there and passed in.
 * numpy spent its time on many small whole-array passes over 64 lanes at once; here a lane is a few
 * thousand integer min/max updates in cache. Only the buffer protocol: no numpy headers to build
 * against. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BIG ((int32_t)1 << 29) /* no column: beyond any clipped vertex plus its stamp */
#define FAR ((int32_t)1 << 28)
#define MAX_PIECES 8 /* a lane turning back in y more often is drawn by the caller */

enum { UNKNOWN = 0, GOOD = 1, BAD = 2 }; /* a step code's state: not yet drawn, one run per row, not */

typedef struct {
    Py_buffer q, dl, dr, state, start, count, rows, lefts, rights, left, right, ok;
} Buffers;

typedef struct {
    int G, S, width, height, max_step, near, R, side, pad, Hp;
    const int32_t *q, *dl, *dr, *start, *count, *rows, *lefts, *rights;
    const uint8_t *state;
    Py_ssize_t n_table;
} Geometry;

static void release_all(Py_buffer *const *all, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (all[i]->obj) PyBuffer_Release(all[i]);
}

static void release(Buffers *b) {
    Py_buffer *all[] = {&b->q, &b->dl, &b->dr, &b->state, &b->start, &b->count,
                        &b->rows, &b->lefts, &b->rights, &b->left, &b->right, &b->ok};
    release_all(all, sizeof all / sizeof all[0]);
}

static int bad_size(const char *what, Py_ssize_t got, Py_ssize_t want) {
    PyErr_Format(PyExc_ValueError, "%s is %zd bytes, expected %zd", what, got, want);
    return -1;
}

/* Every buffer's size against the geometry: a wrong array is an error, never a read past its end. */
static int check(Geometry *g, Buffers *b) {
    if (g->G < 0 || g->S < 1 || g->width < 1 || g->height < 1 || g->max_step < 1 || g->near < 0)
        return PyErr_SetString(PyExc_ValueError, "bad lane or image dimensions"), -1;
    Py_ssize_t four = sizeof(int32_t);
    if (b->dl.len != b->dr.len || b->dl.len % four || (b->dl.len / four) % 2 == 0)
        return PyErr_SetString(PyExc_ValueError, "disc extents must be two int32 arrays of odd length"), -1;
    g->R = (int)(b->dl.len / four / 2);
    g->side = 2 * g->max_step + 1;
    Py_ssize_t codes = (Py_ssize_t)g->side * g->side;
    if (b->q.len != (Py_ssize_t)g->G * g->S * 2 * four) return bad_size("vertices", b->q.len, (Py_ssize_t)g->G * g->S * 2 * four);
    if (b->state.len != codes) return bad_size("step states", b->state.len, codes);
    if (b->start.len != codes * four) return bad_size("extension starts", b->start.len, codes * four);
    if (b->count.len != codes * four) return bad_size("extension counts", b->count.len, codes * four);
    if (b->rows.len != b->lefts.len || b->rows.len != b->rights.len || b->rows.len % four)
        return PyErr_SetString(PyExc_ValueError, "extension rows, lefts and rights must be int32 arrays of one length"), -1;
    Py_ssize_t spans = (Py_ssize_t)g->G * g->height * four;
    if (b->left.len != spans) return bad_size("left", b->left.len, spans);
    if (b->right.len != spans) return bad_size("right", b->right.len, spans);
    if (b->ok.len != g->G) return bad_size("ok", b->ok.len, g->G);
    g->n_table = b->rows.len / four;
    g->q = b->q.buf, g->dl = b->dl.buf, g->dr = b->dr.buf, g->state = b->state.buf;
    g->start = b->start.buf, g->count = b->count.buf;
    g->rows = b->rows.buf, g->lefts = b->lefts.buf, g->rights = b->rights.buf;
    const int32_t *start = g->start, *count = g->count;
    for (Py_ssize_t c = 0; c < codes; c++)
        if (count[c] < 0 || start[c] < 0 || (Py_ssize_t)start[c] + count[c] > g->n_table)
            return PyErr_SetString(PyExc_ValueError, "an extension reaches past its table"), -1;
    g->pad = g->near + g->R + g->max_step + 3; /* every disc and extension of an ok lane lands in these rows */
    g->Hp = g->height + 2 * g->pad;
    return 0;
}

static int step_code(const Geometry *g, const int32_t *v, int i) {
    int dx = v[2 * i + 2] - v[2 * i], dy = v[2 * i + 3] - v[2 * i + 1];
    return (dx + g->max_step) * g->side + dy + g->max_step;
}

/* Whether lane v is the span rasteriser's (near the image, short steps, every step's stamp one run per
 * row); a step whose stamp is not known yet is flagged in `unknown` and counted. Whether its rows are
 * one run each is decided as its spans are found (`lane_spans_of`). */
static int lane_ok(const Geometry *g, const int32_t *v, uint8_t *unknown, int *n_unknown) {
    for (int i = 0; i < g->S; i++) {
        int y = v[2 * i + 1];
        if (y < -g->near || y >= g->height + g->near) return 0;
    }
    for (int i = 0; i + 1 < g->S; i++) {
        int64_t dx = (int64_t)v[2 * i + 2] - v[2 * i], dy = (int64_t)v[2 * i + 3] - v[2 * i + 1];
        if (dx > g->max_step || dx < -g->max_step || dy > g->max_step || dy < -g->max_step) return 0;
    }
    int ok = 1;
    for (int i = 0; i + 1 < g->S; i++) {
        int c = step_code(g, v, i);
        if (g->state[c] == BAD) ok = 0;
        else if (g->state[c] == UNKNOWN && !unknown[c]) unknown[c] = 1, (*n_unknown)++;
    }
    return ok;
}

/* The lane cut where it turns back in y: piece p is vertices [start[p], start[p + 1]] (the turning
 * vertex in both), each monotone in y. How many pieces, or MAX_PIECES + 1 for more. */
static int monotone_pieces(const Geometry *g, const int32_t *v, int *start) {
    int n = 0, dir = 0;
    start[n++] = 0;
    for (int i = 0; i + 1 < g->S; i++) {
        int dy = v[2 * i + 3] - v[2 * i + 1], d = (dy > 0) - (dy < 0);
        if (d && dir && d != dir) {
            if (n == MAX_PIECES) return MAX_PIECES + 1;
            start[n++] = i;
        }
        dir = d ? d : dir;
    }
    start[n] = g->S - 1;
    return n;
}

static inline void widen(int32_t *lo, int32_t *hi, int row, int32_t l, int32_t r) {
    lo[row] = l < lo[row] ? l : lo[row]; /* branch-free: which side wins is unpredictable */
    hi[row] = r > hi[row] ? r : hi[row];
}

static inline int32_t clip(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* out[j] = min (or max) of out[j] and v[j] + off: the inner loop of every lane, vectorised; built
 * for AVX2 as well where the compiler can (picked at load by the CPU it runs on). */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void slide(int32_t *restrict out, const int32_t *restrict v, int n, int32_t off, int max) {
    if (max)
        for (int j = 0; j < n; j++) out[j] = v[j] + off > out[j] ? v[j] + off : out[j];
    else
        for (int j = 0; j < n; j++) out[j] = v[j] + off < out[j] ? v[j] + off : out[j];
}

/* The spans of vertices v[0..n): each row's extreme vertices, the disc slid over them (one pass per
 * disc row over every row, so the compiler vectorises it), then the steps' extensions, clipped to the
 * image (an empty row: left > right). Monotone in y, they are one run per row (culane_spans.py).
 * Columns are clipped to +-FAR first, as the numpy path does, so that every sum stays in int32. */
static void piece_rows(const Geometry *g, const int32_t *v, int n, int32_t *restrict lo, int32_t *restrict hi,
                       int32_t *restrict vmin, int32_t *restrict vmax, int32_t *left, int32_t *right) {
    int first = g->Hp, last = -1, R = g->R, row = -1;
    int32_t rmin = 0, rmax = 0; /* the current row's extremes, kept in registers while the lane stays in it */
    for (int r = 0; r < g->Hp; r++) lo[r] = vmin[r] = BIG, hi[r] = vmax[r] = -BIG;
    for (int i = 0; i < n; i++) {
        int r = v[2 * i + 1] + g->pad;
        int32_t x = clip(v[2 * i], -FAR, FAR);
        if (r != row) {
            if (row >= 0) widen(vmin, vmax, row, rmin, rmax);
            row = r, rmin = rmax = x;
        } else {
            rmin = x < rmin ? x : rmin;
            rmax = x > rmax ? x : rmax;
        }
        if (r < first) first = r;
        if (r > last) last = r;
    }
    if (row >= 0) widen(vmin, vmax, row, rmin, rmax);
    if (last >= 0) /* rows [first - R, last + R] meet a disc; vertex row r + R - k reaches row r with disc row k */
        for (int k = 0; k <= 2 * R; k++) {
            slide(lo + first - R, vmin + first - k, last - first + 2 * R + 1, g->dl[k], 0);
            slide(hi + first - R, vmax + first - k, last - first + 2 * R + 1, g->dr[k], 1);
        }
    /* The extensions: consecutive steps widen the same rows, and each widening waits on the store before
     * it; odd steps widen vmin, vmax (free after the slide) instead, two chains at once. */
    for (int r = 0; r < g->Hp; r++) vmin[r] = BIG, vmax[r] = -BIG;
    for (int i = 0; i + 1 < n; i++) {
        int c = step_code(g, v, i), m = g->count[c];
        if (!m) continue;
        const int32_t *rows = g->rows + g->start[c], *ls = g->lefts + g->start[c], *rs = g->rights + g->start[c];
        int32_t x = clip(v[2 * i], -FAR, FAR), *el = i & 1 ? vmin : lo, *eh = i & 1 ? vmax : hi;
        for (int j = 0; j < m; j++) {
            int r = v[2 * i + 1] + g->pad + rows[j];
            if (r >= 0 && r < g->Hp) widen(el, eh, r, x + ls[j], x + rs[j]);
        }
    }
    for (int r = 0; r < g->height; r++) {
        int32_t l = lo[r + g->pad] < vmin[r + g->pad] ? lo[r + g->pad] : vmin[r + g->pad];
        int32_t h = hi[r + g->pad] > vmax[r + g->pad] ? hi[r + g->pad] : vmax[r + g->pad];
        left[r] = clip(l, 0, g->width);
        right[r] = clip(h, -1, g->width - 1);
    }
}

/* One lane's spans: the union of its monotone pieces' spans, row by row. Returns 0 where a row's
 * pieces leave a gap (two runs in the row: the caller draws the lane). */
static int lane_spans_of(const Geometry *g, const int32_t *v, int32_t *work, int32_t *left, int32_t *right) {
    int start[MAX_PIECES + 1], n = monotone_pieces(g, v, start), Hp = g->Hp, H = g->height;
    if (n > MAX_PIECES) return 0;
    if (n == 1) {
        piece_rows(g, v, g->S, work, work + Hp, work + 2 * Hp, work + 3 * Hp, left, right);
        return 1;
    }
    int32_t *pl = work + 4 * Hp, *pr = pl + (size_t)MAX_PIECES * H; /* each piece's clipped spans */
    for (int p = 0; p < n; p++)
        piece_rows(g, v + 2 * start[p], start[p + 1] - start[p] + 1, work, work + Hp, work + 2 * Hp, work + 3 * Hp,
                   pl + (size_t)p * H, pr + (size_t)p * H);
    for (int r = 0; r < H; r++) {
        int32_t l[MAX_PIECES], h[MAX_PIECES];
        int m = 0;
        for (int p = 0; p < n; p++) { /* this row's non-empty spans, in order of their left ends */
            int32_t a = pl[(size_t)p * H + r], b = pr[(size_t)p * H + r];
            if (a > b) continue;
            int j = m++;
            for (; j > 0 && l[j - 1] > a; j--) l[j] = l[j - 1], h[j] = h[j - 1];
            l[j] = a, h[j] = b;
        }
        left[r] = g->width, right[r] = -1;
        if (!m) continue;
        int32_t reach = h[0];
        for (int j = 1; j < m; j++) {
            if (l[j] > reach + 1) return 0; /* a gap: two runs */
            reach = h[j] > reach ? h[j] : reach;
        }
        left[r] = l[0], right[r] = reach;
    }
    return 1;
}

static PyObject *lane_spans(PyObject *self, PyObject *args) {
    (void)self;
    Buffers b = {0};
    Geometry g = {0};
    PyObject *out = NULL;
    uint8_t *unknown = NULL;
    int32_t *work = NULL;
    if (!PyArg_ParseTuple(args, "iiy*y*y*y*y*y*y*y*y*iiiiw*w*w*", &g.G, &g.S, &b.q, &b.dl, &b.dr, &b.state, &b.start,
                          &b.count, &b.rows, &b.lefts, &b.rights, &g.width, &g.height, &g.max_step, &g.near, &b.left,
                          &b.right, &b.ok))
        goto done;
    if (check(&g, &b) < 0) goto done;
    unknown = calloc((size_t)g.side * g.side, 1);
    work = malloc(sizeof(int32_t) * (4 * (size_t)g.Hp + 2 * (size_t)MAX_PIECES * g.height));
    if (!unknown || !work) {
        PyErr_NoMemory();
        goto done;
    }
    int n_unknown = 0;
    uint8_t *ok = b.ok.buf;
    for (int k = 0; k < g.G; k++) ok[k] = (uint8_t)lane_ok(&g, g.q + (size_t)k * g.S * 2, unknown, &n_unknown);
    if (n_unknown) { /* the caller draws these steps' stamps and calls again */
        out = PyList_New(0);
        for (int c = 0; out && c < g.side * g.side; c++)
            if (unknown[c]) {
                PyObject *code = PyLong_FromLong(c);
                if (!code || PyList_Append(out, code) < 0) Py_CLEAR(out);
                Py_XDECREF(code);
            }
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    int32_t *left = b.left.buf, *right = b.right.buf;
    for (int k = 0; k < g.G; k++) {
        int32_t *lk = left + (size_t)k * g.height, *rk = right + (size_t)k * g.height;
        if (ok[k]) ok[k] = (uint8_t)lane_spans_of(&g, g.q + (size_t)k * g.S * 2, work, lk, rk);
        if (!ok[k]) /* the caller's to draw: empty here */
            for (int r = 0; r < g.height; r++) lk[r] = g.width, rk[r] = -1;
    }
    Py_END_ALLOW_THREADS
    out = PyList_New(0);
done:
    free(unknown);
    free(work);
    release(&b);
    return out;
}

/* A crop kept zeroed between calls, one per thread: a lane's crop is as wide as the lane (a nearly flat one
 * spans most of the image), and a fresh one a call was mostly page faults and clearing. */
static _Thread_local uint8_t *canvas = NULL;
static _Thread_local size_t canvas_size = 0;

/* One run of the crop painted, and its row's painted columns widened; 0 if it leaves the crop. */
static inline int paint_run(uint8_t *o, int32_t *lo, int32_t *hi, int w, int h, int64_t r, int64_t a, int64_t b) {
    if (r < 0 || r >= h || a < 0 || b >= w || a > b) return 0;
    memset(o + (size_t)r * w + a, 1, (size_t)(b - a + 1));
    lo[r] = a < lo[r] ? (int32_t)a : lo[r];
    hi[r] = b > hi[r] ? (int32_t)b : hi[r];
    return 1;
}

/* The discs of a group of vertices on row gy, columns g0..g1: one run per disc row (dl, dr [2R + 1]); 0 if
 * one leaves the crop. */
static inline int paint_discs(uint8_t *o, int32_t *lo, int32_t *hi, int w, int h, int R, const int32_t *dl, const int32_t *dr,
                              int64_t gy, int64_t g0, int64_t g1) {
    for (int k = -R; k <= R; k++)
        if (!paint_run(o, lo, hi, w, h, gy + k, g0 + dl[k + R], g1 + dr[k + R])) return 0;
    return 1;
}

/* paint_runs(S, q, side, max_step, start, count, rows, lefts, rights, dl, dr, x0, y0, w, h, out_rows, out_first, out_last)
 * -> n: the lane q[S, 2] drawn as OpenCV draws it into the w x h crop at (x0, y0), as its runs of pixels
 * (image row, first and last column), row by row, left to right. OpenCV draws each step as a stamp that
 * holds the discs at both its vertices (dl, dr [2R + 1]: the disc's extents per row) and, for some steps,
 * pixels beyond them (code c's: runs start[c] .. start[c] + count[c] of rows/lefts/rights, offsets from
 * the step's first vertex, drawn by OpenCV itself and passed in; count -1: not drawn yet). The lane is the
 * union of its stamps: every vertex's disc and every step's pixels beyond its discs. A step along a row
 * (dy = 0) is its two discs' hull, one run per disc row (culane_spans checks it for every such step), so
 * a row's consecutive vertices are painted as one wide disc, where each stamp painted whole was ~30 runs.
 * Exact where no stamp crosses the image border, where OpenCV's integer drawing is translation invariant;
 * across it only where the caller's border check (culane_spans.clipped_at_border) clears the lane. The
 * first n runs go to the int32 outputs while they have room (n larger than their length: call again with
 * n). A step longer than max_step or not drawn yet, or a run outside the crop, is an error: nothing is
 * guessed. */
static PyObject *paint_runs(PyObject *self, PyObject *args) {
    (void)self;
    int S, side, max_step, x0, y0, w, h;
    Py_buffer q = {0}, start = {0}, count = {0}, rows = {0}, lefts = {0}, rights = {0}, dl = {0}, dr = {0}, orow = {0}, ofirst = {0}, olast = {0};
    PyObject *result = NULL;
    int32_t *lo = NULL, *hi = NULL;
    if (!PyArg_ParseTuple(args, "iy*iiy*y*y*y*y*y*y*iiiiw*w*w*", &S, &q, &side, &max_step, &start, &count, &rows, &lefts, &rights,
                          &dl, &dr, &x0, &y0, &w, &h, &orow, &ofirst, &olast))
        goto done;
    Py_ssize_t four = sizeof(int32_t), codes = (Py_ssize_t)side * side;
    if (S < 1 || w < 0 || h < 0 || max_step < 0 || side != 2 * max_step + 1) {
        PyErr_SetString(PyExc_ValueError, "bad lane, crop or step table dimensions");
        goto done;
    }
    if (q.len != (Py_ssize_t)S * 2 * four) { bad_size("vertices", q.len, (Py_ssize_t)S * 2 * four); goto done; }
    if (start.len != codes * four) { bad_size("stamp starts", start.len, codes * four); goto done; }
    if (count.len != codes * four) { bad_size("stamp counts", count.len, codes * four); goto done; }
    if (rows.len != lefts.len || rows.len != rights.len || rows.len % four) {
        PyErr_SetString(PyExc_ValueError, "stamp rows, lefts and rights must be int32 arrays of one length");
        goto done;
    }
    if (dl.len != dr.len || dl.len % four || (dl.len / four) % 2 != 1) {
        PyErr_SetString(PyExc_ValueError, "the disc's extents must be two int32 arrays of one odd length");
        goto done;
    }
    if (orow.len != ofirst.len || orow.len != olast.len || orow.len % four) {
        PyErr_SetString(PyExc_ValueError, "the run outputs must be int32 arrays of one length");
        goto done;
    }
    size_t need = (size_t)w * h;
    if (need > canvas_size) {
        free(canvas);
        canvas_size = 0;
        canvas = calloc(need, 1);
        if (!canvas) { PyErr_NoMemory(); goto done; }
        canvas_size = need;
    }
    lo = malloc(sizeof(int32_t) * ((size_t)h + 1)), hi = malloc(sizeof(int32_t) * ((size_t)h + 1));
    if (!lo || !hi) { PyErr_NoMemory(); goto done; }
    const int32_t *v = q.buf, *st = start.buf, *ct = count.buf, *ro = rows.buf, *le = lefts.buf, *ri = rights.buf;
    const int32_t *DL = dl.buf, *DR = dr.buf;
    int R = (int)(dl.len / four) / 2;
    Py_ssize_t n_runs = rows.len / four, room = orow.len / four, n = 0;
    int32_t *OR = orow.buf, *OF = ofirst.buf, *OL = olast.buf;
    uint8_t *o = canvas;
    const char *problem = NULL;
    Py_BEGIN_ALLOW_THREADS
    for (int r = 0; r < h; r++) lo[r] = w, hi[r] = -1; /* each row's painted columns, to scan and clear only those */
    int64_t gy = v[1], g0 = v[0], g1 = v[0]; /* the group of discs being joined: its row and columns */
    for (int i = 0; i < S && !problem; i++) {
        int64_t x = v[2 * i], y = v[2 * i + 1];
        if (i > 0) {
            int64_t dx = x - v[2 * i - 2], dy = y - v[2 * i - 1];
            if (dx > max_step || dx < -max_step || dy > max_step || dy < -max_step) { problem = "a step longer than max_step"; break; }
            Py_ssize_t c = (Py_ssize_t)(dx + max_step) * side + (dy + max_step);
            if (ct[c] < 0 || st[c] < 0 || (Py_ssize_t)st[c] + ct[c] > n_runs) { problem = "a step without its stamp"; break; }
            if (dy == 0) { /* along the row: the stamp is its discs' hull, so its disc joins the group's */
                g0 = x < g0 ? x : g0, g1 = x > g1 ? x : g1;
                continue;
            }
            for (int32_t j = st[c]; j < st[c] + ct[c] && !problem; j++) /* the step's pixels beyond its discs */
                if (!paint_run(o, lo, hi, w, h, v[2 * i - 1] + ro[j] - y0, v[2 * i - 2] + le[j] - x0, v[2 * i - 2] + ri[j] - x0))
                    problem = "a stamp reaching outside the crop";
        }
        /* the group's discs, each row one run: each step along the row filled its discs' hull */
        if (i > 0 && !problem && !paint_discs(o, lo, hi, w, h, R, DL, DR, gy - y0, g0 - x0, g1 - x0)) problem = "a stamp reaching outside the crop";
        gy = y, g0 = g1 = x;
    }
    if (!problem && !paint_discs(o, lo, hi, w, h, R, DL, DR, gy - y0, g0 - x0, g1 - x0)) /* the last group's */
        problem = "a stamp reaching outside the crop";
    for (int r = 0; r < h; r++) { /* the runs, and the canvas cleared behind them */
        if (lo[r] > hi[r]) continue;
        uint8_t *row = o + (size_t)r * w, *end = row + hi[r] + 1;
        /* memchr finds a run's ends many bytes a step (a flat lane's rows are hundreds of pixels wide) */
        for (uint8_t *a = row + lo[r]; a < end;) {
            uint8_t *b = memchr(a, 0, (size_t)(end - a));
            b = b ? b : end;
            if (n < room) OR[n] = r + y0, OF[n] = (int32_t)(a - row) + x0, OL[n] = (int32_t)(b - row) - 1 + x0;
            n++;
            a = b < end ? memchr(b, 1, (size_t)(end - b)) : NULL;
            a = a ? a : end;
        }
        memset(row + lo[r], 0, (size_t)(hi[r] - lo[r] + 1));
    }
    Py_END_ALLOW_THREADS
    if (problem) PyErr_SetString(PyExc_ValueError, problem);
    else result = PyLong_FromSsize_t(n);
done:
    free(lo);
    free(hi);
    {
        Py_buffer *all[] = {&q, &start, &count, &rows, &lefts, &rights, &dl, &dr, &orow, &ofirst, &olast};
        release_all(all, sizeof all / sizeof all[0]);
    }
    return result;
}

/* span_boxes(N, H, left, right, box) : per lane of row spans left, right [N, H] int32 (left > right: an
 * empty row), box [N, 5] int64 = (first row, one past the last row, least left, greatest right, pixels);
 * a lane without a pixel gets (H, H, BIG, -BIG, 0). One pass where numpy made eight over [N, H]. */
static PyObject *span_boxes(PyObject *self, PyObject *args) {
    (void)self;
    int N, H;
    Py_buffer left = {0}, right = {0}, box = {0};
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "iiy*y*w*", &N, &H, &left, &right, &box)) goto done;
    Py_ssize_t spans = (Py_ssize_t)N * H * (Py_ssize_t)sizeof(int32_t);
    if (N < 0 || H < 0 || left.len != spans || right.len != spans || box.len != (Py_ssize_t)N * 5 * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "left and right must be int32 [N, H], box int64 [N, 5]");
        goto done;
    }
    const int32_t *l = left.buf, *r = right.buf;
    int64_t *b = box.buf;
    for (Py_ssize_t k = 0; k < N; k++) {
        int64_t top = H, bottom = H, x0 = BIG, x1 = -BIG, area = 0;
        for (Py_ssize_t y = 0; y < H; y++) {
            int32_t a = l[k * H + y], c = r[k * H + y];
            if (c < a) continue;
            if (top == H) top = y;
            bottom = y + 1;
            x0 = a < x0 ? a : x0;
            x1 = c > x1 ? c : x1;
            area += (int64_t)c - a + 1;
        }
        b[k * 5] = top, b[k * 5 + 1] = bottom, b[k * 5 + 2] = x0, b[k * 5 + 3] = x1, b[k * 5 + 4] = area;
    }
    result = Py_NewRef(Py_None);
done:
    {
        Py_buffer *all[] = {&left, &right, &box};
        release_all(all, sizeof all / sizeof all[0]);
    }
    return result;
}

/* pair_intersections(n, H, la, ra, lb, rb, a, b, r0, r1, out): pixels lane a[k] of (la, ra) [Na, H]
 * shares with lane b[k] of (lb, rb) [Nb, H] (int32 row spans), summed over rows [r0[k], r1[k]) only
 * (where both boxes have rows: no other row adds a pixel), into out[n] int64. Lanes and rows are
 * checked against the arrays. */
static PyObject *pair_intersections(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t n, H;
    Py_buffer la = {0}, ra = {0}, lb = {0}, rb = {0}, a = {0}, b = {0}, r0 = {0}, r1 = {0}, out = {0};
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "nny*y*y*y*y*y*y*y*w*", &n, &H, &la, &ra, &lb, &rb, &a, &b, &r0, &r1, &out)) goto done;
    Py_ssize_t four = sizeof(int32_t), eight = sizeof(int64_t), row = H * four;
    if (n < 0 || H < 1 || la.len != ra.len || lb.len != rb.len || la.len % row || lb.len % row || a.len != n * eight ||
        b.len != n * eight || r0.len != n * eight || r1.len != n * eight || out.len != n * eight) {
        PyErr_SetString(PyExc_ValueError, "spans must be int32 [N, H], lanes, rows and out int64 [n]");
        goto done;
    }
    Py_ssize_t Na = la.len / row, Nb = lb.len / row;
    const int32_t *LA = la.buf, *RA = ra.buf, *LB = lb.buf, *RB = rb.buf;
    const int64_t *A = a.buf, *B = b.buf, *Y0 = r0.buf, *Y1 = r1.buf;
    int64_t *o = out.buf;
    for (Py_ssize_t k = 0; k < n; k++)
        if (A[k] < 0 || A[k] >= Na || B[k] < 0 || B[k] >= Nb || Y0[k] < 0 || Y1[k] > H) {
            PyErr_SetString(PyExc_ValueError, "a lane or a row outside the spans");
            goto done;
        }
    for (Py_ssize_t k = 0; k < n; k++) {
        const int32_t *l1 = LA + A[k] * H, *h1 = RA + A[k] * H, *l2 = LB + B[k] * H, *h2 = RB + B[k] * H;
        int64_t sum = 0;
        for (Py_ssize_t y = Y0[k]; y < Y1[k]; y++) {
            int64_t w = (int64_t)(h1[y] < h2[y] ? h1[y] : h2[y]) - (l1[y] > l2[y] ? l1[y] : l2[y]) + 1;
            sum += w > 0 ? w : 0;
        }
        o[k] = sum;
    }
    result = Py_NewRef(Py_None);
done:
    {
        Py_buffer *all[] = {&la, &ra, &lb, &rb, &a, &b, &r0, &r1, &out};
        release_all(all, sizeof all / sizeof all[0]);
    }
    return result;
}

/* near_border_steps(G, S, q, ok, c, width, height, lanes, steps) -> n: the steps (lane, first vertex) of
 * the ok lanes of q[G, S, 2] int64 with a vertex within c of a border (x < c, x > width - 1 - c, the
 * same in y), lane by lane, step by step, into lanes[n] and steps[n] (int64, room for G (S - 1)): the
 * only steps whose stamps the border can change (culane_spans.clipped_at_border_of_groups). */
static PyObject *near_border_steps(PyObject *self, PyObject *args) {
    (void)self;
    int G, S;
    long long c, width, height;
    Py_buffer q = {0}, ok = {0}, lanes = {0}, steps = {0};
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "iiy*y*LLLw*w*", &G, &S, &q, &ok, &c, &width, &height, &lanes, &steps)) goto done;
    Py_ssize_t room = (Py_ssize_t)G * (S > 1 ? S - 1 : 0) * (Py_ssize_t)sizeof(int64_t);
    if (G < 0 || S < 1 || q.len != (Py_ssize_t)G * S * 2 * (Py_ssize_t)sizeof(int64_t) || ok.len != G || lanes.len != room ||
        steps.len != room) {
        PyErr_SetString(PyExc_ValueError, "q must be int64 [G, S, 2], ok G bytes, lanes and steps int64 [G (S - 1)]");
        goto done;
    }
    const int64_t *v = q.buf;
    const uint8_t *good = ok.buf;
    int64_t *lo = lanes.buf, *st = steps.buf;
    Py_ssize_t n = 0;
    for (Py_ssize_t g = 0; g < G; g++) {
        if (!good[g]) continue;
        const int64_t *p = v + g * S * 2;
        int prev = 0;
        for (Py_ssize_t i = 0; i < S; i++) {
            int64_t x = p[2 * i], y = p[2 * i + 1];
            int near = x < c || x > width - 1 - c || y < c || y > height - 1 - c;
            if (i && (near || prev)) lo[n] = g, st[n++] = i - 1;
            prev = near;
        }
    }
    result = PyLong_FromSsize_t(n);
done:
    {
        Py_buffer *all[] = {&q, &ok, &lanes, &steps};
        release_all(all, sizeof all / sizeof all[0]);
    }
    return result;
}

static PyMethodDef methods[] = {
    {"span_boxes", span_boxes, METH_VARARGS,
     "span_boxes(N, H, left, right, box) -> None: each lane's rows, columns and pixels into box[N, 5]"},
    {"pair_intersections", pair_intersections, METH_VARARGS,
     "pair_intersections(n, H, la, ra, lb, rb, a, b, r0, r1, out) -> None: the pixels each pair of lanes shares"},
    {"near_border_steps", near_border_steps, METH_VARARGS,
     "near_border_steps(G, S, q, ok, c, width, height, lanes, steps) -> n: the ok lanes' steps near the border"},
    {"paint_runs", paint_runs, METH_VARARGS,
     "paint_runs(S, q, side, max_step, start, count, rows, lefts, rights, dl, dr, x0, y0, w, h, out_rows, out_first, out_last) -> n: "
     "the lane's stamps in the crop as runs"},
    {"lane_spans", lane_spans, METH_VARARGS,
     "lane_spans(G, S, q, dl, dr, state, start, count, rows, lefts, rights, width, height, max_step, near, left, right, ok)"
     " -> step codes whose stamps are unknown (then nothing is written but ok), or []"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_culane_spans", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__culane_spans(void) { return PyModule_Create(&module); }
