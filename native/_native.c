/* Thin CPython wrapper over the C kernels: takes buffers, checks sizes, releases the GIL.
 *
 *   quantize(type_name: str, x: float32 buffer, nrows: int, n_per_row: int,
 *            imatrix: float32 buffer | None, out: writable buffer) -> None
 *   kernels() -> tuple of type names with a real (non-stub) kernel
 *   widen(kind, src, dst) -> float   stored floats -> float32, and the largest |x| (widen.c)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "ggq.h"

typedef struct {
    const char *name;
    ggq_quantize_fn fn;
    int64_t block_size;
    int64_t type_size;
} kernel_t;

static const kernel_t KERNELS[] = {
    {"Q8_0", ggq_quantize_q8_0, 32, 34},
    {"Q4_0", ggq_quantize_q4_0, 32, 18},
    {"Q4_1", ggq_quantize_q4_1, 32, 20},
    {"Q5_0", ggq_quantize_q5_0, 32, 22},
    {"Q5_1", ggq_quantize_q5_1, 32, 24},
    {"IQ4_NL", ggq_quantize_iq4_nl, 32, 18},
    {"IQ4_XS", ggq_quantize_iq4_xs, 256, 136},
    {"Q2_K", ggq_quantize_q2_k, 256, 84},
    {"Q3_K", ggq_quantize_q3_k, 256, 110},
    {"Q4_K", ggq_quantize_q4_k, 256, 144},
    {"Q5_K", ggq_quantize_q5_k, 256, 176},
    {"Q6_K", ggq_quantize_q6_k, 256, 210},
};
#define N_KERNELS ((int)(sizeof(KERNELS) / sizeof(KERNELS[0])))

static const kernel_t *find_kernel(const char *name) {
    for (int i = 0; i < N_KERNELS; i++)
        if (strcmp(KERNELS[i].name, name) == 0) return &KERNELS[i];
    return NULL;
}

static PyObject *py_quantize(PyObject *self, PyObject *args) {
    const char *name;
    Py_buffer x, out, im = {0};
    Py_ssize_t nrows, n_per_row;
    PyObject *imobj;
    (void)self;
    if (!PyArg_ParseTuple(args, "sy*nnOw*", &name, &x, &nrows, &n_per_row, &imobj, &out))
        return NULL;
    PyObject *result = NULL;
    int have_im = 0;
    const kernel_t *k = find_kernel(name);
    if (!k) {
        PyErr_Format(PyExc_ValueError, "no native kernel for type %s", name);
        goto done;
    }
    if (nrows < 0 || n_per_row <= 0 || n_per_row % k->block_size != 0) {
        PyErr_Format(PyExc_ValueError, "%s: row length %zd is not a multiple of %lld", name,
                     n_per_row, (long long)k->block_size);
        goto done;
    }
    if (x.len != (Py_ssize_t)(nrows * n_per_row * (Py_ssize_t)sizeof(float))) {
        PyErr_SetString(PyExc_ValueError, "input buffer size does not match nrows*n_per_row float32");
        goto done;
    }
    if (out.len != (Py_ssize_t)(nrows * (n_per_row / k->block_size) * k->type_size)) {
        PyErr_SetString(PyExc_ValueError, "output buffer has the wrong size");
        goto done;
    }
    if (imobj != Py_None) {
        if (PyObject_GetBuffer(imobj, &im, PyBUF_SIMPLE) < 0) goto done;
        have_im = 1;
        if (im.len != (Py_ssize_t)(n_per_row * (Py_ssize_t)sizeof(float))) {
            PyErr_SetString(PyExc_ValueError, "imatrix must hold n_per_row float32 values");
            goto done;
        }
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = k->fn((const float *)x.buf, (uint8_t *)out.buf, (int64_t)nrows, (int64_t)n_per_row,
               have_im ? (const float *)im.buf : NULL);
    Py_END_ALLOW_THREADS
    if (rc == GGQ_NOT_IMPLEMENTED) {
        PyErr_Format(PyExc_NotImplementedError, "native kernel for %s is a stub", name);
        goto done;
    }
    if (rc != 0) {
        PyErr_Format(PyExc_RuntimeError, "native kernel for %s failed (%d)", name, rc);
        goto done;
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    if (have_im) PyBuffer_Release(&im);
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    return result;
}

/* A kernel is "real" if it does not answer GGQ_NOT_IMPLEMENTED on zero rows. */
static PyObject *py_kernels(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    PyObject *t = PyList_New(0);
    if (!t) return NULL;
    float dummy = 0.0f;
    uint8_t out = 0;
    for (int i = 0; i < N_KERNELS; i++) {
        if (KERNELS[i].fn(&dummy, &out, 0, KERNELS[i].block_size, NULL) == GGQ_NOT_IMPLEMENTED)
            continue;
        PyObject *s = PyUnicode_FromString(KERNELS[i].name);
        if (!s || PyList_Append(t, s) < 0) { Py_XDECREF(s); Py_DECREF(t); return NULL; }
        Py_DECREF(s);
    }
    PyObject *tup = PyList_AsTuple(t);
    Py_DECREF(t);
    return tup;
}

/* widen(kind, src, dst) -> float: stored floats ("BF16", "F16", "F32") -> float32 in dst, and
 * the largest |x| (NaN if any NaN, else inf if any inf); dst None: F32 only, scan without a copy.
 * f16_to_f32(src, dst): the F16 case without the result (kept for older callers). */
static PyObject *widen_impl(const char *kind, PyObject *srcobj, PyObject *dstobj, int want_result) {
    Py_buffer src, dst = {0};
    int have_dst = 0;
    if (PyObject_GetBuffer(srcobj, &src, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *result = NULL;
    const int width = strcmp(kind, "F32") == 0 ? 4 : 2;
    if (strcmp(kind, "F32") && strcmp(kind, "F16") && strcmp(kind, "BF16")) {
        PyErr_Format(PyExc_ValueError, "widen: unknown kind %s", kind);
        goto done;
    }
    if (dstobj != Py_None) {
        if (PyObject_GetBuffer(dstobj, &dst, PyBUF_WRITABLE) < 0) goto done;
        have_dst = 1;
    } else if (width != 4) {
        PyErr_SetString(PyExc_ValueError, "widen: only F32 can be scanned without a destination");
        goto done;
    }
    if (src.len % width || (have_dst && dst.len != src.len / width * 4)) {
        PyErr_SetString(PyExc_ValueError, "dst must hold 4 bytes per source value");
        goto done;
    }
    const int64_t n = (int64_t)(src.len / width);
    float amax;
    Py_BEGIN_ALLOW_THREADS
    if (width == 4)
        amax = ggq_widen_f32((const float *)src.buf, have_dst ? (float *)dst.buf : NULL, n);
    else if (kind[0] == 'B')
        amax = ggq_widen_bf16((const uint16_t *)src.buf, (float *)dst.buf, n);
    else
        amax = ggq_widen_f16((const uint16_t *)src.buf, (float *)dst.buf, n);
    Py_END_ALLOW_THREADS
    if (want_result) {
        result = PyFloat_FromDouble((double)amax);
    } else {
        Py_INCREF(Py_None);
        result = Py_None;
    }
done:
    if (have_dst) PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    return result;
}

static PyObject *py_widen(PyObject *self, PyObject *args) {
    const char *kind;
    PyObject *src, *dst;
    (void)self;
    if (!PyArg_ParseTuple(args, "sOO", &kind, &src, &dst)) return NULL;
    return widen_impl(kind, src, dst, 1);
}

static PyObject *py_f16_to_f32(PyObject *self, PyObject *args) {
    PyObject *src, *dst;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO", &src, &dst)) return NULL;
    return widen_impl("F16", src, dst, 0);
}

static PyMethodDef methods[] = {
    {"f16_to_f32", py_f16_to_f32, METH_VARARGS, "f16_to_f32(src, dst): exact fp16 -> fp32"},
    {"widen", py_widen, METH_VARARGS, "widen(kind, src, dst) -> largest |x|: BF16/F16/F32 -> float32"},
    {"quantize", py_quantize, METH_VARARGS, "quantize(type, x, nrows, n_per_row, imatrix, out)"},
    {"kernels", py_kernels, METH_NOARGS, "type names with a real kernel"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&moduledef); }
