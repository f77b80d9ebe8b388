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
copies). On the simulator: its ``FakeCUDAArray`` copies, ``FakeStream.synchronize`` and
``numba.cuda.synchronize``. Copies made by other libraries (CuPy, PyTorch) or by the raw
driver are not seen: bracket them with ``profiler.annotate_transfer``.

Patching a third-party class is what profilers of Python libraries do where the library has
no hook (OpenTelemetry's instrumentations, for example); it is undone exactly, and a failing
report never breaks the copy (it is logged once).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable

__all__ = ["ACTIVE", "register", "unregister"]

log = logging.getLogger(__name__)

#: The active profilers (mutated in place under ``_lock``; wrappers read it without the lock).
ACTIVE: list[Any] = []
_lock = threading.Lock()
_installed: list[tuple[Any, str, Any]] = []  # (owner, attribute, original)
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


def _report(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - a profiler's bug must not break the user's copy
        name = getattr(fn, "__qualname__", repr(fn))
        if name not in _failed:
            _failed.add(name)
            log.exception("profiler callback %s failed; the copy or synchronisation went ahead", name)
        return None


def _copy_wrapper(original: Callable[..., Any], describe: Callable[..., tuple[str, int, Any]]) -> Callable[..., Any]:
    """Wrap a copy method; ``describe(self, *args, **kwargs)`` -> (direction, bytes, stream)."""

    @functools.wraps(original)
    def copy(*args: Any, **kwargs: Any) -> Any:
        observers = ACTIVE
        if not observers:
            return original(*args, **kwargs)
        direction, nbytes, stream = describe(*args, **kwargs)
        tokens = [(p, _report(p._copy_begin, stream)) for p in list(observers)]
        try:
            return original(*args, **kwargs)
        finally:
            t1 = _now()
            for p, token in tokens:
                if token is not None:
                    _report(p._copy_end, token, direction, nbytes, stream, t1)

    copy.__ringkernel_wrapped__ = original  # type: ignore[attr-defined]
    return copy


def _sync_wrapper(original: Callable[..., Any], what: str, stream_of: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def sync(*args: Any, **kwargs: Any) -> Any:
        observers = ACTIVE
        if not observers:
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


def _stream_kw(args: tuple[Any, ...], kwargs: dict[str, Any], position: int) -> Any:
    if "stream" in kwargs:
        return kwargs["stream"]
    return args[position] if len(args) > position else None


def _is_device(obj: Any) -> bool:
    return hasattr(obj, "__cuda_array_interface__") or type(obj).__name__ in ("FakeCUDAArray", "DeviceNDArray")


def _numba_to_device(self: Any, ary: Any = None, *args: Any, **kwargs: Any) -> tuple[str, int, Any]:
    # copy_to_device(self, ary, stream=0)
    return ("DtoD" if _is_device(ary) else "HtoD"), int(getattr(self, "nbytes", 0) or 0), _stream_kw(args, kwargs, 0)


def _numba_to_host(self: Any, ary: Any = None, *args: Any, **kwargs: Any) -> tuple[str, int, Any]:
    # copy_to_host(self, ary=None, stream=0)
    return "DtoH", int(getattr(self, "nbytes", 0) or 0), _stream_kw(args, kwargs, 0)


def _sim_to_device(obj: Any = None, *args: Any, **kwargs: Any) -> tuple[str, int, Any]:
    # to_device(obj, stream=0, copy=True, to=None)
    return ("DtoD" if _is_device(obj) else "HtoD"), int(getattr(obj, "nbytes", 0) or 0), _stream_kw(args, kwargs, 0)


def _backend(direction: str) -> Callable[..., tuple[str, int, Any]]:
    def describe(self: Any, a: Any, b: Any, nbytes: int, stream: Any = None) -> tuple[str, int, Any]:
        return direction, int(nbytes), stream

    return describe


def _targets() -> list[tuple[Any, str, Callable[[Any], Any]]]:
    """(owner, attribute, make wrapper) for this backend."""
    from numba import config as numba_config

    from ..memory.backend import DriverBackend, SimulatorBackend

    out: list[tuple[Any, str, Callable[[Any], Any]]] = []
    arrays: Any
    stream_cls: Any
    backend: Any
    if numba_config.ENABLE_CUDASIM:
        import numba.cuda as nc
        from numba.cuda.simulator import api as sim_api
        from numba.cuda.simulator.cudadrv import devicearray as sim_arrays

        arrays, stream_cls, backend = sim_arrays.FakeCUDAArray, sim_api.stream, SimulatorBackend
        out.append((nc, "synchronize", lambda f: _sync_wrapper(f, "device synchronize", lambda *a: None)))
        # the simulator's to_device copies without copy_to_device (numba's GPU to_device uses it)
        out.append((nc, "to_device", lambda f: _copy_wrapper(f, _sim_to_device)))
    else:
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
    return out


def _install() -> None:
    for owner, attr, make in _targets():
        original = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr)
        if original is None or hasattr(original, "__ringkernel_wrapped__"):
            continue
        setattr(owner, attr, make(original))
        _installed.append((owner, attr, original))


def _uninstall() -> None:
    while _installed:
        owner, attr, original = _installed.pop()
        setattr(owner, attr, original)


def installed() -> list[str]:
    """The wrapped methods (for tests and ``repr``)."""
    return [f"{getattr(o, '__name__', o)}.{a}" for o, a, _ in _installed]
