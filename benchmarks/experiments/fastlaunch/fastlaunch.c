/* Issue 12 experiment (ninth session): what a compiled launch path would cost a launch.
 * launch_arrays(handle, grid, block, stream, kind, arrays): one cuLaunchKernel of a numba-ABI
 * kernel whose parameters are 1-D float32 C-contiguous arrays, read in C from CuPy arrays
 * (kind 0: type, dtype, shape, strides, data.ptr checked or read each call, as ringkernel's guard
 * does in Python) or from __cuda_array_interface__ (kind 1: any array library).
 * Not part of the package: built on the GPU machine by run.sh. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef int (*launch_fn)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void *,
                         void **, void **);
static launch_fn g_launch = NULL;
static PyObject *g_type = NULL, *g_f32 = NULL;
static PyObject *s_data, *s_ptr, *s_shape, *s_strides, *s_dtype, *s_cai, *s_typestr;

#define MAXARGS 16
#define SLOTS 7 /* meminfo, parent, nitems, itemsize, data, shape[0], strides[0] */

static PyObject *init(PyObject *self, PyObject *args) {
    unsigned long long addr;
    PyObject *tp, *dt;
    if (!PyArg_ParseTuple(args, "KOO", &addr, &tp, &dt)) return NULL;
    g_launch = (launch_fn)(uintptr_t)addr;
    Py_XINCREF(tp); Py_XSETREF(g_type, tp);
    Py_XINCREF(dt); Py_XSETREF(g_f32, dt);
    Py_RETURN_NONE;
}

static int one_long(PyObject *tuple, long long *out) {
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) != 1) {
        PyErr_SetString(PyExc_TypeError, "a 1-D array is needed");
        return -1;
    }
    *out = PyLong_AsLongLong(PyTuple_GET_ITEM(tuple, 0));
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int read_cupy(PyObject *a, uint64_t *v) {
    long long n, st;
    if (Py_TYPE(a) != (PyTypeObject *)g_type) { PyErr_SetString(PyExc_TypeError, "not a cupy.ndarray"); return -1; }
    PyObject *dt = PyObject_GetAttr(a, s_dtype);
    if (!dt) return -1;
    int ok = dt == g_f32 ? 1 : PyObject_RichCompareBool(dt, g_f32, Py_EQ);
    Py_DECREF(dt);
    if (ok != 1) { if (!ok) PyErr_SetString(PyExc_TypeError, "float32 needed"); return -1; }
    PyObject *t = PyObject_GetAttr(a, s_shape);
    if (!t) return -1;
    ok = one_long(t, &n); Py_DECREF(t);
    if (ok) return -1;
    t = PyObject_GetAttr(a, s_strides);
    if (!t) return -1;
    ok = one_long(t, &st); Py_DECREF(t);
    if (ok) return -1;
    if (st != 4) { PyErr_SetString(PyExc_TypeError, "contiguous needed"); return -1; }
    PyObject *d = PyObject_GetAttr(a, s_data);
    if (!d) return -1;
    PyObject *p = PyObject_GetAttr(d, s_ptr); Py_DECREF(d);
    if (!p) return -1;
    uint64_t ptr = PyLong_AsUnsignedLongLong(p); Py_DECREF(p);
    if (PyErr_Occurred()) return -1;
    v[0] = 0; v[1] = 0; v[2] = (uint64_t)n; v[3] = 4; v[4] = ptr; v[5] = (uint64_t)n; v[6] = 4;
    return 0;
}

static int read_cai(PyObject *a, uint64_t *v) {
    long long n;
    PyObject *cai = PyObject_GetAttr(a, s_cai);
    if (!cai) return -1;
    int rc = -1;
    PyObject *ts = PyDict_GetItemWithError(cai, s_typestr);
    PyObject *shape = PyDict_GetItemWithError(cai, s_shape);
    PyObject *strides = PyDict_GetItemWithError(cai, s_strides);
    PyObject *data = PyDict_GetItemWithError(cai, s_data);
    if (!ts || !shape || !data) { if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "bad interface"); goto done; }
    if (PyUnicode_CompareWithASCIIString(ts, "<f4") != 0) { PyErr_SetString(PyExc_TypeError, "float32 needed"); goto done; }
    if (strides && strides != Py_None) {
        long long st;
        if (one_long(strides, &st)) goto done;
        if (st != 4) { PyErr_SetString(PyExc_TypeError, "contiguous needed"); goto done; }
    }
    if (one_long(shape, &n)) goto done;
    uint64_t ptr = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(data, 0));
    if (PyErr_Occurred()) goto done;
    v[0] = 0; v[1] = 0; v[2] = (uint64_t)n; v[3] = 4; v[4] = ptr; v[5] = (uint64_t)n; v[6] = 4;
    rc = 0;
done:
    Py_DECREF(cai);
    return rc;
}

static PyObject *launch_arrays(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (handle, grid, block, stream, kind, *arrays) */
    if (nargs < 5 || nargs - 5 > MAXARGS) { PyErr_SetString(PyExc_TypeError, "launch_arrays(handle, grid, block, stream, kind, *arrays)"); return NULL; }
    uint64_t vals[MAXARGS * SLOTS];
    void *params[MAXARGS * SLOTS];
    unsigned long long handle = PyLong_AsUnsignedLongLong(args[0]);
    long grid = PyLong_AsLong(args[1]), block = PyLong_AsLong(args[2]);
    unsigned long long stream = PyLong_AsUnsignedLongLong(args[3]);
    long kind = PyLong_AsLong(args[4]);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t n = nargs - 5;
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((kind == 0 ? read_cupy : read_cai)(args[5 + i], vals + SLOTS * i)) return NULL;
    }
    for (Py_ssize_t i = 0; i < n * SLOTS; i++) params[i] = &vals[i];
    int rc = g_launch((void *)(uintptr_t)handle, (unsigned)grid, 1, 1, (unsigned)block, 1, 1, 0,
                      (void *)(uintptr_t)stream, params, NULL);
    if (rc) return PyErr_Format(PyExc_RuntimeError, "cuLaunchKernel failed: %d", rc);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"init", init, METH_VARARGS, "init(cuLaunchKernel address, cupy.ndarray, float32 dtype)"},
    {"launch_arrays", (PyCFunction)(void (*)(void))launch_arrays, METH_FASTCALL, "one launch"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "fastlaunch", NULL, -1, methods};

PyMODINIT_FUNC PyInit_fastlaunch(void) {
    s_data = PyUnicode_InternFromString("data"); s_ptr = PyUnicode_InternFromString("ptr");
    s_shape = PyUnicode_InternFromString("shape"); s_strides = PyUnicode_InternFromString("strides");
    s_dtype = PyUnicode_InternFromString("dtype"); s_cai = PyUnicode_InternFromString("__cuda_array_interface__");
    s_typestr = PyUnicode_InternFromString("typestr");
    return PyModule_Create(&mod);
}
