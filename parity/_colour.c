/* colour.nv12_to_rgb with nearest chroma, compiled: for each pixel of rows r0..r1,
 *   y' = float(Y) * y_scale - y_offset,  u' = (float(U) - 128) * c_scale,  v' likewise,
 *   out[k] = clip(rint(y' * inv[k][0] + (u' * inv[k][1] + v' * inv[k][2])), 0, 255),
 * every product and sum rounded to float32 in that order: the operations colour.py's numpy path
 * does plane by plane, so the same bits (built with -ffp-contract=off: no fused multiply-add; a
 * multiply by inv[k][0] = 1 is exact, where numpy skips it). numpy spent its time in temporaries
 * the size of the frame; here a row at a time, in loops the compiler vectorises (unit strides and
 * size_t indices: Python builds extensions with -fwrapv, under which int-indexed gathers were not
 * vectorised, 3.4x slower). Only the buffer protocol. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float y_scale, y_offset, c_scale, inv[9];
} Levels;

#define MAGIC 12582912.0f /* 1.5 * 2^23 */

/* One channel of one row: clip(rint(y * m0 + chroma[x]), 0, 255), chroma repeated to full width. np.rint (to nearest, ties to
 * even) of |t| < 2^22 as (t + 1.5 * 2^23) - 1.5 * 2^23: the sum's last place is 1, so the default
 * rounding mode rounds t there (rintf is a libm call without SSE4.1, and blocks vectorising). Floats
 * out, made levels in a pass of their own: converting to uint8 in this loop measured 1.2x slower. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void channel_row(const float *restrict y, const float *restrict chroma, int w, float m0, float *restrict t) {
    for (size_t x = 0; x < (size_t)w; x++) {
        float v = (y[x] * m0 + chroma[x] + MAGIC) - MAGIC;
        t[x] = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
    }
}

/* Three planar rows of w levels -> one row of w RGB pixels (a separate pass: strided byte stores
 * in the channel loop cost more than the arithmetic). */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void interleave(const uint8_t *restrict planes, int w, uint8_t *restrict o) {
    for (size_t x = 0; x < (size_t)w; x++) {
        o[3 * x] = planes[x];
        o[3 * x + 1] = planes[w + x];
        o[3 * x + 2] = planes[2 * w + x];
    }
}

static void rows_to_rgb(const uint8_t *nv12, int h, int w, int r0, int r1, const Levels *L, uint8_t *out, float *buf,
                        uint8_t *planes) {
    const float *m = L->inv;
    float *y = buf, *u = y + w, *v = u + w / 2, *ch = v + w / 2, *t = ch + 3 * w;
    int last_chroma_row = -1;
    for (int r = r0; r < r1; r++) {
        const uint8_t *yrow = nv12 + (size_t)r * w;
        if (r / 2 != last_chroma_row) { /* the two luma rows of a block share its chroma terms */
            last_chroma_row = r / 2;
            const uint8_t *uv = nv12 + (size_t)(h + r / 2) * w;
            for (size_t j = 0; j < (size_t)w / 2; j++) {
                u[j] = ((float)uv[2 * j] - 128.0f) * L->c_scale;
                v[j] = ((float)uv[2 * j + 1] - 128.0f) * L->c_scale;
            }
            for (int k = 0; k < 3; k++)
                for (size_t j = 0; j < (size_t)w / 2; j++) ch[k * w + 2 * j] = ch[k * w + 2 * j + 1] = u[j] * m[3 * k + 1] + v[j] * m[3 * k + 2];
        }
        for (size_t x = 0; x < (size_t)w; x++) y[x] = (float)yrow[x] * L->y_scale - L->y_offset;
        for (int k = 0; k < 3; k++) {
            channel_row(y, ch + k * w, w, m[3 * k], t);
            for (size_t x = 0; x < (size_t)w; x++) planes[k * w + x] = (uint8_t)t[x];
        }
        interleave(planes, w, out + (size_t)(r - r0) * w * 3);
    }
}

static PyObject *nv12_nearest(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer src = {0}, inv = {0}, out = {0};
    Levels L;
    int h, w, r0, r1;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*iiiifffy*w*", &src, &h, &w, &r0, &r1, &L.y_scale, &L.y_offset, &L.c_scale, &inv, &out)) goto done;
    if (h < 2 || w < 2 || h % 2 || w % 2 || src.len != (Py_ssize_t)((size_t)h * 3 / 2 * w)) {
        PyErr_SetString(PyExc_ValueError, "the NV12 frame's bytes do not match an even h x w");
        goto done;
    }
    if (r0 < 0 || r1 > h || r0 > r1 || out.len != (Py_ssize_t)((size_t)(r1 - r0) * w * 3)) {
        PyErr_SetString(PyExc_ValueError, "out must be uint8 [r1 - r0, w, 3] with 0 <= r0 <= r1 <= h");
        goto done;
    }
    if (inv.len != (Py_ssize_t)sizeof L.inv) {
        PyErr_SetString(PyExc_ValueError, "inv must be a float32 3x3 matrix");
        goto done;
    }
    memcpy(L.inv, inv.buf, sizeof L.inv);
    float *buf = malloc(sizeof(float) * (size_t)w * 6 + 3 * (size_t)w);
    if (!buf) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    rows_to_rgb(src.buf, h, w, r0, r1, &L, out.buf, buf, (uint8_t *)(buf + (size_t)w * 6));
    Py_END_ALLOW_THREADS
    free(buf);
    result = Py_None;
    Py_INCREF(result);
done:
    Py_buffer *all[] = {&src, &inv, &out};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->obj) PyBuffer_Release(all[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"nv12_nearest", nv12_nearest, METH_VARARGS,
     "nv12_nearest(nv12, h, w, r0, r1, y_scale, y_offset, c_scale, inv, out): rows r0..r1 of an NV12 frame"
     " [h * 3 / 2, w] uint8 -> out uint8 [r1 - r0, w, 3], nearest chroma"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_colour", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__colour(void) { return PyModule_Create(&module); }
