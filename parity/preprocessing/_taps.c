/* resample.apply_taps for one frame, compiled: out[j, i, c] = sum_k wy[j, k] * t[iy[j, k], i, c] where
 * t[y, i, c] = sum_k wx[i, k] * float(x[y, ix[i, k], c]), every product and sum rounded to float32 in
 * k order, horizontal pass first (Pillow's order), optionally Pillow's rounding to 8-bit levels
 * between the passes. The same float32 operations in the same order as resample.py's numpy path, so
 * the same bits: built with -ffp-contract=off (no fused multiply-add) and without -ffast-math. numpy
 * spent its time gathering and in temporaries the size of the frame; here each output is summed in
 * a register and each row of the intermediate is used while in cache. Only the buffer protocol. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    int H, W, C, h, w, Ky, Kx, pil;
    const int64_t *iy, *ix;
    const float *wy, *wx;
} Taps;

#define WIDTH_PASS(T)                                                                                 \
    static void width_##T(const Taps *t, const T *x, float *out) {                                    \
        for (int y = 0; y < t->H; y++) {                                                              \
            const T *row = x + (size_t)y * t->W * t->C;                                               \
            float *o = out + (size_t)y * t->w * t->C;                                                 \
            for (int i = 0; i < t->w; i++) {                                                          \
                const int64_t *idx = t->ix + (size_t)i * t->Kx;                                       \
                const float *wt = t->wx + (size_t)i * t->Kx;                                          \
                for (int c = 0; c < t->C; c++) {                                                      \
                    float acc = (float)row[idx[0] * t->C + c] * wt[0];                                \
                    for (int k = 1; k < t->Kx; k++) acc = acc + (float)row[idx[k] * t->C + c] * wt[k]; \
                    o[(size_t)i * t->C + c] = acc;                                                    \
                }                                                                                     \
            }                                                                                         \
        }                                                                                             \
    }
WIDTH_PASS(uint8_t)
WIDTH_PASS(float)

static void to_8bit(float *x, size_t n) { /* np.floor(x + 0.5), then np.clip(0, 255): NaN stays NaN */
    for (size_t e = 0; e < n; e++) {
        float v = floorf(x[e] + 0.5f);
        x[e] = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
    }
}

/* One output row: out = s_0 * w_0, then out += s_k * w_k. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void row_taps(float *restrict out, const float *restrict s, size_t n, float wt, int first) {
    if (first)
        for (size_t e = 0; e < n; e++) out[e] = s[e] * wt;
    else
        for (size_t e = 0; e < n; e++) out[e] = out[e] + s[e] * wt;
}

static void height_pass(const Taps *t, const float *x, float *out) {
    size_t n = (size_t)t->w * t->C;
    for (int j = 0; j < t->h; j++)
        for (int k = 0; k < t->Ky; k++)
            row_taps(out + (size_t)j * n, x + (size_t)t->iy[(size_t)j * t->Ky + k] * n, n, t->wy[(size_t)j * t->Ky + k], k == 0);
}

static int check_taps(const char *what, const Py_buffer *idx, const Py_buffer *wt, int n_out, int n_in, int *K) {
    Py_ssize_t cells = idx->len / (Py_ssize_t)sizeof(int64_t);
    if (n_out < 1 || idx->len % sizeof(int64_t) || cells % n_out || cells == 0 || wt->len != cells * (Py_ssize_t)sizeof(float)) {
        PyErr_Format(PyExc_ValueError, "%s taps must be int64 and float32 arrays of %d rows", what, n_out);
        return -1;
    }
    const int64_t *i = idx->buf;
    for (Py_ssize_t e = 0; e < cells; e++)
        if (i[e] < 0 || i[e] >= n_in) {
            PyErr_Format(PyExc_ValueError, "%s tap index %lld outside 0..%d", what, (long long)i[e], n_in - 1);
            return -1;
        }
    *K = (int)(cells / n_out);
    return 0;
}

static PyObject *apply_taps(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer x = {0}, iy = {0}, wy = {0}, ix = {0}, wx = {0}, out = {0};
    Taps t = {0};
    int is_float = 0;
    PyObject *result = NULL;
    float *mid = NULL;
    if (!PyArg_ParseTuple(args, "y*iiipy*y*y*y*iipw*", &x, &t.H, &t.W, &t.C, &is_float, &iy, &wy, &ix, &wx, &t.h, &t.w,
                          &t.pil, &out))
        goto done;
    size_t item = is_float ? sizeof(float) : sizeof(uint8_t);
    if (t.H < 1 || t.W < 1 || t.C < 1 || x.len != (Py_ssize_t)((size_t)t.H * t.W * t.C * item)) {
        PyErr_SetString(PyExc_ValueError, "the frame's bytes do not match its H x W x C");
        goto done;
    }
    if (check_taps("row", &iy, &wy, t.h, t.H, &t.Ky) < 0 || check_taps("column", &ix, &wx, t.w, t.W, &t.Kx) < 0) goto done;
    if (out.len != (Py_ssize_t)((size_t)t.h * t.w * t.C * sizeof(float))) {
        PyErr_SetString(PyExc_ValueError, "out must be float32 [h, w, C]");
        goto done;
    }
    t.iy = iy.buf, t.wy = wy.buf, t.ix = ix.buf, t.wx = wx.buf;
    mid = malloc(sizeof(float) * (size_t)t.H * t.w * t.C);
    if (!mid) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    if (is_float)
        width_float(&t, x.buf, mid);
    else
        width_uint8_t(&t, x.buf, mid);
    if (t.pil) to_8bit(mid, (size_t)t.H * t.w * t.C);
    height_pass(&t, mid, out.buf);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    free(mid);
    Py_buffer *all[] = {&x, &iy, &wy, &ix, &wx, &out};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->obj) PyBuffer_Release(all[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"apply_taps", apply_taps, METH_VARARGS,
     "apply_taps(frame, H, W, C, is_float32, iy, wy, ix, wx, h, w, pil_rounding, out): one uint8 or float32 frame [H, W, C]"
     " -> out float32 [h, w, C]"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_taps", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__taps(void) { return PyModule_Create(&module); }
