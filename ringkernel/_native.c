/* ringkernel's compiled launch path (issue 12): built on first use by ringkernel/native.py
 * with the system C compiler and Python's headers, cached on disk (as Triton builds its launcher).
 *
 * Two types:
 *
 * LaunchEntry: one layout entry (kernel/runtime.py, _add_layout_entry) or launch-memo entry
 *   (_memoize). It owns the parameter block packed when it was made (the template); a call
 *   copies the template onto the C stack, checks each scalar's exact type and writes its value,
 *   checks each array's type, dtype, shape and strides against the entry's and writes its
 *   pointer, then calls cuLaunchKernel once. Entries never change after they are made, so
 *   threads may call one at the same time. `entry(args)` returns the entry's decision, a
 *   1-tuple (decision,) (arrays only, when a memo entry may serve them next), or None without
 *   launching when any check fails (the caller takes the checked path, which raises the proper
 *   error). `entry.launch()` launches the template as it is (memo entries) and returns the
 *   driver's result.
 *
 * KernelCall: GpuKernel.__call__ (installed by ringkernel/kernel/core.py once the module is
 *   loaded). With no keyword arguments and no GpuContext active, a launch-memo hit (the same
 *   arrays as an earlier checked launch) or the newest layout entry launches without a Python
 *   frame; everything else goes to the Python methods _layout_launch, _call_rest and _slow_call
 *   (what __call__ is without this module).
 *
 * Every failure of a read or a conversion inside a check is cleared and answered with None
 * (the checked path repeats it and reports it); nothing here raises except a hook's error. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef int (*launch_fn)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void *,
                         void **, void **);

static PyObject *g_current = NULL; /* ringkernel._current: its `active` count of GpuContexts */

static PyObject *s_active, *s_shape, *s_strides, *s_dtype, *s_data, *s_ptr, *s_gpu_data, *s_device_pointer,
    *s_requires_grad, *s_get_device, *s_stride, *s_data_ptr, *s_closed, *s_slow_call, *s_layout_launch,
    *s_call_rest, *s_auto;

enum { K_CUPY = 1, K_NUMBA = 2, K_PTR = 3, K_TORCH = 4, K_GUARD = 5 };
#define STACK_SLOTS 128

typedef struct {
    Py_ssize_t pos;
    PyObject *tp;
    char fmt;
    Py_ssize_t offset;
} ScalarSlot;

typedef struct {
    Py_ssize_t pos;
    int kind;
    PyObject *tp, *dtype, *shape, *strides, *extra;
    Py_ssize_t offset;
} ArraySlot;

typedef struct {
    PyObject_HEAD
    launch_fn launch; /* cuLaunchKernel (or a test's stand-in, kept alive by launch_keep) */
    PyObject *launch_keep;
    void *function;
    unsigned grid[3], block[3], shmem;
    void *stream;
    Py_ssize_t nslots;
    uint64_t *tmpl;
    Py_ssize_t nscalars, narrays;
    ScalarSlot *scalars;
    ArraySlot *arrays;
    PyObject *stream_checks; /* tuple of callables: True when nothing must be waited for */
    PyObject *decision, *notify, *report_name, *launcher, *backoff;
    PyObject *report_stream, *report_kind; /* what launch() reports (memo entries made while hooks were registered) */
    PyObject *dict;
} Entry;

static PyTypeObject EntryType;

/* -- event stamps (issue 13) -------------------------------------------------------------------
 * EventStamps: the per-launch half of profiling/timing.py's EventTimer (GpuTiming.EVENTS) in C:
 *   record(launch_id, host_ns, stream) checks the stream is not capturing a CUDA graph
 *   (cuStreamIsCapturing; not for the legacy default stream, which cannot), records a pooled event on it (cuEventRecord) and queues the stamp
 *   in its stream's queue (GPU order: nothing between the record and the queueing lets another
 *   thread in); poll() gives each finished stamp its GPU span from consecutive events of its
 *   stream (cuEventElapsedTime against the previous one, the first against the calibration
 *   event) and recycles the events. A profiler's Recorder calls stamps_record directly. The
 *   driver's functions come as addresses (ctypes' ones; tests pass stand-ins). Python's
 *   _PyStamps in timing.py does the same where this module is not built. */
typedef int (*ev_record_fn)(void *, void *);
typedef int (*ev_capturing_fn)(void *, int *);
typedef int (*ev_elapsed_fn)(float *, void *, void *);
#define CUDA_NOT_READY 600

typedef struct { int64_t lid, host; uint64_t ev; } Stamp;
typedef struct {
    uint64_t stream;
    Stamp *q;
    Py_ssize_t head, n, cap; /* a ring */
    int has_prev;
    uint64_t prev_ev;
    int64_t prev_end;
} StreamQ;

typedef struct {
    PyObject_HEAD
    ev_record_fn record;
    ev_capturing_fn capturing;
    ev_elapsed_fn elapsed;
    PyObject *keep, *create, *check; /* the functions' owners; new_event(); check(rc, what) raises */
    uint64_t *free_evs;
    Py_ssize_t nfree, capfree;
    StreamQ *sq;
    Py_ssize_t nsq, capsq, last_q; /* last_q: the queue of the latest record (most launches repeat a stream) */
    PyObject *index;               /* {stream: its queue's index} */
    uint64_t ref_ev;
    int64_t ref_ns;
    Py_ssize_t queued, next_resolve;
} Stamps;

static PyTypeObject StampsType;

static int stamps_raise(Stamps *s, int rc, const char *what) {
    PyObject *r = PyObject_CallFunction(s->check, "is", rc, what);
    if (!r) return -1;
    Py_DECREF(r);
    if (!PyErr_Occurred()) PyErr_Format(PyExc_RuntimeError, "%s failed (%d)", what, rc);
    return -1;
}

static int stamps_give(Stamps *s, uint64_t ev) {
    if (s->nfree == s->capfree) {
        Py_ssize_t cap = s->capfree ? 2 * s->capfree : 64;
        uint64_t *g = PyMem_Realloc(s->free_evs, (size_t)cap * sizeof(uint64_t));
        if (!g) { PyErr_NoMemory(); return -1; }
        s->free_evs = g;
        s->capfree = cap;
    }
    s->free_evs[s->nfree++] = ev;
    return 0;
}

/* an event from the pool, or a new one (new_event() in Python); 0 on an error */
static uint64_t stamps_event(Stamps *s) {
    if (s->nfree) return s->free_evs[--s->nfree];
    PyObject *r = PyObject_CallNoArgs(s->create);
    if (!r) return 0;
    unsigned long long ev = PyLong_AsUnsignedLongLong(r);
    Py_DECREF(r);
    if (ev == (unsigned long long)-1 && PyErr_Occurred()) return 0;
    if (!ev) { PyErr_SetString(PyExc_RuntimeError, "new_event() gave a null event"); return 0; }
    return (uint64_t)ev;
}

static StreamQ *stamps_queue(Stamps *s, uint64_t stream) {
    if (s->last_q < s->nsq && s->sq[s->last_q].stream == stream) return &s->sq[s->last_q];
    PyObject *key = PyLong_FromUnsignedLongLong(stream);
    if (!key) return NULL;
    PyObject *at = PyDict_GetItemWithError(s->index, key);
    if (at) {
        Py_ssize_t i = PyLong_AsSsize_t(at);
        Py_DECREF(key);
        if (i < 0 || i >= s->nsq) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_SystemError, "EventStamps: a bad stream index");
            return NULL;
        }
        s->last_q = i;
        return &s->sq[i];
    }
    if (PyErr_Occurred()) { Py_DECREF(key); return NULL; }
    if (s->nsq == s->capsq) { /* room first: an index entry is made only for a queue that exists */
        Py_ssize_t cap = s->capsq ? 2 * s->capsq : 8;
        StreamQ *g = PyMem_Realloc(s->sq, (size_t)cap * sizeof(StreamQ));
        if (!g) { Py_DECREF(key); PyErr_NoMemory(); return NULL; }
        s->sq = g;
        s->capsq = cap;
    }
    PyObject *iv = PyLong_FromSsize_t(s->nsq);
    int bad = !iv || PyDict_SetItem(s->index, key, iv);
    Py_XDECREF(iv);
    Py_DECREF(key);
    if (bad) return NULL;
    s->last_q = s->nsq;
    StreamQ *q = &s->sq[s->nsq++];
    memset(q, 0, sizeof(*q));
    q->stream = stream;
    return q;
}

static int queue_push(StreamQ *q, Stamp st) {
    if (q->n == q->cap) {
        Py_ssize_t cap = q->cap ? 2 * q->cap : 256;
        Stamp *g = PyMem_Malloc((size_t)cap * sizeof(Stamp));
        if (!g) { PyErr_NoMemory(); return -1; }
        for (Py_ssize_t i = 0; i < q->n; i++) g[i] = q->q[(q->head + i) % q->cap];
        PyMem_Free(q->q);
        q->q = g;
        q->head = 0;
        q->cap = cap;
    }
    q->q[(q->head + q->n) % q->cap] = st;
    q->n++;
    return 0;
}

/* 0: recorded, 1: the stream is capturing a graph (nothing recorded: untimed), 2: recorded and
 * a poll is due (recycles events: a GPU far behind is not polled on every launch), -1: error */
static int stamps_record(Stamps *s, int64_t lid, int64_t host, uint64_t stream) {
    int status = 0, rc;
    /* the legacy default stream (0) can never capture (CUDA refuses to begin a capture on it),
     * and the launch just made on it succeeded: no query (~1 us) for the most common stream */
    if (stream != 0 && ((rc = s->capturing((void *)(uintptr_t)stream, &status)) || status)) return 1;
    uint64_t ev = stamps_event(s);
    if (!ev) return -1;
    StreamQ *q = stamps_queue(s, stream); /* (after the event: making one runs Python) */
    if (!q) { stamps_give(s, ev); return -1; }
    Stamp st = {lid, host, ev};
    if (queue_push(q, st)) { stamps_give(s, ev); return -1; }
    rc = s->record((void *)(uintptr_t)ev, (void *)(uintptr_t)stream);
    if (rc) { /* not recorded: not queued either */
        q->n--;
        stamps_give(s, ev);
        return stamps_raise(s, rc, "cuEventRecord");
    }
    s->queued++;
    return s->queued >= s->next_resolve ? 2 : 0;
}

static PyObject *stamps_py_record(PyObject *self, PyObject *args) {
    long long lid, host;
    unsigned long long stream;
    if (!PyArg_ParseTuple(args, "LLK:record", &lid, &host, &stream)) return NULL;
    int r = stamps_record((Stamps *)self, lid, host, stream);
    return r < 0 ? NULL : PyLong_FromLong(r);
}

/* poll(failed=None) -> list of (launch id, start, end, estimated) for every stamp whose event
 * finished (in each stream's order, stopping at the first that has not); failed: {stream: why}
 * whose remaining stamps are given up instead (their work failed): (launch id, None, None, why);
 * so is a stream whose cuEventElapsedTime fails (why: the driver's error). A stamp leaves its
 * queue before any Python runs (building its item may collect garbage, whose finalizers may
 * launch on a new stream and move the queues): the queue is found again by its index. */
static PyObject *stamps_poll(PyObject *self, PyObject *args) {
    Stamps *s = (Stamps *)self;
    PyObject *failed = Py_None;
    if (!PyArg_ParseTuple(args, "|O:poll", &failed)) return NULL;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (Py_ssize_t k = 0; k < s->nsq; k++) {
        PyObject *why = NULL; /* a new reference while set */
        if (failed != Py_None && s->sq[k].n) {
            PyObject *key = PyLong_FromUnsignedLongLong(s->sq[k].stream);
            if (!key) goto fail;
            why = PyDict_Check(failed) ? PyDict_GetItemWithError(failed, key) : NULL;
            Py_DECREF(key);
            if (!why && PyErr_Occurred()) goto fail;
            if (why == Py_None) why = NULL; /* (as failed.get(stream) is None: not failed) */
            Py_XINCREF(why);
        }
        while (k < s->nsq && s->sq[k].n) {
            StreamQ *q = &s->sq[k];
            Stamp st = q->q[q->head];
            int64_t start = 0, end = 0;
            int estimated = 0, given_up = why != NULL;
            uint64_t recycle = 0;
            if (!given_up) {
                uint64_t base = q->has_prev ? q->prev_ev : s->ref_ev;
                int64_t base_ns = q->has_prev ? q->prev_end : s->ref_ns;
                float ms = 0;
                int rc = s->elapsed(&ms, (void *)(uintptr_t)base, (void *)(uintptr_t)st.ev);
                if (rc == CUDA_NOT_READY) break; /* not finished: later ones on this stream are not either */
                if (rc) { /* the rest of this stream is given up with the driver's error */
                    stamps_raise(s, rc, "cuEventElapsedTime");
                    if (!PyErr_ExceptionMatches(PyExc_Exception)) goto fail; /* (KeyboardInterrupt goes on) */
                    PyObject *type, *value, *tb;
                    PyErr_Fetch(&type, &value, &tb);
                    why = value ? PyObject_Str(value) : PyUnicode_FromString("cuEventElapsedTime failed");
                    Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb);
                    if (!why) goto fail;
                    q = &s->sq[k];
                    continue;
                }
                end = base_ns + (int64_t)nearbyint((double)ms * 1e6); /* round() of Python: half to even */
                start = q->has_prev ? (st.host > q->prev_end ? st.host : q->prev_end) : st.host;
                estimated = !q->has_prev || st.host > q->prev_end;
                if (q->has_prev) recycle = q->prev_ev;
                q->has_prev = 1;
                q->prev_ev = st.ev;
                q->prev_end = end;
            } else {
                recycle = st.ev;
            }
            q->head = (q->head + 1) % q->cap;
            q->n--;
            s->queued--;
            if (!q->n) { /* drained: its buffer goes (a program making many streams keeps little) */
                PyMem_Free(q->q);
                q->q = NULL;
                q->head = q->cap = 0;
            }
            /* -- Python from here on: q may move -- */
            if (recycle && stamps_give(s, recycle)) { Py_XDECREF(why); goto fail; }
            PyObject *item = given_up ? Py_BuildValue("(LOOO)", (long long)st.lid, Py_None, Py_None, why)
                                      : Py_BuildValue("(LLLO)", (long long)st.lid, (long long)(start < end ? start : end),
                                                      (long long)end, estimated ? Py_True : Py_False);
            if (!item || PyList_Append(out, item)) { Py_XDECREF(item); Py_XDECREF(why); goto fail; }
            Py_DECREF(item);
        }
        Py_XDECREF(why);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* last() -> {stream: its newest queued event}: what a blocking resolve waits for */
static PyObject *stamps_last(PyObject *self, PyObject *unused) {
    Stamps *s = (Stamps *)self;
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (Py_ssize_t k = 0; k < s->nsq; k++) {
        StreamQ *q = &s->sq[k];
        if (!q->n) continue;
        PyObject *key = PyLong_FromUnsignedLongLong(q->stream);
        PyObject *v = PyLong_FromUnsignedLongLong(q->q[(q->head + q->n - 1) % q->cap].ev);
        int bad = !key || !v || PyDict_SetItem(d, key, v);
        Py_XDECREF(key);
        Py_XDECREF(v);
        if (bad) { Py_DECREF(d); return NULL; }
    }
    return d;
}

static PyObject *stamps_py_give(PyObject *self, PyObject *arg) {
    unsigned long long ev = PyLong_AsUnsignedLongLong(arg);
    if (ev == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (!ev) { PyErr_SetString(PyExc_ValueError, "give(event): a null event"); return NULL; }
    if (stamps_give((Stamps *)self, ev)) return NULL;
    Py_RETURN_NONE;
}

static PyObject *stamps_py_event(PyObject *self, PyObject *unused) {
    uint64_t ev = stamps_event((Stamps *)self);
    return ev ? PyLong_FromUnsignedLongLong(ev) : NULL;
}

static PyObject *stamps_set_reference(PyObject *self, PyObject *args) {
    Stamps *s = (Stamps *)self;
    unsigned long long ev;
    long long ns;
    if (!PyArg_ParseTuple(args, "KL:set_reference", &ev, &ns)) return NULL;
    s->ref_ev = ev;
    s->ref_ns = ns;
    Py_RETURN_NONE;
}

static PyObject *stamps_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    unsigned long long rec, cap, ela;
    PyObject *keep, *create, *check;
    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "EventStamps takes positional arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "KKKOOO:EventStamps", &rec, &cap, &ela, &keep, &create, &check)) return NULL;
    if (!rec || !cap || !ela || !PyCallable_Check(create) || !PyCallable_Check(check)) {
        PyErr_SetString(PyExc_TypeError, "EventStamps(cuEventRecord, cuStreamIsCapturing, cuEventElapsedTime addresses, "
                                         "keep, new_event, check)");
        return NULL;
    }
    Stamps *s = (Stamps *)type->tp_alloc(type, 0);
    if (!s) return NULL;
    s->record = (ev_record_fn)(uintptr_t)rec;
    s->capturing = (ev_capturing_fn)(uintptr_t)cap;
    s->elapsed = (ev_elapsed_fn)(uintptr_t)ela;
    s->keep = Py_NewRef(keep);
    s->create = Py_NewRef(create);
    s->check = Py_NewRef(check);
    s->next_resolve = 512;
    if (!(s->index = PyDict_New())) { Py_DECREF(s); return NULL; }
    return (PyObject *)s;
}

static int stamps_traverse(PyObject *self, visitproc visit, void *arg) {
    Stamps *s = (Stamps *)self;
    Py_VISIT(s->keep); Py_VISIT(s->create); Py_VISIT(s->check); Py_VISIT(s->index);
    return 0;
}

static int stamps_clear(PyObject *self) {
    Stamps *s = (Stamps *)self;
    Py_CLEAR(s->keep); Py_CLEAR(s->create); Py_CLEAR(s->check); Py_CLEAR(s->index);
    return 0;
}

static void stamps_dealloc(PyObject *self) {
    Stamps *s = (Stamps *)self;
    PyObject_GC_UnTrack(self);
    stamps_clear(self);
    for (Py_ssize_t k = 0; k < s->nsq; k++) PyMem_Free(s->sq[k].q);
    PyMem_Free(s->sq);
    PyMem_Free(s->free_evs); /* (the events themselves belong to the timer, which destroys them) */
    Py_TYPE(self)->tp_free(self);
}

static PyMethodDef stamps_methods[] = {
    {"record", stamps_py_record, METH_VARARGS, "record(launch_id, host_ns, stream) -> 0, 1 (capturing: untimed) or 2 (poll due)"},
    {"poll", stamps_poll, METH_VARARGS, "poll(failed=None) -> [(launch id, start, end, estimated or why)]"},
    {"last", stamps_last, METH_NOARGS, "{stream: its newest queued event}"},
    {"give", stamps_py_give, METH_O, "give(event): back to the pool"},
    {"event", stamps_py_event, METH_NOARGS, "an event from the pool (or a new one)"},
    {"set_reference", stamps_set_reference, METH_VARARGS, "set_reference(event, host_ns): the calibration event"},
    {NULL, NULL, 0, NULL}};

static PyMemberDef stamps_members[] = {
    {"queued", T_PYSSIZET, offsetof(Stamps, queued), READONLY, "stamps waiting for their event"},
    {"next_resolve", T_PYSSIZET, offsetof(Stamps, next_resolve), 0, "record() says a poll is due from this many queued"},
    {"pooled", T_PYSSIZET, offsetof(Stamps, nfree), READONLY, "events in the pool"},
    {NULL, 0, 0, 0, NULL}};

static PyTypeObject StampsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ringkernel._native.EventStamps",
    .tp_basicsize = sizeof(Stamps),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = stamps_new,
    .tp_dealloc = stamps_dealloc,
    .tp_traverse = stamps_traverse,
    .tp_clear = stamps_clear,
    .tp_methods = stamps_methods,
    .tp_members = stamps_members,
    .tp_doc = "EventTimer's per-launch events in C (see the module's source).",
};

/* -- launch reports (issue 13) ----------------------------------------------------------------
 * Notifier: kernel/hooks.py's notify(name, decision, stream, kind) in C (installed there once
 *   this module is loaded: hooks.use_native). It gives each registered hook, in registration
 *   order, the launch's LaunchEvent (made once, and only if a hook needs it); a Recorder hook is
 *   taken in C. A hook that raises an Exception is reported to hooks._hook_failed (logged once)
 *   and the launch goes on, as in the Python notify; other BaseExceptions propagate.
 * Recorder: a GpuProfiler's launch hook (profiler.py _on_launch) in C for the usual case: the
 *   profiler enabled, room for the event, no retirement waiting, the thread's (or asyncio
 *   task's) track and the stream already known. It reads and writes the profiler's own
 *   attributes (its __dict__: _count, _last; the same checks), so the two forms share one
 *   state; every other case (a new thread, task or stream, the event limit) calls _on_launch
 *   itself with the same event. A launch it takes is kept as a C record (no Python object
 *   per launch: a launch's host cost includes the page faults of a growing heap) until the
 *   profiler takes them (take(): the tuples _on_launch would have appended to _launches).
 *   The timer's launched() is called at the launch, except for `fast_timer` (CUPTI's: its
 *   launched() only appends (id, host time, thread & 0xFFFFFFFF) to _pending), whose entries
 *   take() returns too, unless the instance's launched() was replaced (then it is called). */
static PyObject *s_timer, *s_enabled, *s_filter, *s_count, *s_max_events, *s_to_retire, *s_tracks, *s_stacks,
    *s_stream_cache, *s_streams, *s_ended, *s_id, *s_pending, *s_launched, *s_config, *s_grid,
    *s_block, *s_shared_mem, *s_elements, *s_get_running_loop, *s_current_task, *s_asyncio, *s_plast, *s_captured, *s_resolve, *s_recorder,
    *s_launches;

/* time.perf_counter_ns()'s clock (CLOCK_MONOTONIC on Linux; a test compares them) */
static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + (int64_t)ts.tv_nsec;
}

typedef struct {
    PyObject *name, *fields, *stream, *kind, *skey, *sid, *tid, *parent; /* strong references */
    int64_t t, gap, end, rid;
    unsigned long thread;
    char has_gap, pending; /* pending: the fast timer's entry is owed (take() returns it) */
} LaunchRec;

typedef struct {
    PyObject_HEAD
    PyObject *pdict, *fallback, *fast_timer, *ctxvar, *ids, *event_type;
    PyObject *timer_dict; /* fast_timer's __dict__ (or NULL) */
    PyObject *stamps;     /* fast_timer's EventStamps (an EventTimer), or NULL (CUPTI's timer) */
    LaunchRec *recs;
    Py_ssize_t n, cap;
    long long fast, slow;
} Recorder;

static PyTypeObject RecorderType;

static void rec_release(LaunchRec *recs, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        LaunchRec *x = &recs[i];
        Py_XDECREF(x->name); Py_XDECREF(x->fields); Py_XDECREF(x->stream); Py_XDECREF(x->kind);
        Py_XDECREF(x->skey); Py_XDECREF(x->sid); Py_XDECREF(x->tid); Py_XDECREF(x->parent);
    }
}

static PyObject *g_get_loop = NULL; /* asyncio._get_running_loop, once asyncio is imported */

/* The running asyncio task (a new reference), None, or NULL on an error: ranges.py _task(). */
static PyObject *running_task(void) {
    if (!g_get_loop) {
        PyObject *aio = PyImport_GetModule(s_asyncio);
        if (!aio) {
            if (PyErr_Occurred()) return NULL;
            Py_RETURN_NONE; /* not imported: no task can exist */
        }
        g_get_loop = PyObject_GetAttr(aio, s_get_running_loop);
        Py_DECREF(aio);
        if (!g_get_loop) return NULL;
    }
    PyObject *loop = PyObject_CallNoArgs(g_get_loop);
    if (!loop || loop == Py_None) return loop;
    PyObject *task = NULL, *aio = PyImport_GetModule(s_asyncio); /* (inside a loop: asyncio's current_task) */
    PyObject *ct = aio ? PyObject_GetAttr(aio, s_current_task) : NULL;
    if (ct) task = PyObject_CallOneArg(ct, loop);
    else if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "asyncio is gone");
    Py_XDECREF(ct);
    Py_XDECREF(aio);
    Py_DECREF(loop);
    return task;
}

/* a borrowed reference to the profiler's attribute, or NULL (an error set, or not there) */
static PyObject *pget(Recorder *r, PyObject *name) { return PyDict_GetItemWithError(r->pdict, name); }

/* LaunchEvent(name, grid, block, shared_mem, stream, kind, elements, t): tuple.__new__ as _make does */
static PyObject *make_event(PyObject *event_type, PyObject *name, PyObject *fields, PyObject *stream, PyObject *kind,
                            int64_t t) {
    PyObject *tobj = PyLong_FromLongLong(t);
    if (!tobj) return NULL;
    PyObject *vals = PyTuple_Pack(8, name, PyTuple_GET_ITEM(fields, 0), PyTuple_GET_ITEM(fields, 1),
                                  PyTuple_GET_ITEM(fields, 2), stream, kind, PyTuple_GET_ITEM(fields, 3), tobj);
    Py_DECREF(tobj);
    if (!vals) return NULL;
    PyObject *packed = PyTuple_Pack(1, vals);
    Py_DECREF(vals);
    if (!packed) return NULL;
    PyObject *ev = PyTuple_Type.tp_new((PyTypeObject *)event_type, packed, NULL);
    Py_DECREF(packed);
    return ev;
}

/* The tuple _on_launch appends to _launches for record x, and where x->pending the CUPTI timer's
 * (id, host time, thread & 0xFFFFFFFF) entry (else *pend is NULL): new references; -1 on an error. */
static int rec_tuples(Recorder *r, const LaunchRec *x, PyObject **launch, PyObject **pend) {
    *launch = *pend = NULL;
    PyObject *ev = make_event(r->event_type, x->name, x->fields, x->stream, x->kind, x->t);
    PyObject *rid = PyLong_FromLongLong(x->rid), *end = PyLong_FromLongLong(x->end);
    PyObject *gap = x->has_gap ? PyLong_FromLongLong(x->gap) : Py_NewRef(Py_None);
    if (ev && rid && end && gap) *launch = PyTuple_Pack(8, ev, rid, x->skey, x->sid, gap, x->tid, x->parent, end);
    if (*launch && x->pending) {
        PyObject *tobj = PyLong_FromLongLong(x->t), *th = PyLong_FromUnsignedLong(x->thread & 0xFFFFFFFFUL);
        if (tobj && th) *pend = PyTuple_Pack(3, rid, tobj, th);
        Py_XDECREF(tobj); Py_XDECREF(th);
    }
    Py_XDECREF(ev); Py_XDECREF(rid); Py_XDECREF(end); Py_XDECREF(gap);
    if (!*launch || (x->pending && !*pend)) {
        Py_CLEAR(*launch);
        return -1;
    }
    return 0;
}

/* room for one more record (0), or -1 with MemoryError; take() may have emptied the buffer
 * meanwhile (n = cap = 0): the same rule for every check */
static int rec_reserve(Recorder *r) {
    if (r->n < r->cap) return 0;
    Py_ssize_t cap = r->cap ? 2 * r->cap : 1024;
    LaunchRec *grown = PyMem_Realloc(r->recs, (size_t)cap * sizeof(LaunchRec));
    if (!grown) { PyErr_NoMemory(); return -1; }
    r->recs = grown;
    r->cap = cap;
    return 0;
}

#define NOT_TAKEN() do { result = PyErr_Occurred() ? -1 : 0; goto done; } while (0)

/* 1: recorded (or nothing to record), 0: a case left to _on_launch (nothing changed), -1: error */
static int rec_record(Recorder *r, PyObject *name, PyObject *fields, PyObject *stream, PyObject *kind, int64_t t,
                      int *filtered) {
    int result = -1;
    *filtered = 0;
    PyObject *task = NULL, *key = NULL, *parent = NULL, *ctxval = NULL, *skey = NULL, *tid = NULL, *sid = NULL,
             *rid = NULL, *end = NULL, *timer = NULL, *n1 = NULL;
    int64_t gap = 0;
    int has_gap = 0;
    timer = pget(r, s_timer);
    if (!timer) NOT_TAKEN();
    if (timer == Py_None) return 1;
    Py_INCREF(timer);
    PyObject *en = pget(r, s_enabled);
    if (!en) NOT_TAKEN();
    if (en == Py_False) { result = 1; goto done; }
    if (en != Py_True) NOT_TAKEN();
    PyObject *filt = pget(r, s_filter);
    if (!filt) NOT_TAKEN();
    if (filt != Py_None) { /* GpuContext's: is the context current (read-only) */
        Py_INCREF(filt);
        PyObject *ok = PyObject_CallNoArgs(filt);
        Py_DECREF(filt);
        if (!ok) goto done;
        int yes = PyObject_IsTrue(ok);
        Py_DECREF(ok);
        if (yes <= 0) { result = yes < 0 ? -1 : 1; goto done; }
        *filtered = 1; /* a case left to _on_launch must not ask the filter again */
    }
    PyObject *count = pget(r, s_count), *maxe = pget(r, s_max_events);
    if (!count || !maxe || !PyLong_CheckExact(count) || !PyLong_CheckExact(maxe)) NOT_TAKEN();
    int room = PyObject_RichCompareBool(count, maxe, Py_LT);
    if (room <= 0) { result = room < 0 ? -1 : 0; goto done; } /* _on_launch counts the dropped one */
    PyObject *tr = pget(r, s_to_retire);
    if (!tr) NOT_TAKEN();
    int busy = PyObject_IsTrue(tr);
    if (busy) { result = busy < 0 ? -1 : 0; goto done; }
    task = running_task();
    if (!task) goto done;
    unsigned long ident = PyThread_get_thread_ident();
    key = PyLong_FromUnsignedLong(ident);
    if (!key) goto done;
    if (task != Py_None) {
        PyObject *k2 = Py_BuildValue("(ON)", key, PyLong_FromVoidPtr(task));
        Py_SETREF(key, k2);
        if (!key) goto done;
    }
    PyObject *tracks = pget(r, s_tracks);
    if (!tracks || !PyDict_Check(tracks)) NOT_TAKEN();
    PyObject *track = PyDict_GetItemWithError(tracks, key);
    if (!track || !PyTuple_Check(track) || PyTuple_GET_SIZE(track) < 1) NOT_TAKEN(); /* a new track */
    tid = PyTuple_GET_ITEM(track, 0);
    Py_INCREF(tid);
    PyObject *last = pget(r, s_plast);
    if (!last || !PyDict_Check(last)) NOT_TAKEN();
    PyObject *lastv = PyDict_GetItemWithError(last, key);
    if (lastv) {
        int64_t lv = PyLong_AsLongLong(lastv);
        if (lv == -1 && PyErr_Occurred()) goto done;
        gap = t - lv;
        has_gap = 1;
    } else if (PyErr_Occurred()) {
        goto done;
    }
    PyObject *stacks = pget(r, s_stacks);
    if (!stacks || !PyDict_Check(stacks)) NOT_TAKEN();
    PyObject *stack = PyDict_GetItemWithError(stacks, key);
    if (!stack && PyErr_Occurred()) goto done;
    if (stack && !PyTuple_Check(stack)) NOT_TAKEN();
    if (stack && PyTuple_GET_SIZE(stack) > 0) {
        parent = PyObject_GetAttr(PyTuple_GET_ITEM(stack, PyTuple_GET_SIZE(stack) - 1), s_id);
        if (!parent) goto done;
    } else { /* _inherited(): the innermost range still open where this context was made */
        if (PyContextVar_Get(r->ctxvar, NULL, &ctxval) < 0) goto done;
        if (!ctxval || !PyTuple_Check(ctxval)) NOT_TAKEN();
        for (Py_ssize_t i = PyTuple_GET_SIZE(ctxval) - 1; i >= 0 && !parent; i--) {
            PyObject *op = PyTuple_GET_ITEM(ctxval, i);
            PyObject *ended = PyObject_GetAttr(op, s_ended);
            if (!ended) goto done;
            int e = PyObject_IsTrue(ended);
            Py_DECREF(ended);
            if (e < 0) goto done;
            if (!e && !(parent = PyObject_GetAttr(op, s_id))) goto done;
        }
        if (!parent) { parent = Py_None; Py_INCREF(parent); }
    }
    if (stream == Py_None) {
        skey = PyLong_FromLong(0);
        if (!skey) goto done;
    } else if (PyLong_CheckExact(stream)) {
        skey = stream; /* int(stream or 0) */
        Py_INCREF(skey);
    } else {
        PyObject *cache = pget(r, s_stream_cache);
        if (!cache || !PyDict_Check(cache)) NOT_TAKEN();
        PyObject *sidk = PyLong_FromVoidPtr(stream);
        if (!sidk) goto done;
        PyObject *c = PyDict_GetItemWithError(cache, sidk);
        Py_DECREF(sidk);
        if (!c || !PyTuple_Check(c) || PyTuple_GET_SIZE(c) != 2 || PyTuple_GET_ITEM(c, 0) != stream) NOT_TAKEN();
        skey = PyTuple_GET_ITEM(c, 1);
        Py_INCREF(skey);
    }
    PyObject *streams = pget(r, s_streams);
    if (!streams || !PyDict_Check(streams)) NOT_TAKEN();
    PyObject *s = PyDict_GetItemWithError(streams, skey);
    if (!s || !PyTuple_Check(s) || PyTuple_GET_SIZE(s) < 1) NOT_TAKEN(); /* a new stream */
    sid = PyTuple_GET_ITEM(s, 0);
    Py_INCREF(sid);
    if (rec_reserve(r)) goto done; /* room first: nothing below fails for want of memory after the timer ran */
    /* -- taken: from here on every failure is an error, as in _on_launch -- */
    rid = PyIter_Next(r->ids);
    if (!rid) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "the profiler's id counter ended");
        goto done;
    }
    int64_t rid64 = PyLong_AsLongLong(rid);
    if (rid64 == -1 && PyErr_Occurred()) goto done;
    int owed = 0, direct = 0, stamped = 0;
    if (timer == r->fast_timer && r->timer_dict) {
        /* its launched() replaced on the instance (a test, a benchmark): called, not bypassed */
        int replaced = PyDict_GetItemWithError(r->timer_dict, s_launched) != NULL;
        if (PyErr_Occurred()) goto done;
        if (!replaced) {
            if (r->stamps) direct = 1;
            else owed = 1;
        }
    }
    if (direct) { /* EventTimer.launched(): its event recorded here */
        unsigned long long h = PyLong_AsUnsignedLongLong(skey);
        if (h == (unsigned long long)-1 && PyErr_Occurred()) goto done;
        stamped = stamps_record((Stamps *)r->stamps, rid64, t, h);
        if (stamped < 0) goto done;
    } else if (!owed) {
        PyObject *tobj = PyLong_FromLongLong(t), *gobj = has_gap ? PyLong_FromLongLong(gap) : Py_NewRef(Py_None);
        PyObject *x = tobj && gobj ? PyObject_CallMethodObjArgs(timer, s_launched, rid, tobj, gobj, skey, NULL) : NULL;
        Py_XDECREF(tobj);
        Py_XDECREF(gobj);
        if (!x) goto done;
        Py_DECREF(x);
    }
    int64_t end64 = now_ns();
    if (!(end = PyLong_FromLongLong(end64))) goto done;
    count = pget(r, s_count); /* read again: the timer may have run Python */
    if (!count) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "the profiler has no _count");
        goto done;
    }
    PyObject *one = PyLong_FromLong(1);
    n1 = one ? PyNumber_Add(count, one) : NULL;
    Py_XDECREF(one);
    if (!n1) goto done;
    last = pget(r, s_plast);
    if (!last || !PyDict_Check(last)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "the profiler's _last is not a dict");
        goto done;
    }
    if (PyDict_SetItem(last, key, end) || PyDict_SetItem(r->pdict, s_count, n1)) goto done;
    PyObject *holder = pget(r, s_recorder);
    if (!holder && PyErr_Occurred()) goto done;
    if (holder != (PyObject *)r) {
        /* the profiler took its records and let this Recorder go while the timer's Python ran
         * (it was left on another thread): the launch goes where _on_launch would put it */
        LaunchRec one = {name, fields, stream, kind, skey, sid, tid, parent, t, gap, end64, rid64, ident,
                         (char)has_gap, (char)owed}; /* (borrowed references: not released) */
        PyObject *tup, *pt;
        if (rec_tuples(r, &one, &tup, &pt)) goto done;
        PyObject *launches = pget(r, s_launches);
        int bad = !launches || !PyList_Check(launches) || PyList_Append(launches, tup);
        if (bad && !PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "the profiler's _launches is not a list");
        if (!bad && pt) { /* its CUPTI timer's entry, as launched() would have appended it */
            PyObject *pend = PyDict_GetItemWithError(r->timer_dict, s_pending);
            bad = !pend || !PyList_Check(pend) || PyList_Append(pend, pt);
            if (bad && !PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "the CUPTI timer's _pending is not a list");
        }
        Py_DECREF(tup);
        Py_XDECREF(pt);
        if (bad) goto done;
        r->fast++;
        goto after_record;
    }
    if (rec_reserve(r)) goto done; /* (the timer's Python took the room, or take() emptied the buffer) */
    LaunchRec *x = &r->recs[r->n++];
    Py_INCREF(name); Py_INCREF(fields); Py_INCREF(stream); Py_INCREF(kind);
    x->name = name; x->fields = fields; x->stream = stream; x->kind = kind;
    x->skey = skey; x->sid = sid; x->tid = tid; x->parent = parent; /* (the references move to the record) */
    skey = sid = tid = parent = NULL;
    x->t = t; x->gap = gap; x->has_gap = (char)has_gap; x->end = end64; x->rid = rid64; x->thread = ident;
    x->pending = (char)owed;
    r->fast++;
after_record:
    if (stamped == 1 || stamped == 2) { /* untimed (a graph capture), or a poll due: the timer's Python */
        PyObject *m = stamped == 1 ? PyObject_CallMethodOneArg(timer, s_captured, rid)
                                   : PyObject_CallMethodOneArg(timer, s_resolve, Py_False);
        if (!m) goto done;
        Py_DECREF(m);
    }
    result = 1;
done:
    Py_XDECREF(timer); Py_XDECREF(task); Py_XDECREF(key); Py_XDECREF(parent); Py_XDECREF(ctxval); Py_XDECREF(skey);
    Py_XDECREF(tid); Py_XDECREF(sid); Py_XDECREF(rid); Py_XDECREF(end); Py_XDECREF(n1);
    return result;
}
#undef NOT_TAKEN

/* take() -> (launches, pending): the records as _on_launch's tuples for _launches, and the fast
 * timer's owed (id, host time, thread & 0xFFFFFFFF) entries for its _pending; forgets them. */
static PyObject *recorder_take(PyObject *self, PyObject *unused) {
    Recorder *r = (Recorder *)self;
    LaunchRec *recs = r->recs; /* detached first: building the tuples may run a launch (a finalizer) */
    Py_ssize_t n = r->n;
    r->recs = NULL;
    r->n = r->cap = 0;
    PyObject *launches = PyList_New(0), *pending = PyList_New(0), *result = NULL;
    if (!launches || !pending) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *tup, *p;
        if (rec_tuples(r, &recs[i], &tup, &p)) goto done;
        int bad = PyList_Append(launches, tup) || (p && PyList_Append(pending, p));
        Py_DECREF(tup);
        Py_XDECREF(p);
        if (bad) goto done;
    }
    result = PyTuple_Pack(2, launches, pending);
done:
    rec_release(recs, n);
    PyMem_Free(recs);
    Py_XDECREF(launches);
    Py_XDECREF(pending);
    return result;
}

static PyObject *recorder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *pdict, *fallback, *fast_timer, *ctxvar, *ids, *event_type, *stamps = Py_None;
    static char *kw[] = {"profiler_dict", "fallback", "fast_timer", "ctxvar", "ids", "event_type", "stamps", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOOOO!|O:Recorder", kw, &PyDict_Type, &pdict, &fallback,
                                     &fast_timer, &ctxvar, &ids, &PyType_Type, &event_type, &stamps))
        return NULL;
    if (stamps != Py_None && (Py_TYPE(stamps) != &StampsType || fast_timer == Py_None)) {
        PyErr_SetString(PyExc_TypeError, "Recorder: stamps must be the fast timer's EventStamps");
        return NULL;
    }
    if (!PyCallable_Check(fallback) || !PyContextVar_CheckExact(ctxvar) || !PyIter_Check(ids) ||
        !PyType_IsSubtype((PyTypeObject *)event_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "Recorder(profiler.__dict__, _on_launch, timer or None, a ContextVar, an iterator, LaunchEvent)");
        return NULL;
    }
    Recorder *r = (Recorder *)type->tp_alloc(type, 0);
    if (!r) return NULL;
    r->pdict = Py_NewRef(pdict);
    r->fallback = Py_NewRef(fallback);
    r->fast_timer = Py_NewRef(fast_timer);
    r->ctxvar = Py_NewRef(ctxvar);
    r->ids = Py_NewRef(ids);
    r->event_type = Py_NewRef(event_type);
    if (stamps != Py_None) r->stamps = Py_NewRef(stamps);
    if (fast_timer != Py_None) {
        r->timer_dict = PyObject_GenericGetDict(fast_timer, NULL);
        if (!r->timer_dict) { Py_DECREF(r); return NULL; }
    }
    return (PyObject *)r;
}

static PyObject *recorder_call(PyObject *self, PyObject *args, PyObject *kwargs) {
    /* called as a hook by the Python notify (before this module was loaded): the Python form */
    Recorder *r = (Recorder *)self;
    r->slow++;
    return PyObject_Call(r->fallback, args, kwargs);
}

static int recorder_traverse(PyObject *self, visitproc visit, void *arg) {
    Recorder *r = (Recorder *)self;
    Py_VISIT(r->pdict); Py_VISIT(r->fallback); Py_VISIT(r->fast_timer); Py_VISIT(r->ctxvar); Py_VISIT(r->ids);
    Py_VISIT(r->event_type); Py_VISIT(r->timer_dict); Py_VISIT(r->stamps);
    for (Py_ssize_t i = 0; i < r->n; i++) {
        LaunchRec *x = &r->recs[i];
        Py_VISIT(x->name); Py_VISIT(x->fields); Py_VISIT(x->stream); Py_VISIT(x->kind);
        Py_VISIT(x->skey); Py_VISIT(x->sid); Py_VISIT(x->tid); Py_VISIT(x->parent);
    }
    return 0;
}

static int recorder_clear(PyObject *self) {
    Recorder *r = (Recorder *)self;
    LaunchRec *recs = r->recs;
    Py_ssize_t n = r->n;
    r->recs = NULL;
    r->n = r->cap = 0;
    rec_release(recs, n);
    PyMem_Free(recs);
    Py_CLEAR(r->pdict); Py_CLEAR(r->fallback); Py_CLEAR(r->fast_timer); Py_CLEAR(r->ctxvar); Py_CLEAR(r->ids);
    Py_CLEAR(r->event_type); Py_CLEAR(r->timer_dict); Py_CLEAR(r->stamps);
    return 0;
}

static void recorder_dealloc(PyObject *self) {
    PyObject_GC_UnTrack(self);
    recorder_clear(self);
    Py_TYPE(self)->tp_free(self);
}

static PyMethodDef recorder_methods[] = {
    {"take", recorder_take, METH_NOARGS, "take() -> (launches, pending): the records kept since the last take"},
    {NULL, NULL, 0, NULL}};

static PyMemberDef recorder_members[] = {
    {"fast", T_LONGLONG, offsetof(Recorder, fast), READONLY, "launches recorded in C"},
    {"slow", T_LONGLONG, offsetof(Recorder, slow), READONLY, "launches handed to the profiler's _on_launch"},
    {"waiting", T_PYSSIZET, offsetof(Recorder, n), READONLY, "records not taken yet"},
    {"fallback", T_OBJECT, offsetof(Recorder, fallback), READONLY, "the profiler's _on_launch"},
    {NULL, 0, 0, 0, NULL}};

static PyTypeObject RecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ringkernel._native.Recorder",
    .tp_basicsize = sizeof(Recorder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = recorder_new,
    .tp_dealloc = recorder_dealloc,
    .tp_traverse = recorder_traverse,
    .tp_clear = recorder_clear,
    .tp_call = recorder_call,
    .tp_methods = recorder_methods,
    .tp_members = recorder_members,
    .tp_doc = "A GpuProfiler's launch hook in C for the usual case (see the module's source).",
};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *hooks, *event_type, *on_error;
    PyObject *cache_decision, *cache_fields; /* the last decision and its (grid, block, shared_mem, elements) */
} Notifier;

static PyTypeObject NotifierType;

/* hooks._hook_failed(handle, hook, exc) for an Exception; 0, or -1 with the error set (another
 * BaseException, as KeyboardInterrupt, goes on as the Python notify lets it) */
static int report_failure(Notifier *n, PyObject *handle, PyObject *hook) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value) PyException_SetTraceback(value, tb);
    PyObject *r = PyObject_CallFunctionObjArgs(n->on_error, handle, hook, value ? value : Py_None, NULL);
    Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *notifier_go(Notifier *n, PyObject *name, PyObject *decision, PyObject *stream, PyObject *kind) {
    if (!PyList_Check(n->hooks) || PyList_GET_SIZE(n->hooks) == 0) Py_RETURN_NONE;
    int64_t t = now_ns();
    PyObject *fields = NULL, *ev = NULL, *snapshot = NULL, *result = NULL;
    if (decision == n->cache_decision && n->cache_fields) {
        fields = Py_NewRef(n->cache_fields);
    } else {
        PyObject *c = PyObject_GetAttr(decision, s_config);
        if (!c) return NULL;
        PyObject *g = PyObject_GetAttr(c, s_grid), *b = g ? PyObject_GetAttr(c, s_block) : NULL;
        PyObject *sm = b ? PyObject_GetAttr(c, s_shared_mem) : NULL, *el = sm ? PyObject_GetAttr(decision, s_elements) : NULL;
        Py_DECREF(c);
        if (el) fields = PyTuple_Pack(4, g, b, sm, el);
        Py_XDECREF(g); Py_XDECREF(b); Py_XDECREF(sm); Py_XDECREF(el);
        if (!fields) return NULL;
        PyObject *old_d = n->cache_decision, *old_f = n->cache_fields; /* both new ones in before a release */
        n->cache_decision = Py_NewRef(decision);
        n->cache_fields = Py_NewRef(fields);
        Py_XDECREF(old_d);
        Py_XDECREF(old_f);
    }
    /* list(HOOKS): a hook may add or remove hooks. One hook (a profiler's): its entry is held,
     * no copy of the list is made for each launch */
    Py_ssize_t count = PyList_GET_SIZE(n->hooks);
    snapshot = count == 1 ? Py_NewRef(PyList_GET_ITEM(n->hooks, 0)) : PyList_AsTuple(n->hooks);
    if (!snapshot) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = count == 1 ? snapshot : PyTuple_GET_ITEM(snapshot, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) continue;
        PyObject *handle = PyTuple_GET_ITEM(item, 0), *hook = PyTuple_GET_ITEM(item, 1);
        int rc = 0, filtered = 0, rec = Py_TYPE(hook) == &RecorderType;
        if (rec) rc = rec_record((Recorder *)hook, name, fields, stream, kind, t, &filtered);
        if (rc == 0) { /* another hook, or a case the Recorder leaves to the profiler's _on_launch */
            if (!ev && !(ev = make_event(n->event_type, name, fields, stream, kind, t))) goto done;
            PyObject *x;
            if (rec) {
                ((Recorder *)hook)->slow++;
                PyObject *fargs[2] = {ev, filtered ? Py_True : Py_False};
                x = PyObject_Vectorcall(((Recorder *)hook)->fallback, fargs, 2, NULL);
            } else {
                x = PyObject_CallOneArg(hook, ev);
            }
            rc = x ? 1 : -1;
            Py_XDECREF(x);
        }
        /* (a Recorder's failure is its profiler's: the log names _on_launch's profiler) */
        if (rc < 0 && report_failure(n, handle, rec ? ((Recorder *)hook)->fallback : hook)) goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(fields); Py_XDECREF(ev); Py_XDECREF(snapshot);
    return result;
}

static PyObject *notifier_forget(PyObject *self, PyObject *unused) {
    /* the last hook went: the cached decision (and the stream its configuration holds) is let go */
    Notifier *n = (Notifier *)self;
    PyObject *old_d = n->cache_decision, *old_f = n->cache_fields;
    n->cache_decision = n->cache_fields = NULL;
    Py_XDECREF(old_d);
    Py_XDECREF(old_f);
    Py_RETURN_NONE;
}

static PyMethodDef notifier_methods[] = {
    {"forget", notifier_forget, METH_NOARGS, "let the cached decision go (the last hook was removed)"},
    {NULL, NULL, 0, NULL}};

static PyObject *notifier_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) != 4 || (kwnames && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "notify(kernel_name, decision, stream, kind) takes 4 positional arguments");
        return NULL;
    }
    return notifier_go((Notifier *)self, args[0], args[1], args[2], args[3]);
}

static PyObject *notifier_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *hooks, *event_type, *on_error;
    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Notifier(hooks, LaunchEvent, on_error) takes no keywords");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!O:Notifier", &PyList_Type, &hooks, &PyType_Type, &event_type, &on_error))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)event_type, &PyTuple_Type) || !PyCallable_Check(on_error)) {
        PyErr_SetString(PyExc_TypeError, "Notifier: the event type must be a tuple type, on_error callable");
        return NULL;
    }
    Notifier *n = (Notifier *)type->tp_alloc(type, 0);
    if (!n) return NULL;
    n->vectorcall = notifier_vectorcall;
    n->hooks = Py_NewRef(hooks);
    n->event_type = Py_NewRef(event_type);
    n->on_error = Py_NewRef(on_error);
    return (PyObject *)n;
}

static int notifier_traverse(PyObject *self, visitproc visit, void *arg) {
    Notifier *n = (Notifier *)self;
    Py_VISIT(n->hooks); Py_VISIT(n->event_type); Py_VISIT(n->on_error); Py_VISIT(n->cache_decision);
    Py_VISIT(n->cache_fields);
    return 0;
}

static int notifier_clear(PyObject *self) {
    Notifier *n = (Notifier *)self;
    Py_CLEAR(n->hooks); Py_CLEAR(n->event_type); Py_CLEAR(n->on_error); Py_CLEAR(n->cache_decision);
    Py_CLEAR(n->cache_fields);
    return 0;
}

static void notifier_dealloc(PyObject *self) {
    PyObject_GC_UnTrack(self);
    notifier_clear(self);
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject NotifierType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ringkernel._native.Notifier",
    .tp_basicsize = sizeof(Notifier),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = notifier_new,
    .tp_dealloc = notifier_dealloc,
    .tp_traverse = notifier_traverse,
    .tp_clear = notifier_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Notifier, vectorcall),
    .tp_methods = notifier_methods,
    .tp_doc = "kernel/hooks.py's notify in C (see the module's source).",
};

/* -- packing ------------------------------------------------------------------------------ */
static int pack_scalar(char fmt, PyObject *v, char *dst) {
    if (fmt == '?') {
        int t = PyObject_IsTrue(v);
        if (t < 0) return -1;
        dst[0] = (char)t;
        return 0;
    }
    if (fmt == 'f' || fmt == 'd') {
        double d = PyFloat_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred()) return -1;
        if (fmt == 'd') {
            memcpy(dst, &d, 8);
        } else {
            float f = (float)d;
            if (isinf(f) && !isinf(d)) return -1; /* struct: "float too large to pack with f format" */
            memcpy(dst, &f, 4);
        }
        return 0;
    }
    PyObject *ix = PyNumber_Index(v);
    if (!ix) return -1;
    if (fmt == 'Q') {
        unsigned long long u = PyLong_AsUnsignedLongLong(ix);
        Py_DECREF(ix);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) return -1;
        memcpy(dst, &u, 8);
        return 0;
    }
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(ix, &overflow);
    Py_DECREF(ix);
    if (overflow || (x == -1 && PyErr_Occurred())) return -1;
    switch (fmt) {
    case 'b': { if (x < -128 || x > 127) return -1; int8_t y = (int8_t)x; memcpy(dst, &y, 1); return 0; }
    case 'B': { if (x < 0 || x > 255) return -1; uint8_t y = (uint8_t)x; memcpy(dst, &y, 1); return 0; }
    case 'h': { if (x < -32768 || x > 32767) return -1; int16_t y = (int16_t)x; memcpy(dst, &y, 2); return 0; }
    case 'H': { if (x < 0 || x > 65535) return -1; uint16_t y = (uint16_t)x; memcpy(dst, &y, 2); return 0; }
    case 'i': { if (x < INT32_MIN || x > INT32_MAX) return -1; int32_t y = (int32_t)x; memcpy(dst, &y, 4); return 0; }
    case 'I': { if (x < 0 || x > (long long)UINT32_MAX) return -1; uint32_t y = (uint32_t)x; memcpy(dst, &y, 4); return 0; }
    case 'q': { int64_t y = (int64_t)x; memcpy(dst, &y, 8); return 0; }
    default: return -1;
    }
}

/* 1: equal, 0: not, -1: error */
static int attr_equals(PyObject *x, PyObject *name, PyObject *want) {
    PyObject *got = PyObject_GetAttr(x, name);
    if (!got) return -1;
    int r = got == want ? 1 : PyObject_RichCompareBool(got, want, Py_EQ);
    Py_DECREF(got);
    return r;
}

static int as_pointer(PyObject *p, uint64_t *out) {
    if (!p) return -1;
    unsigned long long u = PyLong_AsUnsignedLongLong(p);
    Py_DECREF(p);
    if (u == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *out = (uint64_t)u;
    return 0;
}

/* The pointer of array x if it matches the slot: 1, a mismatch: 0, an error: -1. */
static int read_array(ArraySlot *s, PyObject *x, uint64_t *ptr) {
    int r;
    if (s->kind == K_GUARD) {
        PyObject *p = PyObject_CallOneArg(s->extra, x);
        if (!p) return -1;
        if (p == Py_None) { Py_DECREF(p); return 0; }
        return as_pointer(p, ptr) ? -1 : 1;
    }
    if ((PyObject *)Py_TYPE(x) != s->tp) return 0;
    if (s->kind == K_TORCH) {
        PyObject *d = PyObject_GetAttr(x, s_dtype);
        if (!d) return -1;
        Py_DECREF(d);
        if (d != s->dtype) return 0;
        PyObject *g = PyObject_GetAttr(x, s_requires_grad);
        if (!g) return -1;
        r = PyObject_IsTrue(g);
        Py_DECREF(g);
        if (r) return r < 0 ? -1 : 0;
        PyObject *dev = PyObject_CallMethodNoArgs(x, s_get_device);
        if (!dev) return -1;
        r = PyObject_RichCompareBool(dev, s->extra, Py_EQ);
        Py_DECREF(dev);
        if (r != 1) return r;
        if ((r = attr_equals(x, s_shape, s->shape)) != 1) return r;
        PyObject *st = PyObject_CallMethodNoArgs(x, s_stride);
        if (!st) return -1;
        r = PyObject_RichCompareBool(st, s->strides, Py_EQ);
        Py_DECREF(st);
        if (r != 1) return r;
        return as_pointer(PyObject_CallMethodNoArgs(x, s_data_ptr), ptr) ? -1 : 1;
    }
    /* numba's, CuPy's and ringkernel's arrays: shape, byte strides and dtype are attributes */
    if ((r = attr_equals(x, s_shape, s->shape)) != 1) return r;
    if ((r = attr_equals(x, s_strides, s->strides)) != 1) return r;
    if ((r = attr_equals(x, s_dtype, s->dtype)) != 1) return r;
    if (s->kind == K_CUPY) {
        PyObject *mem = PyObject_GetAttr(x, s_data);
        if (!mem) return -1;
        PyObject *p = PyObject_GetAttr(mem, s_ptr);
        Py_DECREF(mem);
        return as_pointer(p, ptr) ? -1 : 1;
    }
    if (s->kind == K_PTR) return as_pointer(PyObject_GetAttr(x, s_ptr), ptr) ? -1 : 1;
    if (s->kind == K_NUMBA) {
        PyObject *gd = PyObject_GetAttr(x, s_gpu_data);
        if (!gd) return -1;
        if (gd == Py_None) { Py_DECREF(gd); *ptr = 0; return 1; }
        PyObject *dp = PyObject_GetAttr(gd, s_device_pointer);
        Py_DECREF(gd);
        if (!dp) return -1;
        PyObject *p = PyNumber_Long(dp); /* a CUdeviceptr of cuda-bindings; ctypes' c_void_p raises */
        Py_DECREF(dp);
        return as_pointer(p, ptr) ? -1 : 1;
    }
    return 0;
}

static int launch_block(Entry *e, uint64_t *buf) {
    void *pstack[STACK_SLOTS];
    void **params = pstack;
    if (e->nslots > STACK_SLOTS) {
        params = PyMem_Malloc(sizeof(void *) * e->nslots);
        if (!params) return -1;
    }
    for (Py_ssize_t i = 0; i < e->nslots; i++) params[i] = &buf[i];
    int rc = e->launch(e->function, e->grid[0], e->grid[1], e->grid[2], e->block[0], e->block[1], e->block[2],
                      e->shmem, e->stream, params, NULL);
    if (params != pstack) PyMem_Free(params);
    return rc;
}

static int launcher_closed(Entry *e) {
    if (e->launcher == Py_None) return 0;
    PyObject *c = PyObject_GetAttr(e->launcher, s_closed);
    if (!c) return -1;
    int r = PyObject_IsTrue(c);
    Py_DECREF(c);
    return r;
}

/* entry(args): a new reference to the decision, (decision,) or None; NULL only for a hook's error. */
static PyObject *entry_go(Entry *e, PyObject *args) {
    if (!e->launch || !PyTuple_Check(args)) Py_RETURN_NONE;
    int closed = launcher_closed(e);
    if (closed) { if (closed < 0) PyErr_Clear(); Py_RETURN_NONE; }
    uint64_t bstack[STACK_SLOTS];
    uint64_t *buf = bstack;
    if (e->nslots > STACK_SLOTS) {
        buf = PyMem_Malloc(8 * e->nslots);
        if (!buf) { PyErr_Clear(); Py_RETURN_NONE; }
    }
    memcpy(buf, e->tmpl, 8 * e->nslots);
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    int ok = 0;
    for (Py_ssize_t k = 0; k < e->nscalars; k++) {
        ScalarSlot *s = &e->scalars[k];
        if (s->pos >= nargs) goto miss;
        PyObject *v = PyTuple_GET_ITEM(args, s->pos);
        if ((PyObject *)Py_TYPE(v) != s->tp) goto miss; /* another type: another compiled signature */
        if (pack_scalar(s->fmt, v, (char *)buf + s->offset)) goto miss;
    }
    for (Py_ssize_t k = 0; k < e->narrays; k++) {
        ArraySlot *s = &e->arrays[k];
        if (s->pos >= nargs) goto miss;
        uint64_t p = 0;
        if (read_array(s, PyTuple_GET_ITEM(args, s->pos), &p) != 1) goto miss;
        memcpy((char *)buf + s->offset, &p, 8);
    }
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(e->stream_checks); k++) {
        PyObject *r = PyObject_CallNoArgs(PyTuple_GET_ITEM(e->stream_checks, k));
        if (!r) goto miss;
        int t = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (t != 1) goto miss; /* a producer stream to wait for: the checked path does */
    }
    if (launch_block(e, buf)) goto miss; /* the checked path launches again and raises the driver's error */
    ok = 1;
miss:
    if (buf != bstack) PyMem_Free(buf);
    if (!ok) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (e->notify != Py_None) { /* made while launch hooks were registered */
        PyObject *r = Py_TYPE(e->notify) == &NotifierType
                          ? notifier_go((Notifier *)e->notify, e->report_name, e->decision, Py_None, s_auto)
                          : PyObject_CallFunctionObjArgs(e->notify, e->report_name, e->decision, Py_None, s_auto, NULL);
        if (!r) return NULL;
        Py_DECREF(r);
    }
    if (e->nscalars == 0 && PyList_Check(e->backoff) && PyList_GET_SIZE(e->backoff) > 0) {
        /* arrays only: the caller may try a launch-memo entry, unless backing off */
        PyObject *b = PyList_GET_ITEM(e->backoff, 0);
        long n = PyLong_AsLong(b);
        if (n == -1 && PyErr_Occurred()) { PyErr_Clear(); n = 0; }
        if (n > 0) {
            PyObject *nb = PyLong_FromLong(n - 1);
            if (!nb || PyList_SetItem(e->backoff, 0, nb)) PyErr_Clear(); /* (the list emptied from Python) */
        } else {
            return PyTuple_Pack(1, e->decision);
        }
    }
    Py_INCREF(e->decision);
    return e->decision;
}

static PyObject *entry_call(PyObject *self, PyObject *args, PyObject *kwargs) {
    PyObject *a;
    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "a launch entry takes one tuple of arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "LaunchEntry", 1, 1, &a)) return NULL;
    return entry_go((Entry *)self, a);
}

static PyObject *entry_launch(PyObject *self, PyObject *unused) {
    Entry *e = (Entry *)self;
    int closed = launcher_closed(e);
    if (closed < 0) return NULL;
    if (closed) return PyLong_FromLong(400); /* CUDA_ERROR_INVALID_HANDLE: the checked path refuses it */
    int rc = launch_block(e, e->tmpl);
    if (rc == -1 && PyErr_Occurred()) return NULL;
    if (rc == 0 && e->notify && e->notify != Py_None) { /* a memo entry made while launch hooks were registered */
        PyObject *r = Py_TYPE(e->notify) == &NotifierType
                          ? notifier_go((Notifier *)e->notify, e->report_name, e->decision, e->report_stream, e->report_kind)
                          : PyObject_CallFunctionObjArgs(e->notify, e->report_name, e->decision, e->report_stream,
                                                         e->report_kind, NULL);
        if (!r) return NULL;
        Py_DECREF(r);
    }
    return PyLong_FromLong(rc);
}

static void entry_free_slots(Entry *e) {
    if (e->scalars) {
        for (Py_ssize_t k = 0; k < e->nscalars; k++) Py_CLEAR(e->scalars[k].tp);
        PyMem_Free(e->scalars);
        e->scalars = NULL;
    }
    if (e->arrays) {
        for (Py_ssize_t k = 0; k < e->narrays; k++) {
            ArraySlot *s = &e->arrays[k];
            Py_CLEAR(s->tp); Py_CLEAR(s->dtype); Py_CLEAR(s->shape); Py_CLEAR(s->strides); Py_CLEAR(s->extra);
        }
        PyMem_Free(e->arrays);
        e->arrays = NULL;
    }
    e->nscalars = e->narrays = 0;
}

static int entry_clear(PyObject *self) {
    Entry *e = (Entry *)self;
    entry_free_slots(e);
    Py_CLEAR(e->stream_checks); Py_CLEAR(e->decision); Py_CLEAR(e->notify); Py_CLEAR(e->report_name);
    Py_CLEAR(e->report_stream); Py_CLEAR(e->report_kind);
    Py_CLEAR(e->launcher); Py_CLEAR(e->backoff); Py_CLEAR(e->dict); Py_CLEAR(e->launch_keep);
    return 0;
}

static int entry_traverse(PyObject *self, visitproc visit, void *arg) {
    Entry *e = (Entry *)self;
    for (Py_ssize_t k = 0; k < e->nscalars; k++) Py_VISIT(e->scalars[k].tp);
    for (Py_ssize_t k = 0; k < e->narrays; k++) {
        ArraySlot *s = &e->arrays[k];
        Py_VISIT(s->tp); Py_VISIT(s->dtype); Py_VISIT(s->shape); Py_VISIT(s->strides); Py_VISIT(s->extra);
    }
    Py_VISIT(e->stream_checks); Py_VISIT(e->decision); Py_VISIT(e->notify); Py_VISIT(e->report_name);
    Py_VISIT(e->report_stream); Py_VISIT(e->report_kind);
    Py_VISIT(e->launcher); Py_VISIT(e->backoff); Py_VISIT(e->dict); Py_VISIT(e->launch_keep);
    return 0;
}

static void entry_dealloc(PyObject *self) {
    PyObject_GC_UnTrack(self);
    entry_clear(self);
    PyMem_Free(((Entry *)self)->tmpl);
    Py_TYPE(self)->tp_free(self);
}

static int three(PyObject *t, unsigned out[3], const char *what) {
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3) {
        PyErr_Format(PyExc_TypeError, "%s must be a 3-tuple", what);
        return -1;
    }
    for (int i = 0; i < 3; i++) {
        unsigned long v = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(t, i));
        if (v == (unsigned long)-1 && PyErr_Occurred()) return -1;
        if (v > 0xffffffffUL) { PyErr_Format(PyExc_OverflowError, "%s out of range", what); return -1; }
        out[i] = (unsigned)v;
    }
    return 0;
}

/* LaunchEntry(launch address, launch keepalive, function, grid, block, shared_mem, stream, template, scalars, arrays, stream_checks,
 *             decision, notify, report_name, launcher)
 *   scalars: ((position, exact type, format char, byte offset), ...)
 *   arrays:  ((position, kind, exact type, dtype, shape, strides, extra, byte offset of the pointer), ...) */
static PyObject *entry_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    unsigned long long launch_addr, function, stream, shmem;
    PyObject *keep, *grid, *block, *scalars, *arrays, *checks, *decision, *notify, *report_name, *launcher;
    PyObject *report_stream = Py_None, *report_kind = s_auto;
    Py_buffer tmpl;
    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "LaunchEntry takes positional arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "KOKO!O!KKy*O!O!O!OOOO|OO:LaunchEntry", &launch_addr, &keep, &function, &PyTuple_Type, &grid, &PyTuple_Type,
                          &block, &shmem, &stream, &tmpl, &PyTuple_Type, &scalars, &PyTuple_Type, &arrays,
                          &PyTuple_Type, &checks, &decision, &notify, &report_name, &launcher, &report_stream, &report_kind))
        return NULL;
    Entry *e = (Entry *)type->tp_alloc(type, 0);
    if (!e) { PyBuffer_Release(&tmpl); return NULL; }
    if (!launch_addr) { PyErr_SetString(PyExc_ValueError, "no launch function"); goto fail; }
    e->launch = (launch_fn)(uintptr_t)launch_addr;
    Py_INCREF(keep);
    e->launch_keep = keep;
    e->function = (void *)(uintptr_t)function;
    e->stream = (void *)(uintptr_t)stream;
    if (shmem > 0xffffffffULL) { PyErr_SetString(PyExc_OverflowError, "shared_mem out of range"); goto fail; }
    e->shmem = (unsigned)shmem;
    if (three(grid, e->grid, "grid") || three(block, e->block, "block")) goto fail;
    if (tmpl.len % 8 || tmpl.len == 0) { PyErr_SetString(PyExc_ValueError, "template: whole 8-byte slots"); goto fail; }
    e->nslots = tmpl.len / 8;
    e->tmpl = PyMem_Malloc(tmpl.len);
    if (!e->tmpl) { PyErr_NoMemory(); goto fail; }
    memcpy(e->tmpl, tmpl.buf, tmpl.len);
    Py_ssize_t ns = PyTuple_GET_SIZE(scalars), na = PyTuple_GET_SIZE(arrays);
    e->scalars = PyMem_Calloc(ns ? ns : 1, sizeof(ScalarSlot));
    e->arrays = PyMem_Calloc(na ? na : 1, sizeof(ArraySlot));
    if (!e->scalars || !e->arrays) { PyErr_NoMemory(); goto fail; }
    for (Py_ssize_t k = 0; k < ns; k++) {
        ScalarSlot *s = &e->scalars[k];
        PyObject *tp;
        int fmt;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(scalars, k), "nO!Cn:scalar", &s->pos, &PyType_Type, &tp, &fmt,
                              &s->offset))
            goto fail;
        e->nscalars = k + 1;
        Py_INCREF(tp);
        s->tp = tp;
        s->fmt = (char)fmt;
        if (!strchr("bBhHiIqQfd?", s->fmt) || s->pos < 0 || s->offset < 0 || s->offset + 8 > tmpl.len) {
            PyErr_SetString(PyExc_ValueError, "bad scalar slot");
            goto fail;
        }
    }
    for (Py_ssize_t k = 0; k < na; k++) {
        ArraySlot *s = &e->arrays[k];
        PyObject *tp, *dt, *sh, *st, *ex;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(arrays, k), "niOOOOOn:array", &s->pos, &s->kind, &tp, &dt, &sh, &st,
                              &ex, &s->offset))
            goto fail;
        e->narrays = k + 1;
        Py_INCREF(tp); Py_INCREF(dt); Py_INCREF(sh); Py_INCREF(st); Py_INCREF(ex);
        s->tp = tp; s->dtype = dt; s->shape = sh; s->strides = st; s->extra = ex;
        if (s->kind < K_CUPY || s->kind > K_GUARD || s->pos < 0 || s->offset < 0 || s->offset + 8 > tmpl.len ||
            (s->kind == K_GUARD && !PyCallable_Check(ex))) {
            PyErr_SetString(PyExc_ValueError, "bad array slot");
            goto fail;
        }
    }
    PyBuffer_Release(&tmpl);
    Py_INCREF(checks); e->stream_checks = checks;
    Py_INCREF(decision); e->decision = decision;
    Py_INCREF(notify); e->notify = notify;
    Py_INCREF(report_name); e->report_name = report_name;
    Py_INCREF(report_stream); e->report_stream = report_stream;
    Py_INCREF(report_kind); e->report_kind = report_kind;
    Py_INCREF(launcher); e->launcher = launcher;
    e->backoff = Py_BuildValue("[iii]", 0, 0, 0);
    if (!e->backoff) { Py_DECREF(e); return NULL; }
    return (PyObject *)e;
fail:
    PyBuffer_Release(&tmpl);
    Py_DECREF(e);
    return NULL;
}

static PyMethodDef entry_methods[] = {
    {"launch", entry_launch, METH_NOARGS, "launch the entry's own parameter block as it is; the driver's result (an entry made with notify reports the launch)"},
    {NULL, NULL, 0, NULL}};

static PyMemberDef entry_members[] = {
    {"backoff", T_OBJECT, offsetof(Entry, backoff), READONLY, "[calls not to suggest a memo entry for, last pause, attempts]"},
    {"decision", T_OBJECT, offsetof(Entry, decision), READONLY, "what a launch of this entry returns"},
    {"slots", T_PYSSIZET, offsetof(Entry, nslots), READONLY, "parameter slots (8 bytes each)"},
    {NULL, 0, 0, 0, NULL}};

static PyTypeObject EntryType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ringkernel._native.LaunchEntry",
    .tp_basicsize = sizeof(Entry),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = entry_new,
    .tp_dealloc = entry_dealloc,
    .tp_traverse = entry_traverse,
    .tp_clear = entry_clear,
    .tp_call = entry_call,
    .tp_methods = entry_methods,
    .tp_members = entry_members,
    .tp_dictoffset = offsetof(Entry, dict),
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_setattro = PyObject_GenericSetAttr,
    .tp_doc = "One launch entry: a parameter block, its checks, one cuLaunchKernel (see the module's source).",
};

/* -- GpuKernel.__call__ --------------------------------------------------------------------- */
/* A method descriptor (Py_TPFLAGS_METHOD_DESCRIPTOR): set as GpuKernel.__call__, Python calls it
 * with the kernel first and no bound-method object, and no Python frame runs for a launch that
 * a memo entry or the newest layout entry serves. The kernel's _memo, _layouts and _last are
 * plain instance attributes, read from its __dict__. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
} KernelCall;

static PyTypeObject KernelCallType;

static PyObject *s_memo, *s_layouts, *s_last, *s_nparams;

/* A borrowed reference to attribute `name` of the kernel (its instance dict first), or NULL
 * without an error when it has none. */
static PyObject *kernel_attr(PyObject *dict, PyObject *name) {
    if (!dict) return NULL;
    return PyDict_GetItemWithError(dict, name);
}

static PyObject *call_rest(PyObject *kernel, PyObject *args) {
    return PyObject_CallMethodOneArg(kernel, s_call_rest, args);
}

static PyObject *hot_call(PyObject *kernel, PyObject *args) {
    PyObject *dictp = PyObject_GenericGetDict(kernel, NULL);
    if (!dictp) return NULL;
    PyObject *result = NULL, *memo = NULL, *layouts = NULL;
    if (!g_current) { result = call_rest(kernel, args); goto done; }
    PyObject *act = PyObject_GetAttr(g_current, s_active);
    if (!act) goto done;
    int active = PyObject_IsTrue(act);
    Py_DECREF(act);
    if (active < 0) goto done;
    /* strong references from here on: allocating (the memo key) may run the garbage collector,
     * whose finalizers (or another thread meanwhile) may replace the kernel's _memo/_layouts */
    memo = active ? NULL : kernel_attr(dictp, s_memo);
    layouts = active ? NULL : kernel_attr(dictp, s_layouts);
    Py_XINCREF(memo);
    Py_XINCREF(layouts);
    if (PyErr_Occurred()) goto done;
    int has_memo = memo && PyDict_Check(memo) && PyDict_GET_SIZE(memo) > 0;
    int has_layouts = layouts && PyList_Check(layouts) && PyList_GET_SIZE(layouts) > 0;
    if (!has_memo && !has_layouts) { result = call_rest(kernel, args); goto done; }
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (has_memo) {
        PyObject *key = PyTuple_New(n);
        if (!key) goto done;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *id = PyLong_FromVoidPtr(PyTuple_GET_ITEM(args, i));
            if (!id) { Py_DECREF(key); goto done; }
            PyTuple_SET_ITEM(key, i, id);
        }
        PyObject *m = PyDict_GetItemWithError(memo, key);
        Py_DECREF(key);
        if (!m) {
            if (PyErr_Occurred()) goto done;
        } else if (PyTuple_Check(m) && PyTuple_GET_SIZE(m) >= 3 && PyTuple_Check(PyTuple_GET_ITEM(m, 1))) {
            Py_INCREF(m);
            PyObject *rc = PyObject_Call(PyTuple_GET_ITEM(m, 0), PyTuple_GET_ITEM(m, 1), NULL);
            if (!rc) { Py_DECREF(m); goto done; }
            int failed = PyObject_IsTrue(rc);
            Py_DECREF(rc);
            if (failed == 0) {
                int bad = PyDict_SetItem(dictp, s_last, PyTuple_GET_ITEM(m, 2));
                Py_DECREF(m);
                if (!bad) { Py_INCREF(Py_None); result = Py_None; }
                goto done;
            }
            Py_DECREF(m);
            if (failed > 0) result = call_rest(kernel, args); /* the checked path launches again, reports */
            goto done;
        }
    }
    PyObject *np = kernel_attr(dictp, s_nparams);
    if (!np && PyErr_Occurred()) goto done;
    Py_ssize_t nparams = np ? PyLong_AsSsize_t(np) : -1;
    if (nparams == -1 && PyErr_Occurred()) goto done;
    if (has_layouts && n == nparams && PyList_GET_SIZE(layouts) > 0) {
        /* one read of the list (held since it was read): another thread may replace it meanwhile */
        PyObject *go = PyList_GET_ITEM(layouts, 0);
        Py_INCREF(go);
        PyObject *d = Py_TYPE(go) == &EntryType ? entry_go((Entry *)go, args) : PyObject_CallOneArg(go, args);
        Py_DECREF(go);
        if (!d) goto done;
        if (d != Py_None && !PyTuple_Check(d)) {
            int bad = PyDict_SetItem(dictp, s_last, d);
            Py_DECREF(d);
            if (!bad) { Py_INCREF(Py_None); result = Py_None; }
            goto done;
        }
        PyObject *r = PyObject_CallMethodObjArgs(kernel, s_layout_launch, args, d, NULL);
        Py_DECREF(d);
        if (!r) goto done;
        int served = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (served < 0) goto done;
        if (served) { Py_INCREF(Py_None); result = Py_None; goto done; }
    }
    result = call_rest(kernel, args);
done:
    Py_XDECREF(memo);
    Py_XDECREF(layouts);
    Py_DECREF(dictp);
    return result;
}

static PyObject *kernelcall_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "GpuKernel.__call__ needs the kernel");
        return NULL;
    }
    if (kwnames && PyTuple_GET_SIZE(kwnames)) /* keywords: the Python method takes them all */
        return PyObject_VectorcallMethod(s_slow_call, args, nargsf, kwnames);
    PyObject *t = PyTuple_New(nargs - 1);
    if (!t) return NULL;
    for (Py_ssize_t i = 1; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SET_ITEM(t, i - 1, args[i]);
    }
    PyObject *r = hot_call(args[0], t);
    Py_DECREF(t);
    return r;
}

static PyObject *kernelcall_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) || (kwargs && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "KernelCall() takes no arguments");
        return NULL;
    }
    KernelCall *k = (KernelCall *)type->tp_alloc(type, 0);
    if (k) k->vectorcall = kernelcall_vectorcall;
    return (PyObject *)k;
}

/* __get__ of KernelCall and PoolMethod: a bound method on an instance, itself on the class */
static PyObject *method_get(PyObject *self, PyObject *obj, PyObject *type) {
    if (obj == NULL || obj == Py_None) {
        Py_INCREF(self);
        return self;
    }
    return PyMethod_New(self, obj);
}

static PyTypeObject KernelCallType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ringkernel._native.KernelCall",
    .tp_basicsize = sizeof(KernelCall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_METHOD_DESCRIPTOR | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = kernelcall_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(KernelCall, vectorcall),
    .tp_descr_get = method_get,
    .tp_doc = "GpuKernel.__call__ in C: launch the kernel (see the module's source).",
};

/* -- a pool's lock and hot counters --------------------------------------------------------- */
/* PoolState: the pool's lock (acquire/release/locked/with, as threading.Lock) and the counters
 * its hot paths change on every call (hits, live_bytes, peak_live, large_room), as C fields the
 * Python code reads and writes as attributes (GpuMemoryPool's _hits, ... are properties over
 * them). PoolMethod takes the lock without a method call and counts in C. */
#include "pythread.h"

#define SELF_DEADLOCK                                                                                        \
    "this thread already holds the memory pool's lock: a pool call from a finalizer (__del__ or a weakref "   \
    "callback) that a garbage collection ran inside another pool call; free blocks there (they are queued), " \
    "but do not allocate or close the pool from a finalizer"

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    char locked;
    unsigned long owner; /* the holding thread (valid while locked) */
    long long hits, live_bytes, peak_live, large_room, large_limit;
} PoolState;

static PyTypeObject PoolStateType;

static PyObject *state_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) || (kwargs && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "PoolState() takes no arguments");
        return NULL;
    }
    PoolState *st = (PoolState *)type->tp_alloc(type, 0);
    if (!st) return NULL;
    st->lock = PyThread_allocate_lock();
    if (!st->lock) { Py_DECREF(st); PyErr_NoMemory(); return NULL; }
    return (PyObject *)st;
}

static void state_dealloc(PyObject *self) {
    PoolState *st = (PoolState *)self;
    if (st->lock) {
        if (st->locked) PyThread_release_lock(st->lock);
        PyThread_free_lock(st->lock);
    }
    Py_TYPE(self)->tp_free(self);
}

static PyObject *state_acquire(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"blocking", "timeout", NULL};
    PoolState *st = (PoolState *)self;
    int blocking = 1;
    double timeout = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|pd:acquire", kw, &blocking, &timeout)) return NULL;
    if (!blocking && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return NULL;
    }
    if (isnan(timeout)) {
        PyErr_SetString(PyExc_ValueError, "Invalid value NaN (not a number)");
        return NULL;
    }
    if (timeout < 0 && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return NULL;
    }
    if (timeout > (double)PY_TIMEOUT_MAX / 1e6) {
        PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
        return NULL;
    }
    PyLockStatus r = PyThread_acquire_lock_timed(st->lock, 0, 0);
    if (r != PY_LOCK_ACQUIRED && blocking && st->locked && st->owner == PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError, SELF_DEADLOCK);
        return NULL;
    }
    if (r != PY_LOCK_ACQUIRED && blocking) {
        PY_TIMEOUT_T us = timeout < 0 ? -1 : (PY_TIMEOUT_T)(timeout * 1e6);
        Py_BEGIN_ALLOW_THREADS
        r = PyThread_acquire_lock_timed(st->lock, us, 0);
        Py_END_ALLOW_THREADS
    }
    if (r == PY_LOCK_ACQUIRED) {
        st->locked = 1;
        st->owner = PyThread_get_thread_ident();
        Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

static PyObject *state_release(PyObject *self, PyObject *unused) {
    PoolState *st = (PoolState *)self;
    if (!st->locked) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    st->locked = 0;
    PyThread_release_lock(st->lock);
    Py_RETURN_NONE;
}

static PyObject *state_locked(PyObject *self, PyObject *unused) {
    return PyBool_FromLong(((PoolState *)self)->locked);
}

static PyObject *state_held_by_me(PyObject *self, PyObject *unused) {
    PoolState *st = (PoolState *)self;
    return PyBool_FromLong(st->locked && st->owner == PyThread_get_thread_ident());
}

static int state_try(PoolState *st);

static PyObject *state_enter(PyObject *self, PyObject *unused) {
    PoolState *st = (PoolState *)self;
    if (!state_try(st)) {
        if (st->locked && st->owner == PyThread_get_thread_ident()) {
            PyErr_SetString(PyExc_RuntimeError, SELF_DEADLOCK);
            return NULL;
        }
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(st->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
        st->locked = 1;
        st->owner = PyThread_get_thread_ident();
    }
    Py_RETURN_TRUE;
}

static PyObject *state_exit(PyObject *self, PyObject *args) {
    return state_release(self, NULL);
}

static int state_try(PoolState *st) {
    if (PyThread_acquire_lock_timed(st->lock, 0, 0) != PY_LOCK_ACQUIRED) return 0;
    st->locked = 1;
    st->owner = PyThread_get_thread_ident();
    return 1;
}

static void state_unlock(PoolState *st) {
    st->locked = 0;
    PyThread_release_lock(st->lock);
}

static PyMethodDef state_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))state_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1): as threading.Lock"},
    {"release", state_release, METH_NOARGS, "release(): as threading.Lock"},
    {"locked", state_locked, METH_NOARGS, "locked(): as threading.Lock"},
    {"held_by_me", state_held_by_me, METH_NOARGS, "whether the calling thread holds the lock"},
    {"__enter__", state_enter, METH_NOARGS, NULL},
    {"__exit__", state_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}};

static PyMemberDef state_members[] = {
    {"hits", T_LONGLONG, offsetof(PoolState, hits), 0, "allocations served from a free list or the large cache"},
    {"live_bytes", T_LONGLONG, offsetof(PoolState, live_bytes), 0, "bytes requested by the blocks in use"},
    {"peak_live", T_LONGLONG, offsetof(PoolState, peak_live), 0, "the most live_bytes since the last reset"},
    {"large_room", T_LONGLONG, offsetof(PoolState, large_room), 0, "bytes the large cache may still take"},
    {"large_limit", T_LONGLONG, offsetof(PoolState, large_limit), 0, "the largest block the large cache serves (the pool's large_limit)"},
    {NULL, 0, 0, 0, NULL}};

static PyTypeObject PoolStateType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ringkernel._native.PoolState",
    .tp_basicsize = sizeof(PoolState),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = state_new,
    .tp_dealloc = state_dealloc,
    .tp_methods = state_methods,
    .tp_members = state_members,
    .tp_doc = "A GpuMemoryPool's lock and hot counters (see the module's source).",
};

/* -- GpuMemoryPool.allocate / deallocate ---------------------------------------------------- */
/* Method descriptors like KernelCall (installed by ringkernel/memory/pool.py): the hot paths of
 * the Python methods _allocate_py and _deallocate_py, the same steps on the same containers of
 * the pool's __dict__ and on its PoolState's counters, under the PoolState's lock (taken without
 * waiting: a thread holding it sends this call to the Python method, which waits). Anything but a hit of a size class's free list
 * or a large bin's cache (allocate) and the return of a live pooled block (deallocate) goes
 * to the Python method, which also raises every error. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int which; /* 0: allocate, 1: deallocate */
    PyObject *buffer_type; /* PooledBuffer */
    PyObject *d_pool, *d_ptr, *d_nbytes, *d_i; /* its slots' member descriptors */
    Py_ssize_t nlimits;
    long long limits[32];
} PoolMethod;

static PyObject *s_free, *s_state, *s_live, *s_large_free, *s_large, *s_large_since, *s_large_clock,
    *s_allocate_py, *s_deallocate_py;




static int set_slot(PyObject *descr, PyObject *obj, PyObject *value) {
    return Py_TYPE(descr)->tp_descr_set(descr, obj, value);
}

static PyObject *new_buffer(PoolMethod *pm, PyObject *pool, PyObject *ptr, long long nbytes, long i) {
    PyTypeObject *tp = (PyTypeObject *)pm->buffer_type;
    PyObject *buf = tp->tp_alloc(tp, 0);
    if (!buf) return NULL;
    PyObject *n = PyLong_FromLongLong(nbytes), *ix = PyLong_FromLong(i);
    if (!n || !ix || set_slot(pm->d_pool, buf, pool) || set_slot(pm->d_ptr, buf, ptr) ||
        set_slot(pm->d_nbytes, buf, n) || set_slot(pm->d_i, buf, ix)) {
        Py_XDECREF(n); Py_XDECREF(ix); Py_DECREF(buf);
        return NULL;
    }
    Py_DECREF(n); Py_DECREF(ix);
    return buf;
}

#define FALLBACK Py_NotImplemented

/* The hot path of allocate; FALLBACK (borrowed) for the Python method. */
static PyObject *allocate_hot(PoolMethod *pm, PyObject *pool, PyObject *dict, PyObject *nbytes) {
    if (!PyLong_CheckExact(nbytes)) return FALLBACK;
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(nbytes, &overflow);
    if (overflow || n <= 0) { PyErr_Clear(); return FALLBACK; }
    PyObject *sto = PyDict_GetItemWithError(dict, s_state);
    if (!sto || Py_TYPE(sto) != &PoolStateType) { PyErr_Clear(); return FALLBACK; }
    PoolState *st = (PoolState *)sto;
    Py_INCREF(sto);
    if (!state_try(st)) { Py_DECREF(sto); return FALLBACK; } /* held: the Python method waits */
    PyObject *result = FALLBACK, *buf = NULL, *ptr = NULL, *stack = NULL;
    long i = -1;
    long long size = 0;
    if (n <= pm->limits[pm->nlimits - 1]) {
        for (i = 0; pm->limits[i] < n; i++) {}
        PyObject *free = PyDict_GetItemWithError(dict, s_free);
        if (!free || !PyList_Check(free) || i >= PyList_GET_SIZE(free)) goto out;
        stack = PyList_GET_ITEM(free, i);
    } else {
        if (n > st->large_limit) goto out;
        int k = 0;
        for (unsigned long long v = (unsigned long long)(n - 1); v; v >>= 1) k++; /* (n-1).bit_length() */
        k -= 3;
        size = ((((n - 1) >> k) + 1) << k);
        PyObject *lf = PyDict_GetItemWithError(dict, s_large_free);
        if (!lf || !PyDict_Check(lf)) goto out;
        PyObject *key = PyLong_FromLongLong(size);
        if (!key) { result = NULL; goto out; }
        stack = PyDict_GetItemWithError(lf, key);
        Py_DECREF(key);
    }
    if (!stack || !PyList_Check(stack) || PyList_GET_SIZE(stack) == 0) goto out;
    Py_ssize_t last = PyList_GET_SIZE(stack) - 1;
    ptr = PyList_GET_ITEM(stack, last); /* the one freed last: warm */
    Py_INCREF(ptr);
    /* the buffer first (it may run the garbage collector): nothing has changed yet if it fails */
    buf = new_buffer(pm, pool, ptr, n, i);
    if (!buf) { result = NULL; goto out; }
    PyObject *live = PyDict_GetItemWithError(dict, s_live);
    if (!live || !PyDict_Check(live)) goto out; /* (not the pool's own state: the Python method says why) */
    if (PyDict_SetItem(live, ptr, buf)) { result = NULL; goto out; }
    if (PyList_GET_SIZE(stack) != last + 1 || PyList_GET_ITEM(stack, last) != ptr) {
        PyDict_DelItem(live, ptr); /* (the list changed meanwhile: cannot happen under the lock) */
        result = NULL;
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "pool free list changed under its lock");
        goto out;
    }
    Py_SET_SIZE(stack, last); /* list.pop() without its shrink: the list's reference is ours to drop */
    Py_DECREF(ptr);
    st->hits += 1;
    if (i < 0) st->large_room += size;
    st->live_bytes += n;
    if (st->live_bytes > st->peak_live) st->peak_live = st->live_bytes;
    result = buf;
    buf = NULL;
out:
    Py_XDECREF(ptr);
    Py_XDECREF(buf);
    state_unlock(st);
    Py_DECREF(sto);
    if (result == FALLBACK && PyErr_Occurred()) PyErr_Clear();
    return result;
}

/* The hot path of deallocate(buffer); FALLBACK (borrowed) for the Python method. */
static PyObject *deallocate_hot(PoolMethod *pm, PyObject *dict, PyObject *buffer) {
    if ((PyObject *)Py_TYPE(buffer) != pm->buffer_type) return FALLBACK;
    PyObject *sto = PyDict_GetItemWithError(dict, s_state);
    if (!sto || Py_TYPE(sto) != &PoolStateType) { PyErr_Clear(); return FALLBACK; }
    PoolState *st = (PoolState *)sto;
    Py_INCREF(sto);
    if (!state_try(st)) { Py_DECREF(sto); return FALLBACK; }
    PyObject *result = FALLBACK, *ix = NULL, *ptr = NULL, *nb = NULL;
    ix = Py_TYPE(pm->d_i)->tp_descr_get(pm->d_i, buffer, pm->buffer_type);
    ptr = ix ? Py_TYPE(pm->d_ptr)->tp_descr_get(pm->d_ptr, buffer, pm->buffer_type) : NULL;
    nb = ptr ? Py_TYPE(pm->d_nbytes)->tp_descr_get(pm->d_nbytes, buffer, pm->buffer_type) : NULL;
    if (!nb) goto out;
    long i = PyLong_AsLong(ix);
    long long n = PyLong_AsLongLong(nb);
    if (PyErr_Occurred()) goto out;
    PyObject *live = PyDict_GetItemWithError(dict, s_live);
    if (!live || !PyDict_Check(live)) goto out;
    if (PyDict_GetItemWithError(live, ptr) != buffer) goto out; /* not live, or another buffer's now */
    long long large_bytes = 0;
    PyObject *stack = NULL, *since = NULL, *clock = NULL;
    if (i >= 0) {
        PyObject *free = PyDict_GetItemWithError(dict, s_free);
        if (!free || !PyList_Check(free) || i >= PyList_GET_SIZE(free)) goto out;
        stack = PyList_GET_ITEM(free, i);
    } else {
        PyObject *large = PyDict_GetItemWithError(dict, s_large), *lf = PyDict_GetItemWithError(dict, s_large_free);
        since = PyDict_GetItemWithError(dict, s_large_since);
        clock = PyDict_GetItemWithError(dict, s_large_clock);
        if (!large || !lf || !since || !clock || !PyDict_Check(large) || !PyDict_Check(lf) || !PyDict_Check(since))
            goto out;
        PyObject *bytes = PyDict_GetItemWithError(large, ptr);
        if (!bytes) goto out;
        stack = PyDict_GetItemWithError(lf, bytes); /* a bin cached before: cacheable */
        large_bytes = PyLong_AsLongLong(bytes);
        if (large_bytes == -1 && PyErr_Occurred()) goto out;
        if (large_bytes > st->large_room) goto out; /* over the cache budget: Python's _return_large */
    }
    if (!stack || !PyList_Check(stack)) goto out;
    /* the list grows first (it may fail for memory): then nothing else can fail */
    if (PyList_Append(stack, ptr)) { result = NULL; goto out; }
    if (since && PyDict_SetItem(since, ptr, clock)) {
        PyList_SetSlice(stack, PyList_GET_SIZE(stack) - 1, PyList_GET_SIZE(stack), NULL);
        result = NULL;
        goto out;
    }
    if (PyDict_DelItem(live, ptr)) { result = NULL; goto out; }
    st->live_bytes -= n;
    st->large_room -= large_bytes;
    result = Py_None;
    Py_INCREF(result);
out:
    Py_XDECREF(ix); Py_XDECREF(ptr); Py_XDECREF(nb);
    state_unlock(st);
    Py_DECREF(sto);
    if (result == FALLBACK && PyErr_Occurred()) PyErr_Clear();
    return result;
}

static PyObject *poolmethod_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    PoolMethod *pm = (PoolMethod *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == 2 && !(kwnames && PyTuple_GET_SIZE(kwnames))) {
        PyObject *dict = PyObject_GenericGetDict(args[0], NULL);
        if (!dict) return NULL;
        PyObject *r = pm->which == 0 ? allocate_hot(pm, args[0], dict, args[1]) : deallocate_hot(pm, dict, args[1]);
        Py_DECREF(dict);
        if (r != FALLBACK) return r;
    }
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "a GpuMemoryPool method needs the pool");
        return NULL;
    }
    return PyObject_VectorcallMethod(pm->which == 0 ? s_allocate_py : s_deallocate_py, args, nargsf, kwnames);
}

static PyObject *poolmethod_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    int which;
    PyObject *tp, *limits;
    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "PoolMethod(which, PooledBuffer, limits)");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "iO!O!:PoolMethod", &which, &PyType_Type, &tp, &PyTuple_Type, &limits)) return NULL;
    Py_ssize_t nl = PyTuple_GET_SIZE(limits);
    if ((which != 0 && which != 1) || nl < 1 || nl > 32) {
        PyErr_SetString(PyExc_ValueError, "which: 0 or 1; limits: 1 to 32 increasing sizes");
        return NULL;
    }
    PoolMethod *pm = (PoolMethod *)type->tp_alloc(type, 0);
    if (!pm) return NULL;
    pm->vectorcall = poolmethod_vectorcall;
    pm->which = which;
    Py_INCREF(tp);
    pm->buffer_type = tp;
    pm->nlimits = nl;
    for (Py_ssize_t k = 0; k < nl; k++) {
        pm->limits[k] = PyLong_AsLongLong(PyTuple_GET_ITEM(limits, k));
        if ((pm->limits[k] == -1 && PyErr_Occurred()) || pm->limits[k] <= 0 || (k && pm->limits[k] <= pm->limits[k - 1])) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "limits must increase");
            Py_DECREF(pm);
            return NULL;
        }
    }
    const char *names[4] = {"pool", "ptr", "nbytes", "_i"};
    PyObject **slots[4] = {&pm->d_pool, &pm->d_ptr, &pm->d_nbytes, &pm->d_i};
    for (int k = 0; k < 4; k++) {
        PyObject *d = PyObject_GetAttrString(tp, names[k]);
        if (!d) { Py_DECREF(pm); return NULL; }
        if (!Py_TYPE(d)->tp_descr_get || !Py_TYPE(d)->tp_descr_set) {
            Py_DECREF(d);
            PyErr_Format(PyExc_TypeError, "%s is not a slot of the buffer type", names[k]);
            Py_DECREF(pm);
            return NULL;
        }
        *slots[k] = d;
    }
    return (PyObject *)pm;
}

static void poolmethod_dealloc(PyObject *self) {
    PoolMethod *pm = (PoolMethod *)self;
    Py_XDECREF(pm->buffer_type); Py_XDECREF(pm->d_pool); Py_XDECREF(pm->d_ptr); Py_XDECREF(pm->d_nbytes);
    Py_XDECREF(pm->d_i);
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject PoolMethodType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ringkernel._native.PoolMethod",
    .tp_basicsize = sizeof(PoolMethod),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_METHOD_DESCRIPTOR | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = poolmethod_new,
    .tp_dealloc = poolmethod_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(PoolMethod, vectorcall),
    .tp_descr_get = method_get,
    .tp_doc = "GpuMemoryPool.allocate / deallocate in C: their hot paths (see the module's source).",
};

/* -- module ------------------------------------------------------------------------------------ */
static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *current;
    if (!PyArg_ParseTuple(args, "O:configure", &current)) return NULL;
    Py_INCREF(current);
    Py_XSETREF(g_current, current);
    Py_RETURN_NONE;
}

static PyObject *pack(PyObject *self, PyObject *args) {
    /* pack(format char, value) -> 8 bytes as a launch entry writes them (tests compare with struct) */
    int fmt;
    PyObject *v;
    if (!PyArg_ParseTuple(args, "CO:pack", &fmt, &v)) return NULL;
    char out[8] = {0};
    if (!strchr("bBhHiIqQfd?", fmt)) { PyErr_SetString(PyExc_ValueError, "unknown format"); return NULL; }
    if (pack_scalar((char)fmt, v, out)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_OverflowError, "value out of range for the format");
        return NULL;
    }
    return PyBytes_FromStringAndSize(out, 8);
}

static PyObject *py_now_ns(PyObject *self, PyObject *unused) { return PyLong_FromLongLong(now_ns()); }

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS, "configure(ringkernel._current): where the count of active GpuContexts is read"},
    {"pack", pack, METH_VARARGS, "pack(format, value): the 8-byte slot a launch entry writes"},
    {"now_ns", py_now_ns, METH_NOARGS, "now_ns(): the clock launch reports are timed by (time.perf_counter_ns's)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef native_module = {PyModuleDef_HEAD_INIT, "_rk_native", NULL, -1, module_methods};

#define INTERN(var, text) if (!((var) = PyUnicode_InternFromString(text))) return NULL

PyMODINIT_FUNC PyInit__rk_native(void) {
    INTERN(s_active, "active"); INTERN(s_shape, "shape"); INTERN(s_strides, "strides"); INTERN(s_dtype, "dtype");
    INTERN(s_data, "data"); INTERN(s_ptr, "ptr"); INTERN(s_gpu_data, "gpu_data");
    INTERN(s_device_pointer, "device_pointer"); INTERN(s_requires_grad, "requires_grad");
    INTERN(s_get_device, "get_device"); INTERN(s_stride, "stride"); INTERN(s_data_ptr, "data_ptr");
    INTERN(s_closed, "closed"); INTERN(s_slow_call, "_slow_call"); INTERN(s_layout_launch, "_layout_launch");
    INTERN(s_call_rest, "_call_rest"); INTERN(s_auto, "auto");
    INTERN(s_free, "_free"); INTERN(s_state, "_state"); INTERN(s_live, "_live");
    INTERN(s_large_free, "_large_free"); INTERN(s_large, "_large"); INTERN(s_large_since, "_large_since");
    INTERN(s_large_clock, "_large_clock"); INTERN(s_allocate_py, "_allocate_py");
    INTERN(s_deallocate_py, "_deallocate_py");
    INTERN(s_timer, "_timer"); INTERN(s_enabled, "_enabled"); INTERN(s_filter, "_filter"); INTERN(s_count, "_count");
    INTERN(s_max_events, "max_events"); INTERN(s_to_retire, "_to_retire"); INTERN(s_tracks, "_tracks");
    INTERN(s_stacks, "_stacks"); INTERN(s_stream_cache, "_stream_cache"); INTERN(s_streams, "_streams");
    INTERN(s_ended, "ended"); INTERN(s_id, "id"); INTERN(s_pending, "_pending");
    INTERN(s_launched, "launched"); INTERN(s_config, "config"); INTERN(s_grid, "grid"); INTERN(s_block, "block");
    INTERN(s_shared_mem, "shared_mem"); INTERN(s_elements, "elements"); INTERN(s_get_running_loop, "_get_running_loop");
    INTERN(s_current_task, "current_task"); INTERN(s_asyncio, "asyncio"); INTERN(s_plast, "_last");
    INTERN(s_captured, "_captured"); INTERN(s_resolve, "resolve"); INTERN(s_recorder, "_recorder");
    INTERN(s_launches, "_launches");
    INTERN(s_memo, "_memo"); INTERN(s_layouts, "_layouts"); INTERN(s_last, "_last"); INTERN(s_nparams, "_nparams");
    if (PyType_Ready(&EntryType) < 0 || PyType_Ready(&KernelCallType) < 0 || PyType_Ready(&PoolMethodType) < 0 ||
        PyType_Ready(&PoolStateType) < 0 || PyType_Ready(&RecorderType) < 0 || PyType_Ready(&NotifierType) < 0 ||
        PyType_Ready(&StampsType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (!m) return NULL;
    Py_INCREF(&EntryType);
    Py_INCREF(&KernelCallType);
    Py_INCREF(&PoolMethodType);
    Py_INCREF(&PoolStateType);
    Py_INCREF(&RecorderType);
    Py_INCREF(&NotifierType);
    Py_INCREF(&StampsType);
    if (PyModule_AddObject(m, "LaunchEntry", (PyObject *)&EntryType) < 0 ||
        PyModule_AddObject(m, "KernelCall", (PyObject *)&KernelCallType) < 0 ||
        PyModule_AddObject(m, "PoolMethod", (PyObject *)&PoolMethodType) < 0 ||
        PyModule_AddObject(m, "PoolState", (PyObject *)&PoolStateType) < 0 ||
        PyModule_AddObject(m, "Recorder", (PyObject *)&RecorderType) < 0 ||
        PyModule_AddObject(m, "Notifier", (PyObject *)&NotifierType) < 0 ||
        PyModule_AddObject(m, "EventStamps", (PyObject *)&StampsType) < 0 ||
        PyModule_AddIntConstant(m, "K_CUPY", K_CUPY) < 0 || PyModule_AddIntConstant(m, "K_NUMBA", K_NUMBA) < 0 ||
        PyModule_AddIntConstant(m, "K_PTR", K_PTR) < 0 || PyModule_AddIntConstant(m, "K_TORCH", K_TORCH) < 0 ||
        PyModule_AddIntConstant(m, "K_GUARD", K_GUARD) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
