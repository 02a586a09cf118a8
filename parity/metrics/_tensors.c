/* tensors.output_parity, compiled: per frame of a runner's float32 output a[F, n] against the
 * reference's b[F, n], max, p99 and mean |a - b|, cosine, the share of non-finite values of a and
 * the share of argmax flips over axis 1 of [F, C, n / C], in one pass over the frame and a selection.
 * numpy made a float64 copy of both arrays, the difference, the products and a partition copy per
 * figure (~1 ms a batch, more than the figures' own arithmetic). The same float64 operations as
 * numpy's, so the same bits: sums are numpy's pairwise summation (8 accumulators, blocks of 128,
 * halves at multiples of 8), max and the order statistics are exact, and the 99th percentile is
 * numpy's linear interpolation; built with -ffp-contract=off (no fused multiply-add), no
 * -ffast-math. Only the buffer protocol. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>

#define BLOCK 128 /* numpy's PW_BLOCKSIZE */

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define AVX2_TOO __attribute__((target_clones("avx2", "default"))) /* picked at load by the CPU it runs on */
#else
#define AVX2_TOO
#endif


/* The four terms of element i: |a - b|, a b, a a, b b in float64. */
#define TERMS(i) {fabs((double)a[i] - (double)b[i]), (double)a[i] * (double)b[i], (double)a[i] * (double)a[i], (double)b[i] * (double)b[i]}

/* numpy's pairwise sum (DOUBLE_pairwise_sum) of each of the four terms over elements [0, n), all four
 * at once: no array of terms is made. */
AVX2_TOO static void pairwise(const float *a, const float *b, Py_ssize_t n, double s[4]) {
    if (n < 8) {
        s[0] = s[1] = s[2] = s[3] = 0.0;
        for (Py_ssize_t i = 0; i < n; i++) {
            double t[4] = TERMS(i);
            for (int k = 0; k < 4; k++) s[k] += t[k];
        }
        return;
    }
    if (n <= BLOCK) {
        double r[4][8];
        Py_ssize_t i;
        for (int j = 0; j < 8; j++) {
            double t[4] = TERMS(j);
            for (int k = 0; k < 4; k++) r[k][j] = t[k];
        }
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) {
                double t[4] = TERMS(i + j);
                for (int k = 0; k < 4; k++) r[k][j] += t[k];
            }
        for (int k = 0; k < 4; k++) s[k] = ((r[k][0] + r[k][1]) + (r[k][2] + r[k][3])) + ((r[k][4] + r[k][5]) + (r[k][6] + r[k][7]));
        for (; i < n; i++) {
            double t[4] = TERMS(i);
            for (int k = 0; k < 4; k++) s[k] += t[k];
        }
        return;
    }
    Py_ssize_t half = n / 2;
    half -= half % 8;
    double l[4], r[4];
    pairwise(a, b, half, l);
    pairwise(a + half, b + half, n - half, r);
    for (int k = 0; k < 4; k++) s[k] = l[k] + r[k];
}

/* Sift v down from the root of the min-heap h[0..t). */
static void sift_down(double *h, Py_ssize_t t, double v) {
    Py_ssize_t i = 0;
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= t) break;
        if (c + 1 < t && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[i] = h[c], i = c;
    }
    h[i] = v;
}

/* np.percentile(d, 99) of a row without NaN: tensors.percentile_99's interpolation between the
 * order statistics below and above the virtual index. Both lie in the top n - below elements, kept in
 * a min-heap as the row streams past (for 4,680 values, 48: nearly every value is one comparison). */
static double p99(const double *d, Py_ssize_t n, double *h) {
    double virtual = (double)(n - 1) * (99.0 / 100.0);
    Py_ssize_t below = (Py_ssize_t)floor(virtual), t = n - below;
    double gamma = virtual - (double)below;
    for (Py_ssize_t i = 0; i < t; i++) { /* the first t values, heapified */
        Py_ssize_t j = i;
        h[j] = d[i];
        while (j > 0 && h[(j - 1) / 2] > h[j]) {
            double x = h[j];
            h[j] = h[(j - 1) / 2], h[(j - 1) / 2] = x, j = (j - 1) / 2;
        }
    }
    for (Py_ssize_t i = t; i < n; i++)
        if (d[i] > h[0]) sift_down(h, t, d[i]);
    double lo = h[0], hi = lo; /* the smallest kept: order statistic `below`; the next smallest: `below` + 1 */
    if (t >= 2) hi = t >= 3 && h[2] < h[1] ? h[2] : h[1];
    double diff = hi - lo;
    return gamma >= 0.5 ? hi - diff * (1.0 - gamma) : lo + diff * gamma;
}

/* numpy's argmax of x[0], x[stride], ... x[(m - 1) stride]: the first NaN, else the first maximum. */
static Py_ssize_t argmax(const float *x, Py_ssize_t m, Py_ssize_t stride) {
    Py_ssize_t best = 0;
    float v = x[0];
    if (isnan(v)) return 0;
    for (Py_ssize_t c = 1; c < m; c++) {
        float u = x[c * stride];
        if (isnan(u)) return c;
        if (u > v) v = u, best = c;
    }
    return best;
}

/* One frame: the figures into out[0..6) (max, p99, mean, cosine, non-finite share, flip share). */
AVX2_TOO static void frame(const float *a, const float *b, Py_ssize_t n, Py_ssize_t classes, double *work, double *out) {
    double m = 0.0, sum[4];
    int nan = 0;
    Py_ssize_t nonfinite = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        work[i] = d;
        nan |= isnan(d);
        m = d > m ? d : m;
        nonfinite += !isfinite(a[i]);
    }
    pairwise(a, b, n, sum);
    out[0] = nan ? NAN : m;
    out[1] = nan ? NAN : p99(work, n, work + n);
    out[2] = sum[0] / (double)n;
    out[3] = sum[1] / (sqrt(sum[2]) * sqrt(sum[3]));
    out[4] = (double)nonfinite / (double)n;
    Py_ssize_t inner = n / classes, flips = 0;
    for (Py_ssize_t j = 0; j < inner; j++) flips += argmax(a + j, classes, inner) != argmax(b + j, classes, inner);
    out[5] = (double)flips / (double)inner;
}

static PyObject *output_parity(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer a = {0}, b = {0}, out = {0};
    Py_ssize_t F, n, classes;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "nnny*y*w*", &F, &n, &classes, &a, &b, &out)) goto done;
    if (F < 0 || n < 1 || classes < 1 || n % classes || a.len != F * n * (Py_ssize_t)sizeof(float) || b.len != a.len ||
        out.len != F * 6 * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "a and b must be float32 [F, n] with n a multiple of classes, out float64 [F, 6]");
        goto done;
    }
    double *work = malloc((size_t)n * 2 * sizeof(double));
    if (!work) {
        PyErr_NoMemory();
        goto done;
    }
    const float *A = a.buf, *B = b.buf;
    double *o = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t f = 0; f < F; f++) frame(A + f * n, B + f * n, n, classes, work, o + f * 6);
    Py_END_ALLOW_THREADS
    free(work);
    result = Py_None;
    Py_INCREF(result);
done:;
    Py_buffer *all[] = {&a, &b, &out};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->obj) PyBuffer_Release(all[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"output_parity", output_parity, METH_VARARGS,
     "output_parity(F, n, classes, a, b, out): per frame max, p99, mean |a - b|, cosine, non-finite share of a, "
     "argmax flip share over the classes axis, into out[F, 6]"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tensors", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__tensors(void) { return PyModule_Create(&module); }
