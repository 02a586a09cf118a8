/* culane._spline_samples then culane._round, compiled: each segment's `a + b t + c t^2 + d t^3` at
 * t = (h / times) k, k < times, stored as float32 (Point2f), then cvRound to whole pixels (NaN as 0,
 * clipped to +-2^30, half to even), and the lane's last point the same way. The same float64
 * operations in the same order as the numpy path, so the same vertices: built with -ffp-contract=off
 * (no fused multiply-add) and without -ffast-math. numpy made five arrays of every sample on the way
 * (t, t^2, t^3, the sum, float32); here each sample stays in registers. Only the buffer protocol. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

static inline int64_t cv_round(float f) { /* _round: nan_to_num, clip to +-2^30, rint */
    const float lim = 1073741824.0f;
    if (isnan(f)) f = 0.0f;
    f = f < -lim ? -lim : f > lim ? lim : f;
    return (int64_t)rintf(f);
}

static PyObject *spline_vertices(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer a = {0}, b = {0}, c = {0}, d = {0}, h = {0}, last = {0}, out = {0};
    int G, m, times;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "iiiy*y*y*y*y*y*w*", &G, &m, &times, &a, &b, &c, &d, &h, &last, &out)) goto done;
    Py_ssize_t coef = (Py_ssize_t)G * m * 2 * sizeof(double);
    if (G < 0 || m < 1 || times < 1 || a.len != coef || b.len != coef || c.len != coef || d.len != coef ||
        h.len != (Py_ssize_t)G * m * (Py_ssize_t)sizeof(double) || last.len != (Py_ssize_t)G * 2 * (Py_ssize_t)sizeof(float) ||
        out.len != (Py_ssize_t)G * ((Py_ssize_t)m * times + 1) * 2 * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "coefficients must be float64 [G, m, 2], h float64 [G, m], last float32 [G, 2], "
                                          "out int64 [G, m * times + 1, 2]");
        goto done;
    }
    const double *A = a.buf, *B = b.buf, *C = c.buf, *D = d.buf, *H = h.buf;
    const float *L = last.buf;
    int64_t *o = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t g = 0; g < G; g++) {
        int64_t *og = o + g * ((Py_ssize_t)m * times + 1) * 2;
        for (Py_ssize_t s = 0; s < m; s++) {
            Py_ssize_t e = (g * m + s) * 2;
            double step = H[g * m + s] / times;
            for (int k = 0; k < times; k++) {
                double t1 = step * (double)k, t2 = t1 * t1, t3 = t2 * t1;
                for (int j = 0; j < 2; j++) { /* numpy: v = b t1; v += a; v += c t2; v += d t3 */
                    double v = B[e + j] * t1;
                    v = v + A[e + j];
                    v = v + C[e + j] * t2;
                    v = v + D[e + j] * t3;
                    og[(s * times + k) * 2 + j] = cv_round((float)v);
                }
            }
        }
        og[(Py_ssize_t)m * times * 2] = cv_round(L[g * 2]);
        og[(Py_ssize_t)m * times * 2 + 1] = cv_round(L[g * 2 + 1]);
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:;
    Py_buffer *all[] = {&a, &b, &c, &d, &h, &last, &out};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->obj) PyBuffer_Release(all[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"spline_vertices", spline_vertices, METH_VARARGS,
     "spline_vertices(G, m, times, a, b, c, d, h, last, out): the rounded spline samples of G lanes of m segments into out"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_culane_spline", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__culane_spline(void) { return PyModule_Create(&module); }
