"""The only ctypes binding to the CUDA driver (``libcuda``); every result goes through :func:`check`.

Other modules call the driver as ``driver.lib().cuXxx(...)`` and pass the result to
``driver.check(rc, "cuXxx")``, which raises :class:`~ringkernel.errors.DriverError` keeping
the numeric result, its name (``CUDA_ERROR_...``), the operation and a hint for the common
failures. Nothing outside this module loads ``libcuda`` or recognises an error by its text.

Importing this module loads nothing: the library is opened on the first :func:`lib` call.
No ``argtypes`` are declared: ctypes' per-argument converters triple the cost of a call
(1.3 us against 0.44 us measured for ``cuLaunchKernel``). Callers pass ``c_void_p`` objects
for pointers and handles and plain ints below 2**31 for unsigned values, which the x86-64
and AArch64 ABIs pass in the same registers.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from .errors import DriverError

_T = TypeVar("_T")

__all__ = [
    "lib",
    "check",
    "error_name",
    "device_count",
    "event_done",
    "event_synchronize",
    "event_create",
    "event_record",
    "event_recorder",
    "capture_checker",
    "event_elapsed_ms",
    "event_destroy",
    "stream_handle",
    "LoadedFunction",
    "load_function",
    "unload_module",
    "mem_alloc",
    "mem_free",
    "mem_get_info",
    "memcpy_htod",
    "memcpy_dtoh",
    "memcpy_dtod",
    "pointer_is_pinned_host",
    "stream_priority_range",
    "stream_create",
    "stream_destroy",
    "stream_synchronize",
    "stream_is_capturing",
    "stream_begin_capture",
    "stream_end_capture",
    "graph_instantiate",
    "graph_launch",
    "graph_destroy",
    "ctx_synchronize",
    "ctx_current",
    "in_numba_context",
    "error",
    "CUDA_SUCCESS",
    "CUDA_ERROR_INVALID_VALUE",
    "CUDA_ERROR_OUT_OF_MEMORY",
    "CUDA_ERROR_INVALID_CONTEXT",
    "CUDA_ERROR_INVALID_HANDLE",
    "CUDA_ERROR_NOT_READY",
    "CUDA_ERROR_ILLEGAL_ADDRESS",
]

CUDA_SUCCESS = 0
CUDA_ERROR_INVALID_VALUE = 1
CUDA_ERROR_OUT_OF_MEMORY = 2
CUDA_ERROR_NOT_INITIALIZED = 3
CUDA_ERROR_DEINITIALIZED = 4
CUDA_ERROR_NO_DEVICE = 100
CUDA_ERROR_INVALID_CONTEXT = 201
CUDA_ERROR_INVALID_HANDLE = 400
CUDA_ERROR_NOT_FOUND = 500
CUDA_ERROR_NOT_READY = 600
CUDA_ERROR_ILLEGAL_ADDRESS = 700
CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701
CUDA_ERROR_LAUNCH_TIMEOUT = 702
CUDA_ERROR_ILLEGAL_INSTRUCTION = 715
CUDA_ERROR_MISALIGNED_ADDRESS = 716
CUDA_ERROR_INVALID_PC = 718
CUDA_ERROR_LAUNCH_FAILED = 719
CUDA_ERROR_CONTEXT_IS_DESTROYED = 709

_UNUSABLE = (
    "the CUDA context is now unusable: every later call fails. Restart the process; to find the "
    "faulting access, run it under `compute-sanitizer`"
)
_HINTS = {
    CUDA_ERROR_INVALID_VALUE: "an argument of the call is out of range (a size, a flag, a null pointer)",
    CUDA_ERROR_OUT_OF_MEMORY: "free device memory (drop arrays, pool.compact()) or use a smaller problem",
    CUDA_ERROR_NOT_INITIALIZED: "the driver was not initialised: a CUDA context must exist (numba.cuda.current_context())",
    CUDA_ERROR_DEINITIALIZED: "the driver is shutting down (interpreter exit)",
    CUDA_ERROR_NO_DEVICE: "no CUDA device is visible: check `nvidia-smi` and CUDA_VISIBLE_DEVICES, "
    "or run on numba's simulator (RINGKERNEL_SIMULATOR=1)",
    CUDA_ERROR_INVALID_CONTEXT: "no CUDA context is current on this thread",
    CUDA_ERROR_INVALID_HANDLE: "a handle was used after it was destroyed (a closed stream, event, graph or "
    "module) or belongs to another context",
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: "the block needs more registers or shared memory than an SM has: use a "
    "smaller block (or let ringkernel choose)",
    CUDA_ERROR_LAUNCH_TIMEOUT: "a kernel ran past the display watchdog; " + _UNUSABLE,
    CUDA_ERROR_ILLEGAL_ADDRESS: "a kernel accessed memory out of bounds or freed memory; " + _UNUSABLE,
    CUDA_ERROR_ILLEGAL_INSTRUCTION: "a kernel executed an illegal instruction; " + _UNUSABLE,
    CUDA_ERROR_MISALIGNED_ADDRESS: "a kernel accessed memory at a misaligned address; " + _UNUSABLE,
    CUDA_ERROR_INVALID_PC: "a kernel jumped to an invalid address; " + _UNUSABLE,
    CUDA_ERROR_LAUNCH_FAILED: "a kernel failed while running; " + _UNUSABLE,
}

_lib: Any = None
#: ``cuLaunchKernel`` and ``cuStreamSynchronize`` with their result types set, for the launch
#: path (attribute lookups on the library cost ~0.1 us a call). Set by :func:`lib`.
launch_fn: Any = None
sync_fn: Any = None


def _load_library() -> Any:
    """``libcuda`` through ctypes. The usual names first: ``ctypes.util.find_library`` runs
    ``ldconfig`` in a subprocess (about 2 ms, measured inside a first cache hit on the H200),
    so it is only the fallback."""
    errors: list[str] = []
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll", None):
        if name is None:
            from ctypes.util import find_library

            name = find_library("cuda")
            if not name:
                break
        try:
            return ctypes.CDLL(name)
        except OSError as exc:
            errors.append(f"{name}: {exc}")
    raise DriverError(
        "cannot load the CUDA driver library (libcuda)",
        operation="dlopen libcuda",
        result=None,
        hint="install the NVIDIA driver, or run on numba's CUDA simulator (RINGKERNEL_SIMULATOR=1)",
        details={"tried": errors},
    )


def lib() -> Any:
    """The driver library (loaded on first use)."""
    global _lib, launch_fn, sync_fn
    if _lib is None:
        loaded = _load_library()
        fn = loaded.cuLaunchKernel
        fn.restype = ctypes.c_int
        sfn = loaded.cuStreamSynchronize
        sfn.restype = ctypes.c_int
        launch_fn, sync_fn = fn, sfn
        _lib = loaded
    return _lib


def error_name(result: int) -> str:
    """``"CUDA_ERROR_ILLEGAL_ADDRESS"`` for 700 (the driver's own name; ``CUresult N`` if unknown)."""
    name = ctypes.c_char_p()
    try:
        if lib().cuGetErrorName(int(result), ctypes.byref(name)) == 0 and name.value:
            return name.value.decode()
    except Exception:  # noqa: BLE001 - naming an error must never raise another
        pass
    return f"CUresult {result}"


def _error_string(result: int) -> str:
    desc = ctypes.c_char_p()
    try:
        if lib().cuGetErrorString(int(result), ctypes.byref(desc)) == 0 and desc.value:
            return desc.value.decode()
    except Exception:  # noqa: BLE001
        pass
    return ""


def check(result: int, operation: str, *, hint: str | None = None, **details: Any) -> None:
    """Raise :class:`DriverError` unless ``result`` is ``CUDA_SUCCESS``.

    ``operation`` names the call (``"cuMemAlloc of 4096 bytes"``); ``hint`` replaces the
    generic hint for this result; ``details`` are kept on the error.
    """
    if result:
        raise error(result, operation, hint=hint, **details)


def error(result: int, operation: str, *, hint: str | None = None, **details: Any) -> DriverError:
    """The :class:`DriverError` for a failed call (for callers that raise it themselves)."""
    name = error_name(result)
    text = _error_string(result)
    return DriverError(
        f"{operation} failed: {name}" + (f" ({text})" if text else ""),
        operation=operation,
        result=int(result),
        result_name=name,
        hint=hint or _HINTS.get(int(result)),
        details=details,
    )


def device_count() -> int:
    """Devices the driver sees, asked without numba; 0 when there is no driver or no device."""
    try:
        driver = lib()
        if driver.cuInit(0) != 0:
            return 0
        count = ctypes.c_int(0)
        if driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    except (DriverError, AttributeError):
        return 0


def _event_handle(event: Any) -> Any:
    if isinstance(event, int):  # a raw CUevent (event_create)
        return ctypes.c_void_p(event)
    handle = event.handle
    value = getattr(handle, "value", None)  # ctypes handles (older numba)
    return ctypes.c_void_p(int(value if value is not None else handle) or 0)


def event_synchronize(event: Any) -> None:
    """``cuEventSynchronize`` on a numba or raw event; failed work before it raises :class:`DriverError`."""
    check(lib().cuEventSynchronize(_event_handle(event)), "cuEventSynchronize")


def event_done(event: Any) -> bool:
    """``cuEventQuery`` on a numba event: True when its work finished, False while it runs.

    Straight through ctypes because numba logs every ``CUDA_ERROR_NOT_READY`` of its own
    ``Event.query()`` at ERROR level, which turns polling into log spam. Any other result
    (the work before the event failed) raises :class:`DriverError`.
    """
    rc = lib().cuEventQuery(_event_handle(event))
    if rc == CUDA_SUCCESS:
        return True
    if rc == CUDA_ERROR_NOT_READY:
        return False
    raise error(rc, "cuEventQuery")


def event_create() -> int:
    """``cuEventCreate`` with timing enabled (flags 0): a raw ``CUevent`` of the current context."""
    h = ctypes.c_void_p()
    check(lib().cuEventCreate(ctypes.byref(h), 0), "cuEventCreate")
    return int(h.value or 0)


def event_record(event: int, stream: int) -> None:
    """``cuEventRecord`` of a raw event on a raw stream (0: the legacy default stream)."""
    check(lib().cuEventRecord(ctypes.c_void_p(event), ctypes.c_void_p(stream) if stream else None), "cuEventRecord")


def _handle_cache() -> tuple[dict[int, Any], Callable[[int], Any]]:
    handles: dict[int, Any] = {0: None}

    def arg(h: int) -> Any:
        c = handles.get(h)
        if c is None and h:
            c = handles[h] = ctypes.c_void_p(h)
        return c

    return handles, arg


def event_recorder() -> Callable[[int, int], None]:
    """:func:`event_record` for a hot path (a profiler records one event per launch): the
    function is looked up once and each handle's ``c_void_p`` is made once (about half the cost)."""
    fn = lib().cuEventRecord
    _, arg = _handle_cache()

    def record(event: int, stream: int) -> None:
        rc = fn(arg(event), arg(stream))
        if rc:
            check(rc, "cuEventRecord")

    return record


def capture_checker() -> Callable[[int], bool]:
    """:func:`stream_is_capturing` for a hot path (see :func:`event_recorder`)."""
    fn = lib().cuStreamIsCapturing
    _, arg = _handle_cache()

    def capturing(stream: int) -> bool:
        status = ctypes.c_int(0)
        return bool(fn(arg(stream), ctypes.byref(status))) or status.value != 0

    return capturing


def event_functions() -> tuple[int, int, int, Any]:
    """The addresses of ``cuEventRecord``, ``cuStreamIsCapturing`` and ``cuEventElapsedTime``
    and an object that keeps them alive: for the compiled event stamps (``_native.c``
    ``EventStamps``; tests give stand-ins)."""
    fns = (lib().cuEventRecord, lib().cuStreamIsCapturing, lib().cuEventElapsedTime)
    addr = [ctypes.cast(f, ctypes.c_void_p).value or 0 for f in fns]
    return addr[0], addr[1], addr[2], fns


def event_elapsed_ms(start: int, end: int) -> float | None:
    """``cuEventElapsedTime`` between two raw events in ms; ``None`` while either has not completed."""
    ms = ctypes.c_float()
    rc = lib().cuEventElapsedTime(ctypes.byref(ms), ctypes.c_void_p(start), ctypes.c_void_p(end))
    if rc == CUDA_ERROR_NOT_READY:
        return None
    check(rc, "cuEventElapsedTime")
    return float(ms.value)


def event_destroy(event: int) -> None:
    """``cuEventDestroy``."""
    check(lib().cuEventDestroy_v2(ctypes.c_void_p(event)), "cuEventDestroy")


def stream_handle(stream: Any) -> int:
    """The raw ``CUstream`` of a numba stream, a cuda.core stream, a raw int, or 0 for ``None``."""
    if stream is None or stream == 0:
        return 0
    if isinstance(stream, int):
        return stream
    proto = getattr(stream, "__cuda_stream__", None)
    if proto is not None:
        return int(proto()[1])
    handle = getattr(stream, "handle", None)
    if handle is None:
        raise TypeError(f"not a CUDA stream: {stream!r}")
    value = getattr(handle, "value", handle)  # ctypes handles (older numba) or cuda-bindings objects
    return int(value or 0)


# -- modules ---------------------------------------------------------------------------------
_ATTR_MAX_THREADS, _ATTR_SHARED, _ATTR_REGS = 0, 1, 4


@dataclass(frozen=True)
class LoadedFunction:
    """A kernel loaded with ``cuModuleLoadData`` into the current context."""

    module: int
    function: int
    registers_per_thread: int
    shared_mem_per_block: int
    max_threads_per_block: int


def load_function(image: bytes, entry_name: str) -> LoadedFunction:
    """Load ``image`` (cubin/fatbin) into the current context and look up ``entry_name``.

    Plain driver calls: no numba or cuda.core objects are created, which is what keeps a
    cache hit under a millisecond. The module stays loaded until :func:`unload_module`.
    """
    driver = lib()
    mod = ctypes.c_void_p()
    check(driver.cuModuleLoadData(ctypes.byref(mod), ctypes.c_char_p(image)), "cuModuleLoadData")
    func = ctypes.c_void_p()
    rc = driver.cuModuleGetFunction(ctypes.byref(func), mod, entry_name.encode())
    if rc:
        driver.cuModuleUnload(mod)
        check(rc, f"cuModuleGetFunction({entry_name})")
    vals = []
    for attr in (_ATTR_REGS, _ATTR_SHARED, _ATTR_MAX_THREADS):
        v = ctypes.c_int()
        check(driver.cuFuncGetAttribute(ctypes.byref(v), attr, func), "cuFuncGetAttribute")
        vals.append(v.value)
    return LoadedFunction(int(mod.value or 0), int(func.value or 0), vals[0], vals[1], vals[2])


def unload_module(module: int) -> None:
    """``cuModuleUnload``, ignoring errors (the context may already be gone at exit)."""
    try:
        lib().cuModuleUnload(ctypes.c_void_p(module))
    except Exception:  # noqa: BLE001
        pass


def in_numba_context(call: Callable[..., _T], *args: Any) -> _T:
    """``call(*args)``; if the driver says no context is current on this thread, make numba's
    context current (what numba does on a thread's first CUDA call) and call once more.

    Driver calls from a thread that never used numba (a worker thread, an executor) fail with
    ``CUDA_ERROR_INVALID_CONTEXT``; the retry is paid on that thread's first call only."""
    try:
        return call(*args)
    except DriverError as exc:
        if exc.result != CUDA_ERROR_INVALID_CONTEXT:
            raise
    from numba import cuda

    cuda.current_context()
    return call(*args)


# -- memory ----------------------------------------------------------------------------------
def mem_alloc(nbytes: int, *, hint: str | None = None) -> int:
    """``cuMemAlloc``: a device pointer of ``nbytes`` in the current context."""
    ptr = ctypes.c_uint64()
    check(lib().cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(nbytes)), f"cuMemAlloc of {nbytes} bytes",
          hint=hint, bytes=nbytes)  # fmt: skip
    return int(ptr.value)


def mem_free(ptr: int) -> None:
    """``cuMemFree``."""
    check(lib().cuMemFree_v2(ctypes.c_uint64(ptr)), f"cuMemFree(0x{ptr:x})")


def mem_get_info() -> tuple[int, int]:
    """``(free, total)`` bytes of the current device."""
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    check(lib().cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)), "cuMemGetInfo")
    return int(free.value), int(total.value)


def memcpy_htod(dst: int, src: int, nbytes: int, stream: int = 0) -> None:
    """Copy ``nbytes`` from host address ``src`` to device pointer ``dst``: ``cuMemcpyHtoD``
    (``stream`` 0: returns once the host bytes were read) or ``cuMemcpyHtoDAsync`` on ``stream``."""
    if stream:
        rc = lib().cuMemcpyHtoDAsync_v2(ctypes.c_uint64(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes),
                                        ctypes.c_void_p(stream))  # fmt: skip
    else:
        rc = lib().cuMemcpyHtoD_v2(ctypes.c_uint64(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes))
    check(rc, f"cuMemcpyHtoD of {nbytes} bytes to 0x{dst:x}", bytes=nbytes)


def memcpy_dtoh(dst: int, src: int, nbytes: int, stream: int = 0) -> None:
    """Copy ``nbytes`` from device pointer ``src`` to host address ``dst``: ``cuMemcpyDtoH``
    (``stream`` 0: synchronous) or ``cuMemcpyDtoHAsync`` on ``stream``."""
    if stream:
        rc = lib().cuMemcpyDtoHAsync_v2(ctypes.c_void_p(dst), ctypes.c_uint64(src), ctypes.c_size_t(nbytes),
                                        ctypes.c_void_p(stream))  # fmt: skip
    else:
        rc = lib().cuMemcpyDtoH_v2(ctypes.c_void_p(dst), ctypes.c_uint64(src), ctypes.c_size_t(nbytes))
    check(rc, f"cuMemcpyDtoH of {nbytes} bytes from 0x{src:x}", bytes=nbytes)


def memcpy_dtod(dst: int, src: int, nbytes: int, stream: int = 0) -> None:
    """Copy ``nbytes`` between device pointers: ``cuMemcpyDtoD`` (``stream`` 0) or ``cuMemcpyDtoDAsync``."""
    if stream:
        rc = lib().cuMemcpyDtoDAsync_v2(ctypes.c_uint64(dst), ctypes.c_uint64(src), ctypes.c_size_t(nbytes),
                                        ctypes.c_void_p(stream))  # fmt: skip
    else:
        rc = lib().cuMemcpyDtoD_v2(ctypes.c_uint64(dst), ctypes.c_uint64(src), ctypes.c_size_t(nbytes))
    check(rc, f"cuMemcpyDtoD of {nbytes} bytes 0x{src:x} -> 0x{dst:x}", bytes=nbytes)


def pointer_is_pinned_host(address: int) -> bool:
    """Whether ``address`` is host memory the driver knows (page-locked): ``cuPointerGetAttribute``
    with ``CU_POINTER_ATTRIBUTE_MEMORY_TYPE``; an unknown pointer is simply ``False``."""
    val = ctypes.c_uint()
    rc = lib().cuPointerGetAttribute(ctypes.byref(val), 2, ctypes.c_void_p(address))
    return rc == CUDA_SUCCESS and val.value == 1  # CU_MEMORYTYPE_HOST


# -- streams and graphs ----------------------------------------------------------------------
def stream_priority_range() -> tuple[int, int]:
    """``(least, greatest)`` stream priorities of the current context."""
    least, greatest = ctypes.c_int(), ctypes.c_int()
    check(lib().cuCtxGetStreamPriorityRange(ctypes.byref(least), ctypes.byref(greatest)), "cuCtxGetStreamPriorityRange")
    return least.value, greatest.value


def stream_create(priority: int, *, non_blocking: bool = True) -> int:
    """``cuStreamCreateWithPriority``: a new stream's raw handle."""
    h = ctypes.c_void_p()
    rc = lib().cuStreamCreateWithPriority(ctypes.byref(h), 1 if non_blocking else 0, int(priority))
    check(rc, f"cuStreamCreateWithPriority(priority={priority})")
    return int(h.value or 0)


def stream_destroy(handle: int) -> None:
    """``cuStreamDestroy``."""
    check(lib().cuStreamDestroy_v2(ctypes.c_void_p(handle)), "cuStreamDestroy")


def stream_synchronize(handle: int) -> None:
    """``cuStreamSynchronize`` (0: the legacy default stream)."""
    check(lib().cuStreamSynchronize(ctypes.c_void_p(handle) if handle else None), "cuStreamSynchronize")


def stream_is_capturing(handle: int) -> bool:
    """``cuStreamIsCapturing``: True while ``handle`` (0: the legacy default stream) records a graph.

    A result other than success also answers True (e.g. the legacy stream while another
    stream captures in global mode): callers use it to keep their own work out of a capture.
    """
    status = ctypes.c_int(0)
    rc = lib().cuStreamIsCapturing(ctypes.c_void_p(handle) if handle else None, ctypes.byref(status))
    return bool(rc) or status.value != 0


_CAPTURE_MODE_THREAD_LOCAL = 1


def stream_begin_capture(handle: int) -> None:
    """``cuStreamBeginCapture`` in thread-local mode."""
    check(lib().cuStreamBeginCapture_v2(ctypes.c_void_p(handle), _CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture",
          hint="see docs/streams.md, graph capture")  # fmt: skip


def stream_end_capture(handle: int) -> tuple[int, int]:
    """``cuStreamEndCapture``: ``(result, graph handle)``; the caller decides whether to raise
    (an exception inside the capture block must not be masked by this call's error)."""
    graph = ctypes.c_void_p()
    rc = lib().cuStreamEndCapture(ctypes.c_void_p(handle), ctypes.byref(graph))
    return int(rc), int(graph.value or 0)


def graph_instantiate(graph: int) -> int:
    """``cuGraphInstantiateWithFlags``: an executable graph's handle."""
    exec_ = ctypes.c_void_p()
    check(lib().cuGraphInstantiateWithFlags(ctypes.byref(exec_), ctypes.c_void_p(graph), 0), "cuGraphInstantiate",
          hint="see docs/streams.md, graph capture")  # fmt: skip
    return int(exec_.value or 0)


def graph_launch(exec_handle: int, stream: int) -> None:
    """``cuGraphLaunch`` on ``stream`` (0: the legacy default stream)."""
    check(lib().cuGraphLaunch(ctypes.c_void_p(exec_handle), ctypes.c_void_p(stream) if stream else None),
          "cuGraphLaunch")  # fmt: skip


def graph_destroy(exec_handle: int, graph: int) -> None:
    """``cuGraphExecDestroy`` and ``cuGraphDestroy`` (either may be 0)."""
    if exec_handle:
        check(lib().cuGraphExecDestroy(ctypes.c_void_p(exec_handle)), "cuGraphExecDestroy")
    if graph:
        check(lib().cuGraphDestroy(ctypes.c_void_p(graph)), "cuGraphDestroy")


def ctx_current() -> int:
    """``cuCtxGetCurrent``: the current context's handle (0: none on this thread)."""
    ctx = ctypes.c_void_p()
    check(lib().cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
    return int(ctx.value or 0)


def ctx_synchronize() -> None:
    """``cuCtxSynchronize``: wait for all work of the current context; a fault in any of it
    raises :class:`DriverError` (e.g. ``CUDA_ERROR_ILLEGAL_ADDRESS``)."""
    check(lib().cuCtxSynchronize(), "cuCtxSynchronize")
