/* culane._spline_coefficients, culane._spline_samples then culane._round, compiled, lane by lane: the
 * natural spline's coefficients (the official cal_fun), then each segment's `a + b t + c t^2 + d t^3` at
 * t = (h / times) k, k < times, stored as float32 (Point2f), then cvRound to whole pixels (NaN as 0,
 * clipped to +-2^30, half to even), and the lane's last point the same way. The same float64
 * operations in the same order as the numpy path, so the same vertices: built with -ffp-contract=off
 * (no fused multiply-add) and without -ffast-math. numpy made five arrays of every sample on the way
 * (t, t^2, t^3, the sum, float32) and solved the lanes' systems row by row in small whole-array steps;
 * here a lane's coefficients and samples stay in cache. Only the buffer protocol. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static inline int64_t cv_round(float f) { /* _round: nan_to_num, clip to +-2^30, rint */
    const float lim = 1073741824.0f;
    if (isnan(f)) f = 0.0f;
    f = f < -lim ? -lim : f > lim ? lim : f;
    return (int64_t)rintf(f);
}

/* culane._spline_coefficients, compiled: lane g's n float32 points -> per segment (a, b, c, d) [n-1, 2]
 * and the chord h [n-1], the same float64 operations in the same order (the official cal_fun's
 * natural spline, solved by TDMA). work holds 9 n doubles. */
static void coefficients(const float *p, int n, double *work, double *a, double *b, double *c, double *d, double *h) {
    int m = n - 1;
    double *slope = work, *A = work + 2 * n, *B = A + n, *C = B + n, *D = C + n, *M = D + 2 * n;
    for (int i = 0; i < m; i++) {
        double dx = (double)(p[2 * i + 2] - p[2 * i]), dy = (double)(p[2 * i + 3] - p[2 * i + 1]); /* float - float */
        h[i] = sqrt(dx * dx + dy * dy);
        slope[2 * i] = dx / h[i], slope[2 * i + 1] = dy / h[i];
    }
    for (int i = 0; i < n - 2; i++) {
        A[i] = h[i], B[i] = 2 * (h[i] + h[i + 1]), C[i] = h[i + 1];
        for (int j = 0; j < 2; j++) D[2 * i + j] = 6 * (slope[2 * i + 2 + j] - slope[2 * i + j]);
    }
    C[0] = C[0] / B[0];
    D[0] = D[0] / B[0], D[1] = D[1] / B[0];
    for (int i = 1; i < n - 2; i++) { /* TDMA, forward */
        double tmp = B[i] - A[i] * C[i - 1];
        C[i] = C[i] / tmp;
        for (int j = 0; j < 2; j++) D[2 * i + j] = (D[2 * i + j] - A[i] * D[2 * i - 2 + j]) / tmp;
    }
    for (int j = 0; j < 2; j++) M[j] = M[2 * (n - 1) + j] = 0.0, M[2 * (n - 2) + j] = D[2 * (n - 3) + j];
    for (int i = n - 4; i >= 0; i--) /* back substitution */
        for (int j = 0; j < 2; j++) M[2 * (i + 1) + j] = D[2 * i + j] - C[i] * M[2 * (i + 2) + j];
    for (int i = 0; i < m; i++)
        for (int j = 0; j < 2; j++) {
            double hh = h[i], m0 = M[2 * i + j], m1 = M[2 * i + 2 + j];
            a[2 * i + j] = (double)p[2 * i + j];
            b[2 * i + j] = slope[2 * i + j] - (2 * hh * m0 + hh * m1) / 6;
            c[2 * i + j] = m0 / 2;
            d[2 * i + j] = (m1 - m0) / (6 * hh);
        }
}

/* One lane's samples from its coefficients, rounded: the k-th of segment s at t = (h / times) k. Built
 * for AVX2 as well where the compiler can (picked at load by the CPU it runs on): x86-64's baseline has
 * no rounding instruction, and rintf was a library call per coordinate. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void samples(const double *A, const double *B, const double *C, const double *D, const double *H, const float *last,
                    int m, int times, int64_t *og) {
    for (Py_ssize_t s = 0; s < m; s++) {
        double step = H[s] / times;
        for (int k = 0; k < times; k++) {
            double t1 = step * (double)k, t2 = t1 * t1, t3 = t2 * t1;
            for (int j = 0; j < 2; j++) { /* numpy: v = b t1; v += a; v += c t2; v += d t3 */
                double v = B[2 * s + j] * t1;
                v = v + A[2 * s + j];
                v = v + C[2 * s + j] * t2;
                v = v + D[2 * s + j] * t3;
                og[(s * times + k) * 2 + j] = cv_round((float)v);
            }
        }
    }
    og[(Py_ssize_t)m * times * 2] = cv_round(last[0]);
    og[(Py_ssize_t)m * times * 2 + 1] = cv_round(last[1]);
}

/* spline_lanes(G, n, times, pts, out): G lanes of n float32 points [G, n, 2] (n >= 3, no zero chord)
 * -> their rounded samples out int64 [G, (n - 1) * times + 1, 2]: coefficients and samples in one call. */
static PyObject *spline_lanes(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer pts = {0}, out = {0};
    int G, n, times;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "iiiy*w*", &G, &n, &times, &pts, &out)) goto done;
    if (G < 0 || n < 3 || times < 1 || pts.len != (Py_ssize_t)G * n * 2 * (Py_ssize_t)sizeof(float) ||
        out.len != (Py_ssize_t)G * ((Py_ssize_t)(n - 1) * times + 1) * 2 * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "points must be float32 [G, n, 2] with n >= 3, out int64 [G, (n - 1) * times + 1, 2]");
        goto done;
    }
    double *work = malloc(sizeof(double) * (size_t)n * 18);
    if (!work) {
        PyErr_NoMemory();
        goto done;
    }
    const float *P = pts.buf;
    int64_t *o = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t g = 0; g < G; g++) {
        double *a = work + 9 * n, *b = a + 2 * n, *c = b + 2 * n, *d = c + 2 * n, *h = d + 2 * n; /* h: n - 1 */
        const float *p = P + g * n * 2;
        coefficients(p, n, work, a, b, c, d, h);
        samples(a, b, c, d, h, p + 2 * (n - 1), n - 1, times, o + g * ((Py_ssize_t)(n - 1) * times + 1) * 2);
    }
    Py_END_ALLOW_THREADS
    free(work);
    result = Py_None;
    Py_INCREF(result);
done:;
    Py_buffer *all[] = {&pts, &out};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->obj) PyBuffer_Release(all[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"spline_lanes", spline_lanes, METH_VARARGS,
     "spline_lanes(G, n, times, pts, out): the rounded spline samples of G lanes of n points into out"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_culane_spline", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__culane_spline(void) { return PyModule_Create(&module); }
