"""Copies and synchronisations seen by active profilers: wrappers installed only while one is active.

A launch reaches the profiler through ringkernel's launch seam; copies and synchronisations
happen in numba (``DeviceNDArray.copy_to_device`` / ``copy_to_host``, ``cuda.to_device``,
``stream.synchronize()``, ``cuda.synchronize()``) and in ringkernel's own device arrays
(``DriverBackend``), which have no seam. While at least one profiler is active, this module
replaces those methods on their classes with wrappers that report to the active profilers
(:data:`ACTIVE`); when the last one leaves, the original methods are put back, so a program
without an active profiler runs numba's code unchanged (the same bargain as the launch hooks).

Wrapped (GPU): numba's ``DeviceNDArrayBase.copy_to_device`` and ``copy_to_host`` (which
``cuda.to_device`` and ``copy_to_host`` of every numba array use), numba's
``Stream.synchronize`` and ``Context.synchronize`` (``cuda.synchronize()``), and
``DriverBackend.copy_to_host`` / ``copy_to_device`` / ``copy_device`` (``DeviceArray``
copies); an ``@elementwise`` call's CPU side (``HybridKernel._run_cpu``, an ALGORITHM range
named "<kernel> (CPU)", where ``ringkernel.hybrid`` was imported when the profiler became
active). On the simulator: its ``FakeCUDAArray`` copies, ``FakeStream.synchronize`` and
``numba.cuda.synchronize``. Copies made by other libraries (CuPy, PyTorch) or by the raw
driver are not seen: bracket them with ``profiler.annotate_transfer``.

Patching a third-party class is what profilers of Python libraries do where the library has
no hook (OpenTelemetry's instrumentations, for example); it is undone exactly, and a failing
report never breaks the copy (it is logged once).
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from typing import Any, Callable

__all__ = ["ACTIVE", "register", "unregister", "refresh", "quiet", "installed"]

log = logging.getLogger(__name__)

#: The active profilers (mutated in place under ``_lock``; wrappers read it without the lock).
ACTIVE: list[Any] = []
_lock = threading.Lock()
_installed: list[tuple[Any, str, Any, Any]] = []  # (owner, attribute, original, wrapper)
_failed: set[str] = set()
_now = time.perf_counter_ns


def register(profiler: Any) -> None:
    """Report copies and synchronisations to ``profiler`` (installs the wrappers for the first one)."""
    with _lock:
        if profiler in ACTIVE:
            return
        if not ACTIVE:
            _install()
        ACTIVE.append(profiler)


def unregister(profiler: Any) -> None:
    """Stop reporting to ``profiler`` (the last one out restores the original methods)."""
    with _lock:
        if profiler in ACTIVE:
            ACTIVE.remove(profiler)
        if not ACTIVE:
            _uninstall()


def refresh() -> None:
    """Install the wrappers of targets that appeared since the first profiler became active (a
    module imported meanwhile: ``ringkernel.hybrid`` calls this when it is imported)."""
    with _lock:
        if ACTIVE:
            _install()


class _Quiet(threading.local):
    depth = 0


_quiet = _Quiet()


class quiet:
    """``with capture.quiet():`` the profilers' own copies and synchronisations (a timer waiting
    for the GPU) on this thread are not recorded."""

    def __enter__(self) -> None:
        _quiet.depth += 1

    def __exit__(self, *exc: object) -> None:
        _quiet.depth -= 1


def _report(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception:  # noqa: BLE001 - a profiler's bug must not break the user's copy
        name = getattr(fn, "__qualname__", repr(fn))
        if name not in _failed:
            _failed.add(name)
            log.exception("profiler callback %s failed; the copy or synchronisation went ahead", name)
        return None


def _copy_wrapper(original: Callable[..., Any], describe: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a copy method; ``describe(self, *args, **kwargs)`` -> (direction, bytes, stream), or
    ``None`` when the call copies nothing; zero-byte copies are not recorded either."""

    @functools.wraps(original)
    def copy(*args: Any, **kwargs: Any) -> Any:
        observers = ACTIVE
        if not observers or _quiet.depth:
            return original(*args, **kwargs)
        what = _report(describe, *args, **kwargs)  # (direction, bytes, stream), or None: not a copy
        if what is None or not what[1]:
            return original(*args, **kwargs)
        direction, nbytes, stream = what
        tokens = [(p, _report(p._copy_begin, stream)) for p in list(observers)]
        result = original(*args, **kwargs)  # a copy that raises is not recorded
        t1 = _now()
        for p, token in tokens:
            if token is not None:
                _report(p._copy_end, token, direction, nbytes, stream, t1)
        return result

    copy.__ringkernel_wrapped__ = original  # type: ignore[attr-defined]
    return copy


def _sync_wrapper(original: Callable[..., Any], what: str, stream_of: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def sync(*args: Any, **kwargs: Any) -> Any:
        observers = ACTIVE
        if not observers or _quiet.depth:
            return original(*args, **kwargs)
        t0 = _now()
        try:
            return original(*args, **kwargs)
        finally:
            t1 = _now()
            stream = stream_of(*args)
            for p in list(observers):
                _report(p._synchronized, what, stream, t0, t1)

    sync.__ringkernel_wrapped__ = original  # type: ignore[attr-defined]
    return sync


def _host_wrapper(original: Callable[..., Any], describe: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap host work (an ``@elementwise`` call's CPU side); ``describe(self, *args, **kwargs)``
    -> (name, args for the trace)."""

    @functools.wraps(original)
    def work(*args: Any, **kwargs: Any) -> Any:
        observers = ACTIVE
        if not observers or _quiet.depth:
            return original(*args, **kwargs)
        t0 = _now()
        result = original(*args, **kwargs)  # work that raises is not recorded
        t1 = _now()
        what = _report(describe, *args, **kwargs)
        if what is not None:
            for p in list(observers):
                _report(p._host_work, what[0], what[1], t0, t1)
        return result

    work.__ringkernel_wrapped__ = original  # type: ignore[attr-defined]
    return work


def _hybrid_cpu(self: Any, args: Any, arrays: Any, n: int) -> tuple[str, dict[str, Any]]:
    # HybridKernel._run_cpu(self, args, arrays, n): the loop and the copies its device arrays need
    threads = self.dispatcher.config.cpu_threads
    return f"{self.name} (CPU)", {"elements": int(n), "side": "cpu", "threads": threads if threads is not None else "all"}


def _stream_kw(args: tuple[Any, ...], kwargs: dict[str, Any], position: int) -> Any:
    if "stream" in kwargs:
        return kwargs["stream"]
    return args[position] if len(args) > position else None


def _is_device(obj: Any) -> bool:
    return hasattr(obj, "__cuda_array_interface__") or type(obj).__name__ in ("FakeCUDAArray", "DeviceNDArray")


def _own_stream(self: Any, stream: Any) -> Any:
    """numba copies on the array's own stream when none is given (``_default_stream``)."""
    if stream is None or (isinstance(stream, int) and not isinstance(stream, bool) and stream == 0):
        own = getattr(self, "stream", 0)
        return own if own else None
    return stream


def _moved(self: Any) -> int:
    """Bytes numba moves: the allocation's span (a strided view copies all of it)."""
    return int(getattr(self, "alloc_size", None) or getattr(self, "nbytes", 0) or 0)


def _numba_to_device(self: Any, ary: Any = None, *args: Any, **kwargs: Any) -> tuple[str, int, Any]:
    # copy_to_device(self, ary, stream=0)
    ary = kwargs.get("ary", ary)
    return ("DtoD" if _is_device(ary) else "HtoD"), _moved(self), _own_stream(self, _stream_kw(args, kwargs, 0))


def _numba_to_host(self: Any, ary: Any = None, *args: Any, **kwargs: Any) -> tuple[str, int, Any]:
    # copy_to_host(self, ary=None, stream=0)
    return "DtoH", _moved(self), _own_stream(self, _stream_kw(args, kwargs, 0))


def _sim_to_device(obj: Any = None, *args: Any, **kwargs: Any) -> tuple[str, int, Any] | None:
    # to_device(obj, stream=0, copy=True, to=None), as numba's GPU version: no copy for a device
    # array or copy=False; into `to=` through its copy_to_device (which records it)
    obj = kwargs.get("obj", kwargs.get("ary", obj))
    copy = kwargs.get("copy", args[1] if len(args) > 1 else True)
    to = kwargs.get("to", args[2] if len(args) > 2 else None)
    if _is_device(obj) or not copy or to is not None:
        return None
    return "HtoD", int(getattr(obj, "nbytes", 0) or 0), _stream_kw(args, kwargs, 0)


def _backend(direction: str) -> Callable[..., tuple[str, int, Any]]:
    # copy_to_host(host, src, nbytes, stream=None), copy_to_device(dst, host, nbytes, stream=None),
    # copy_device(dst, src, nbytes, stream=None): positional or keyword
    def describe(self: Any, *args: Any, **kwargs: Any) -> tuple[str, int, Any]:
        nbytes = kwargs.get("nbytes", args[2] if len(args) > 2 else 0)
        return direction, int(nbytes), _stream_kw(args, kwargs, 3)

    return describe


def _targets() -> list[tuple[Any, str, Callable[[Any], Any]]]:
    """(owner, attribute, make wrapper) for this backend."""
    from numba import config as numba_config

    from ..config import ensure_numba_cuda
    from ..memory.backend import DriverBackend, SimulatorBackend

    out: list[tuple[Any, str, Callable[[Any], Any]]] = []
    arrays: Any
    stream_cls: Any
    backend: Any
    if numba_config.ENABLE_CUDASIM:
        ensure_numba_cuda()
        import numba.cuda as nc
        from numba.cuda.simulator import api as sim_api
        from numba.cuda.simulator.cudadrv import devicearray as sim_arrays

        arrays, stream_cls, backend = sim_arrays.FakeCUDAArray, sim_api.stream, SimulatorBackend
        out.append((nc, "synchronize", lambda f: _sync_wrapper(f, "device synchronize", lambda *a: None)))
        # the simulator's to_device copies without copy_to_device (numba's GPU to_device uses it)
        out.append((nc, "to_device", lambda f: _copy_wrapper(f, _sim_to_device)))
    else:
        ensure_numba_cuda()
        from numba.cuda.cudadrv import devicearray
        from numba.cuda.cudadrv import driver as numba_driver

        arrays, stream_cls, backend = devicearray.DeviceNDArrayBase, numba_driver.Stream, DriverBackend
        out.append((numba_driver.Context, "synchronize",
                    lambda f: _sync_wrapper(f, "device synchronize", lambda *a: None)))  # fmt: skip
    out += [
        (arrays, "copy_to_device", lambda f: _copy_wrapper(f, _numba_to_device)),
        (arrays, "copy_to_host", lambda f: _copy_wrapper(f, _numba_to_host)),
        (stream_cls, "synchronize", lambda f: _sync_wrapper(f, "stream synchronize", lambda s, *a: s)),
        (backend, "copy_to_host", lambda f: _copy_wrapper(f, _backend("DtoH"))),
        (backend, "copy_to_device", lambda f: _copy_wrapper(f, _backend("HtoD"))),
        (backend, "copy_device", lambda f: _copy_wrapper(f, _backend("DtoD"))),
    ]  # fmt: skip
    # @elementwise's CPU side (its GPU side is a @gpu_kernel launch, seen by the launch seam):
    # only where the hybrid module is loaded (no HybridKernel exists otherwise; it calls
    # refresh() when it is imported while a profiler is active)
    elementwise = sys.modules.get("ringkernel.hybrid.elementwise")
    if elementwise is not None:
        out.append((elementwise.HybridKernel, "_run_cpu", lambda f: _host_wrapper(f, _hybrid_cpu)))
    return out


def _install() -> None:
    for owner, attr, make in _targets():
        original = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr)
        if original is None or hasattr(original, "__ringkernel_wrapped__"):
            continue
        wrapper = make(original)
        setattr(owner, attr, wrapper)
        _installed.append((owner, attr, original, wrapper))


def _uninstall() -> None:
    while _installed:
        owner, attr, original, wrapper = _installed.pop()
        current = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
        if current is wrapper:
            setattr(owner, attr, original)
        else:  # someone patched over the wrapper meanwhile (a mock): theirs stays; it holds ours
            log.warning("%s.%s was replaced while a profiler was active; not restoring it",
                        getattr(owner, "__name__", owner), attr)  # fmt: skip


def installed() -> list[str]:
    """The wrapped methods (for tests and ``repr``)."""
    return [f"{getattr(o, '__name__', o)}.{a}" for o, a, _, _ in _installed]
