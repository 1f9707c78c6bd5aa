/* Thin CPython wrapper over the C kernels: takes buffers, checks sizes, releases the GIL.
 *
 *   quantize(type_name: str, x: float32 buffer, nrows: int, n_per_row: int,
 *            imatrix: float32 buffer | None, out: writable buffer) -> None
 *   kernels() -> tuple of type names with a real (non-stub) kernel
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

/* fp16 -> fp32, exact. F16C where the CPU has it (8 values per instruction), else scalar. */
static void f16_to_f32_scalar(const uint16_t *src, float *dst, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) dst[i] = ggq_fp16_to_fp32(src[i]);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(const uint16_t *src, float *dst, Py_ssize_t n) {
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    f16_to_f32_scalar(src + i, dst + i, n - i);
}
#define HAVE_F16C_PATH 1
#endif

static PyObject *py_f16_to_f32(PyObject *self, PyObject *args) {
    Py_buffer src, dst;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*w*", &src, &dst)) return NULL;
    if (src.len % 2 || dst.len != src.len * 2) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_ValueError, "dst must hold 4 bytes per 2-byte source value");
        return NULL;
    }
    Py_ssize_t n = src.len / 2;
    Py_BEGIN_ALLOW_THREADS
#ifdef HAVE_F16C_PATH
    if (__builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx"))
        f16_to_f32_f16c((const uint16_t *)src.buf, (float *)dst.buf, n);
    else
#endif
        f16_to_f32_scalar((const uint16_t *)src.buf, (float *)dst.buf, n);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"f16_to_f32", py_f16_to_f32, METH_VARARGS, "f16_to_f32(src, dst): exact fp16 -> fp32"},
    {"quantize", py_quantize, METH_VARARGS, "quantize(type, x, nrows, n_per_row, imatrix, out)"},
    {"kernels", py_kernels, METH_NOARGS, "type names with a real kernel"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&moduledef); }
