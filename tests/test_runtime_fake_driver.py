"""@gpu_kernel's GPU launch path (cache -> launcher -> memo) driven against a fake driver.

The simulator cannot run ringkernel's runtime (there is no driver), so here the driver call
is a ctypes callback that decodes the parameter block, the compiler is a stub returning a
launcher for a made-up function handle, and the arrays are minimal CUDA-Array-Interface
objects treated like numba's. Everything between ``kernel(a, b, c)`` and ``cuLaunchKernel``
is the real code; the GPU tests check the same paths on hardware.
"""

from __future__ import annotations

import ctypes
from typing import Any
import gc
import struct

import numpy as np
import pytest

from ringkernel import GpuArchitecture, gpu_kernel
from ringkernel.compile import compiler as C
from ringkernel import driver as D
from ringkernel.compile import launcher as L

U = ctypes.c_uint
PROTO = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, U, U, U, U, U, U, U, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


class FakeDeviceArray:
    """What the launcher needs from a numba device array: the CUDA Array Interface."""

    _next = 0x7000_0000

    def __init__(self, n: int, dtype: str = "float32") -> None:
        self.dtype = np.dtype(dtype)
        self.shape = (n,)
        self.size = n
        self.ptr = FakeDeviceArray._next
        FakeDeviceArray._next += 1 << 20

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "strides": None,
                "version": 3, "stream": None}  # fmt: skip


class FakeStream:
    def __init__(self, handle: int) -> None:
        self.handle = handle


@pytest.fixture(params=["native", "generated", "loop"])
def runtime(request, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The fake driver; each test runs with launch entries compiled (ringkernel/_native.c, where
    it builds), as generated Python code and as the Python loop."""
    from ringkernel import native as N
    from ringkernel.kernel import runtime as R

    from ringkernel.kernel import core

    if request.param == "native" and N.load() is None:
        pytest.skip(f"the compiled launch path is not available here: {N.status().detail}")
    monkeypatch.setattr(N, "ENTRIES", request.param == "native")
    monkeypatch.setattr(N, "CALL", request.param == "native")
    monkeypatch.setattr(R, "GENERATED_ENTRIES", request.param == "generated")
    monkeypatch.setattr(core.GpuKernel, "__call__", core.GpuKernel._slow_call)  # installed on a first compile
    calls: list[dict] = []

    def launch(f, gx, gy, gz, bx, by, bz, shm, stream, params, extra):  # type: ignore[no-untyped-def]
        ptrs = ctypes.cast(params, ctypes.POINTER(ctypes.c_void_p))
        data = [struct.unpack("<q", ctypes.string_at(ptrs[k * 7 + 4], 8))[0] for k in range(3)]
        calls.append({"f": f, "grid": (gx, gy, gz), "block": (bx, by, bz), "stream": stream, "data": data})
        return 0

    cb = PROTO(launch)
    monkeypatch.setattr(D, "_lib", object())
    monkeypatch.setattr(L, "_launch_fn", cb)
    monkeypatch.setattr(L, "_NUMBA_ARRAY_TYPES", (FakeDeviceArray,))
    compiled: list[tuple] = []

    class StubCompiler:
        def load_or_compile(self, py_func, argtypes, options, dispatcher, name, analyze=None):  # type: ignore[no-untyped-def]
            compiled.append(argtypes)
            return C.CompiledKernel(
                name=name, entry_name="_Z1k", argtypes=argtypes, key="0" * 64, compute_cap="sm_90", from_cache=True,
                registers_per_thread=32, shared_mem_per_block=0, max_threads_per_block=1024,
                launcher=L.KernelLauncher(0xF00D, argtypes, name),
            )  # fmt: skip

    monkeypatch.setattr(C, "default_compiler", lambda: StubCompiler())
    return calls, compiled, cb


from ringkernel.kernel.intrinsics import global_thread_id, grid_stride  # noqa: E402


def _kernel():  # type: ignore[no-untyped-def]
    def add(a, b, c):  # type: ignore[no-untyped-def]
        for i in range(global_thread_id(), c.size, grid_stride()):
            c[i] = a[i] + b[i]

    k = gpu_kernel(grid_stride=True, same_size=("a", "b", "c"), arch=GpuArchitecture.preset("H200"),
                   signatures=["void(float32[::1], float32[::1], float32[::1])"])(add)  # fmt: skip
    k._runtime = True  # as on a GPU
    return k


def test_auto_launch_then_memo(runtime) -> None:  # type: ignore[no-untyped-def]
    calls, compiled, _ = runtime
    k = _kernel()
    a, b, c = FakeDeviceArray(1000), FakeDeviceArray(1000), FakeDeviceArray(1000)
    for _ in range(3):
        k(a, b, c)
    assert len(compiled) == 1  # compiled (here: loaded) once for the signature
    assert len(calls) == 3 and all(call["f"] == 0xF00D for call in calls)
    assert all(call["data"] == [a.ptr, b.ptr, c.ptr] for call in calls)
    assert calls[0]["block"] == (256, 1, 1) and calls[0]["grid"] == (4, 1, 1)
    assert calls[0]["stream"] is None
    assert k.last_config is not None and k.last_config.grid == (4, 1, 1)
    assert len(k._memo) == 1


def test_new_arrays_same_types_take_the_fast_table(runtime) -> None:  # type: ignore[no-untyped-def]
    calls, compiled, _ = runtime
    k = _kernel()
    arrays = [FakeDeviceArray(5000) for _ in range(3)]
    k(*arrays)
    fresh = [FakeDeviceArray(5000) for _ in range(3)]
    k(*fresh)
    assert calls[-1]["data"] == [x.ptr for x in fresh] and len(compiled) == 1
    with pytest.raises(Exception, match="differ"):
        k(FakeDeviceArray(5000), FakeDeviceArray(4999), FakeDeviceArray(5000))


def test_explicit_and_streams(runtime) -> None:  # type: ignore[no-untyped-def]
    calls, _, _ = runtime
    k = _kernel()
    a, b, c = FakeDeviceArray(100), FakeDeviceArray(100), FakeDeviceArray(100)
    for _ in range(2):
        k[2, 64](a, b, c)
    assert [call["grid"] for call in calls] == [(2, 1, 1)] * 2 and calls[-1]["block"] == (64, 1, 1)
    s = FakeStream(0x5151)
    for _ in range(2):
        k[3, 32, s](a, b, c)
    assert calls[-1]["stream"] == 0x5151 and calls[-2]["stream"] == 0x5151
    k(a, b, c, stream=s)  # an automatic launch on a stream goes around the (default-stream) memo entry
    assert calls[-1]["stream"] == 0x5151
    k(a, b, c)
    assert calls[-1]["stream"] is None


def test_memo_entries_die_with_their_arrays(runtime) -> None:  # type: ignore[no-untyped-def]
    calls, _, _ = runtime
    k = _kernel()
    a, b, c = FakeDeviceArray(64), FakeDeviceArray(64), FakeDeviceArray(64)
    k(a, b, c)
    k(a, b, c)
    assert len(k._memo) == 1
    del a
    gc.collect()
    assert len(k._memo) == 0
    a2 = FakeDeviceArray(64)
    k(a2, b, c)
    assert calls[-1]["data"][0] == a2.ptr


def test_driver_error_is_translated(runtime, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from ringkernel import KernelLaunchError

    k = _kernel()
    a = FakeDeviceArray(10)
    k(a, a, a)
    failing = PROTO(lambda *args: 1)  # CUDA_ERROR_INVALID_VALUE
    monkeypatch.setattr(L, "_launch_fn", failing)
    monkeypatch.setattr(D, "error_name", lambda rc: f"CUresult {rc}")
    monkeypatch.setattr(D, "_error_string", lambda rc: "")
    k._memo.clear()  # memo and layout entries captured the old function pointer
    k._layouts = []
    with pytest.raises(KernelLaunchError, match="CUresult 1"):
        k(a, a, a)


def test_launch_hooks_see_every_path(runtime) -> None:  # type: ignore[no-untyped-def]
    """Automatic (checked, fast table, memo, layout entries), explicit and other-stream
    launches all reach the hooks, once each; entries made while a hook is registered report
    their launches; with no hook registered silent entries are used again."""
    from ringkernel import add_launch_hook, remove_launch_hook

    calls, _, _ = runtime
    k = _kernel()
    a, b = FakeDeviceArray(10), FakeDeviceArray(10)
    k(a, a, a)  # memoised
    k(a, a, a)
    assert k._memo
    silent = list(k._layouts)
    events = []
    h = add_launch_hook(events.append)
    try:
        assert not k._memo  # registering a hook dropped the memos
        k(a, a, a)  # fast table
        k(b, b, b)  # fast table, new arrays
        k[4, 128](a, a, a)  # explicit: checked path
        k[4, 128](a, a, a)  # explicit: fast table
        k(a, a, a, stream=0x77)
        k(a, a, a)  # memoised while hooked: the entry reports
        k(a, a, a)
        k(b, b, b)  # a layout entry made while hooked: reports
        k[4, 128](a, a, a)  # the configured launch's memo entry: reports
        assert k._memo  # entries made while hooked report their launches
    finally:
        remove_launch_hook(h)
    assert not k._memo and k._layouts == silent  # the reporting entries went with the last hook
    assert [e.kind for e in events] == ["auto", "auto", "explicit", "explicit", "auto", "auto", "auto", "auto",
                                        "explicit"]  # fmt: skip
    assert len(calls) >= 9
    assert all(e.kernel_name == "add" for e in events)
    assert events[2].grid == (4, 1, 1) and events[2].block == (128, 1, 1)
    assert events[4].stream == 0x77
    n = len(calls)
    k(a, a, a)
    k(a, a, a)
    assert k._memo and len(calls) == n + 2 and len(events) == 9  # removed: not called any more


def test_a_failing_hook_does_not_break_launches(runtime, caplog) -> None:  # type: ignore[no-untyped-def]
    from ringkernel import add_launch_hook, remove_launch_hook

    calls, _, _ = runtime
    k = _kernel()
    a = FakeDeviceArray(10)

    def bad(event):  # type: ignore[no-untyped-def]
        raise ValueError("boom")

    h = add_launch_hook(bad)
    try:
        k(a, a, a)
        k(a, a, a)
    finally:
        remove_launch_hook(h)
    assert len(calls) == 2
    assert sum("boom" in r.getMessage() or "raised" in r.getMessage() for r in caplog.records) == 1


def test_closing_kernels_and_compiled_kernels(runtime) -> None:  # type: ignore[no-untyped-def]
    from ringkernel import ConfigurationError, ResourceClosedError

    calls, _, _ = runtime
    k = _kernel()
    a = FakeDeviceArray(10)
    k(a, a, a)
    k(a, a, a)
    ck = next(iter(k._compiled.values()))
    with pytest.raises(ConfigurationError, match="held by its GpuKernel"):
        ck.close()
    n = len(calls)
    k.close()
    k.close()  # idempotent
    assert ck.closed and not k._memo and not k._compiled
    for launch in (lambda: k(a, a, a), lambda: k[4, 128](a, a, a), lambda: k.compiled(a, a, a)):
        with pytest.raises(ResourceClosedError, match="GpuKernel 'add'"):
            launch()
    assert len(calls) == n  # nothing reached the driver
    with pytest.raises(ResourceClosedError, match="CompiledKernel"):
        ck.launcher.launch([], (1, 1, 1), (1, 1, 1), 0, 0)  # an unloaded function is never launched


def _recording_saxpy(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A float32 saxpy kernel on the fake driver, and the list its launches append
    ``(alpha, [x, y, out pointers])`` to, decoded from each parameter block."""
    seen: list[tuple[float, list[int]]] = []

    def launch(f, gx, gy, gz, bx, by, bz, shm, stream, params, extra):  # type: ignore[no-untyped-def]
        ptrs = ctypes.cast(params, ctypes.POINTER(ctypes.c_void_p))
        alpha = struct.unpack("<f", ctypes.string_at(ptrs[0], 4))[0]
        data = [struct.unpack("<q", ctypes.string_at(ptrs[1 + k * 7 + 4], 8))[0] for k in range(3)]
        seen.append((alpha, data))
        return 0

    cb = PROTO(launch)
    monkeypatch.setattr(L, "_launch_fn", cb)

    def saxpy(alpha, x, y, out):  # type: ignore[no-untyped-def]
        for i in range(global_thread_id(), out.size, grid_stride()):
            out[i] = alpha * x[i] + y[i]

    k = gpu_kernel(grid_stride=True, arch=GpuArchitecture.preset("H200"),
                   signatures=["void(float32, float32[::1], float32[::1], float32[::1])"])(saxpy)  # fmt: skip
    k._runtime = True
    return k, seen


def test_scalar_memo_writes_each_calls_scalar(runtime, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A scalar that changes every call (a new NumPy float each time) launches from the scalar
    memo, with that call's value in the parameter block; another scalar type, or an array that
    died, never reuses the entry."""
    k, seen = _recording_saxpy(monkeypatch)
    x, y, out = FakeDeviceArray(100), FakeDeviceArray(100), FakeDeviceArray(100)
    alphas = [np.float32(v) for v in (0.5, 1.5, -2.0, 3.25, 7.0)]
    for a in alphas:
        k(a, x, y, out)
    assert k._layouts, "a layout entry exists"
    assert [s[0] for s in seen] == [float(a) for a in alphas]
    assert all(s[1] == [x.ptr, y.ptr, out.ptr] for s in seen)
    k(2.5, x, y, out)  # a Python float: another type, so not the np.float32 entry
    assert seen[-1][0] == 2.5
    y2 = FakeDeviceArray(100)
    k(np.float32(9.0), x, y2, out)  # another array of the same layout: its pointer is written
    assert seen[-1] == (9.0, [x.ptr, y2.ptr, out.ptr])
    k(np.float32(4.0), x, y, out)  # and back: the pointer the block holds is y's again
    assert seen[-1] == (4.0, [x.ptr, y.ptr, out.ptr])
    del y2
    gc.collect()
    y3 = FakeDeviceArray(100)  # may take y2's id: its own pointer is launched
    k(np.float32(5.0), x, y3, out)
    assert seen[-1] == (5.0, [x.ptr, y3.ptr, out.ptr])
    z = FakeDeviceArray(64)  # another shape: another launch size, not this entry
    k(np.float32(1.0), z, z, z)
    assert seen[-1] == (1.0, [z.ptr] * 3) and k.last_config is not None and k.last_config.elements == 64


def test_arrays_read_every_call_are_never_memoised(runtime, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A type with an attribute reader (as CuPy's and PyTorch's arrays have) is read on every
    launch, so a change of pointer or shape in place is always seen, and no memo is made."""
    calls, _, _ = runtime

    class Reshapable:  # like a CuPy array: same object, new pointer/shape possible
        def __init__(self, ptr: int, n: int) -> None:
            self.ptr, self.n = ptr, n

        __cuda_array_interface__ = property(lambda self: {"shape": (self.n,), "typestr": "<f4",
                                                            "data": (self.ptr, False), "version": 3})  # fmt: skip

    monkeypatch.setitem(
        L._READERS, Reshapable, lambda a: (a.ptr, (a.n,), (4,), np.dtype(np.float32), None)
    )
    k = _kernel()
    a = Reshapable(0x1000, 500)
    for _ in range(3):
        k(a, a, a)
    assert not k._memo and calls[-1]["data"] == [0x1000] * 3
    a.ptr, a.n = 0x9000, 700  # moved and resized in place
    k(a, a, a)
    assert calls[-1]["data"] == [0x9000] * 3 and k.last_config is not None and k.last_config.elements == 700


class _Guarded:
    """Like a CuPy array: the same object may get a new pointer, shape or dtype in place."""

    def __init__(self, ptr: int, n: int, dtype: str = "float32") -> None:
        self.ptr, self.shape, self.dtype = ptr, (n,), np.dtype(dtype)

    @property
    def strides(self) -> tuple[int, ...]:
        return (self.dtype.itemsize,)

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3}


@pytest.fixture
def guarded(runtime, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``_Guarded`` registered as CuPy's type is: an attribute reader, a guard, a stream check."""
    stream = {"current": 0}
    monkeypatch.setattr(L, "_HANDLERS", {})
    monkeypatch.setitem(L._READERS, _Guarded,
                        lambda a: (a.ptr, a.shape, a.strides, a.dtype, stream["current"] or None))  # fmt: skip

    def make_guard(a):  # type: ignore[no-untyped-def]
        sh, st, dt = a.shape, a.strides, a.dtype

        def guard(x):  # type: ignore[no-untyped-def]
            if type(x) is not _Guarded or x.shape != sh or x.strides != st or x.dtype != dt:
                return None
            return x.ptr

        return guard, lambda: stream["current"] == 0

    monkeypatch.setitem(L._GUARDS, _Guarded, make_guard)
    return runtime, stream


def test_read_every_call_arrays_launch_from_a_guarded_memo(guarded, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """CuPy/PyTorch-like arrays get a memo entry whose guard re-reads pointer, shape, strides
    and dtype each call: a pointer moved in place is launched with; a shape, dtype or type
    changed in place, another thread or a producer stream to wait for leave the entry alone
    and the checked path launches right."""
    (calls, _, _), stream = guarded
    synced: list[int] = []
    monkeypatch.setattr(L, "_sync_fn", lambda s: synced.append(s.value) or 0)
    k = _kernel()
    a, b, c = _Guarded(0x1000, 500), _Guarded(0x2000, 500), _Guarded(0x3000, 500)
    for _ in range(3):
        k(a, b, c)
    assert len(k._layouts) == 1 and calls[-1]["data"] == [0x1000, 0x2000, 0x3000]
    a.ptr = 0x9000  # moved in place (PyTorch's set_): the guard writes the new pointer
    k(a, b, c)
    assert calls[-1]["data"] == [0x9000, 0x2000, 0x3000] and len(k._layouts) == 1
    a.shape = b.shape = c.shape = (700,)  # reshaped in place: another launch size
    k(a, b, c)
    assert calls[-1]["data"] == [0x9000, 0x2000, 0x3000]
    assert k.last_config is not None and k.last_config.elements == 700
    assert calls[-1]["grid"][0] * calls[-1]["block"][0] >= 700 or k.last_config.elements == 700
    a.dtype = np.dtype("float64")  # another dtype in place: refused by the checked path, not launched
    n = len(calls)
    with pytest.raises(Exception, match="float64|dtype|type"):
        k(a, b, c)
    assert len(calls) == n
    a.dtype = np.dtype("float32")
    k(a, b, c)
    k(a, b, c)
    assert calls[-1]["data"] == [0x9000, 0x2000, 0x3000]
    stream["current"] = 0x77  # the library's current stream is not the default one
    k(a, b, c)
    assert synced and synced[-1] == 0x77  # the producer's stream was waited for (checked path)
    stream["current"] = 0
    import threading

    out: list[Any] = []
    t = threading.Thread(target=lambda: (k(a, b, c), out.append(calls[-1]["data"])))
    t.start()
    t.join()
    assert out == [[0x9000, 0x2000, 0x3000]]  # another thread: the fast path with its own buffer


def test_guarded_memo_writes_scalars_and_pointers_together(guarded, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    k, seen = _recording_saxpy(monkeypatch)
    x, out = _Guarded(0x1000, 64), _Guarded(0x3000, 64)
    y = FakeDeviceArray(64)  # a numba-like array among them: cached by identity
    rng = np.random.default_rng(7)
    alphas = [np.float32(v) for v in rng.standard_normal(20)]
    for i, al in enumerate(alphas):
        if i == 10:
            x.ptr = 0x5000
        k(al, x, y, out)
    assert len(k._layouts) == 1
    assert [s[0] for s in seen] == [float(a) for a in alphas]
    assert [s[1][0] for s in seen] == [0x1000] * 10 + [0x5000] * 10
    assert all(s[1][1:] == [y.ptr, 0x3000] for s in seen)
    go_guard = L._GUARDS[_Guarded](x)[0]
    assert go_guard(FakeDeviceArray(64)) is None  # another type at a reused id: never this entry's


def test_new_arrays_every_call_launch_from_the_layout_entry(runtime) -> None:  # type: ignore[no-untyped-def]
    """A new array set every call (never seen before) launches from the layout entry with its
    own pointers, without an identity-cache record per array; repeats of one set become a
    launch memo entry; another size is another entry."""
    calls, _, _ = runtime
    k = _kernel()
    first = [FakeDeviceArray(3000) for _ in range(3)]
    k(*first)
    assert len(k._layouts) == 1
    cached = len(L._CACHE)
    for _ in range(20):  # (past 32 new sets, memo attempts back off: see _promote)
        fresh = [FakeDeviceArray(3000) for _ in range(3)]
        k(*fresh)
        assert calls[-1]["data"] == [x.ptr for x in fresh]
    gc.collect()
    assert len(L._CACHE) <= cached + 3 and len(k._layouts) == 1  # records die with their arrays
    same = [FakeDeviceArray(3000) for _ in range(3)]
    for _ in range(5):
        k(*same)
    assert calls[-1]["data"] == [x.ptr for x in same] and k._memo  # the same set again: memoised
    small = [FakeDeviceArray(10) for _ in range(3)]
    k(*small)
    assert calls[-1]["data"] == [x.ptr for x in small] and calls[-1]["grid"][0] == 1
    assert len(k._layouts) == 2
    k(*fresh)  # the first layout again: still its entry
    assert calls[-1]["data"] == [x.ptr for x in fresh] and k.last_config is not None
    assert k.last_config.elements == 3000


def test_immutable_attribute_arrays_are_cached_and_memoised(runtime) -> None:  # type: ignore[no-untyped-def]
    """A class declaring ``__rk_immutable_array__`` (ringkernel's DeviceArray) is read from its
    attributes, cached by identity (its record dies with it) and memoised like numba's arrays."""
    calls, _, _ = runtime

    class Light:
        __rk_immutable_array__ = True
        __slots__ = ("ptr", "shape", "strides", "dtype", "__weakref__")

        def __init__(self, ptr: int, n: int) -> None:
            self.ptr, self.shape, self.strides, self.dtype = ptr, (n,), (4,), np.dtype(np.float32)

        @property
        def __cuda_array_interface__(self) -> dict:
            return {"shape": self.shape, "typestr": "<f4", "data": (self.ptr, False), "version": 3}

    k = _kernel()
    a, b, c = Light(0x1000, 900), Light(0x2000, 900), Light(0x3000, 900)
    info = L.describe_arg(a)
    assert info is not None and info.ref is not None and info.values[4] == 0x1000 and info.size == 900
    for _ in range(4):
        k(a, b, c)
    assert calls[-1]["data"] == [0x1000, 0x2000, 0x3000] and k._memo
    for i in range(5):  # new ones of the same layout: the layout entry's guard reads .ptr
        x = Light(0x9000 + i * 0x1000, 900)
        k(x, b, c)
        assert calls[-1]["data"] == [x.ptr, 0x2000, 0x3000]
    n = len(k._memo)
    del a
    gc.collect()
    assert len(k._memo) == n - 1  # the memo entry died with the array


def test_careless_arguments_after_layout_entries_are_refused(runtime) -> None:  # type: ignore[no-untyped-def]
    """With layout entries and a memo in place, a host array, None, an array of another dtype
    or a missing argument never launch: each reaches the checked path and its error."""
    from ringkernel import KernelArgumentError

    calls, _, _ = runtime
    k = _kernel()
    a, b, c = FakeDeviceArray(256), FakeDeviceArray(256), FakeDeviceArray(256)
    for _ in range(3):
        k(a, b, c)
    k(FakeDeviceArray(256), b, c)
    assert k._memo and k._layouts
    n = len(calls)
    for bad in (np.zeros(256, np.float32), None, FakeDeviceArray(256, "float64")):
        with pytest.raises((KernelArgumentError, TypeError)) as info:
            k(bad, b, c)
        assert "a" in str(info.value)  # names the parameter
    with pytest.raises(Exception):
        k(a, b)  # a missing argument
    assert len(calls) == n  # none of them launched
    k(a, b, c)
    assert calls[-1]["data"] == [a.ptr, b.ptr, c.ptr]



def test_layout_entries_survive_a_profiler_entered_and_left(runtime) -> None:  # type: ignore[no-untyped-def]
    """A hook registered and removed around one step of many: the silent layout entries are put
    aside and come back (not compiled again), the reporting ones likewise; each still launches
    the arrays of its call, and a silent entry never reports."""
    from ringkernel import add_launch_hook, remove_launch_hook

    calls, _, _ = runtime
    k = _kernel()
    k(FakeDeviceArray(10), FakeDeviceArray(10), FakeDeviceArray(10))  # new arrays: a layout entry
    silent = list(k._layouts)
    assert silent
    events: list = []
    for step in range(3):
        h = add_launch_hook(events.append)
        try:
            assert k._layouts is not silent and all(e not in silent for e in k._layouts)
            a = FakeDeviceArray(10)
            k(a, FakeDeviceArray(10), FakeDeviceArray(10))
            assert calls[-1]["data"][0] == a.ptr
            if step == 0:
                hooked = list(k._layouts)
            else:
                assert k._layouts == hooked  # the reporting entries came back too
        finally:
            remove_launch_hook(h)
        assert k._layouts == silent  # the same entries: nothing compiled again
        b = FakeDeviceArray(10)
        k(b, FakeDeviceArray(10), FakeDeviceArray(10))
        assert calls[-1]["data"][0] == b.ptr
    assert len(events) == 3  # the silent entries reported nothing
    k.close()
    assert not k._layouts and not k._layouts_aside
