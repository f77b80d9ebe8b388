"""CUDA graph capture of launches on a managed stream, replayed with one driver call.

ringkernel's own launches (``kernel(..., stream=s)``, ``kernel[grid, block, s](...)``) go
straight to ``cuLaunchKernel`` with the stream's raw handle, so the driver's stream capture
records them. Launch every kernel once before capturing: a first launch loads the module,
which does not belong in a graph. numba's own asynchronous copies on the stream are
captured too; anything that synchronises (a host copy from pageable memory, a numba
dispatcher launch that compiles) breaks the capture, and the driver's error says so.
"""

from __future__ import annotations

import ctypes
import weakref
from typing import Any

from ..errors import ConfigurationError, DeviceError

__all__ = ["CapturedGraph"]

_CAPTURE_MODE_THREAD_LOCAL = 1


def _check(rc: int, what: str) -> None:
    if rc:
        from ..compile.launcher import driver_error_name

        raise DeviceError(f"{what} failed: {driver_error_name(rc)}", hint="see docs/streams.md, graph capture")


class CapturedGraph:
    """``with manager.capture(StreamId.compute(0)) as g: ...launches...`` then ``g.replay()``."""

    def __init__(self, stream: Any, stream_handle: int) -> None:
        if stream_handle == 0:
            raise ConfigurationError(
                "cannot capture the legacy default stream", hint="capture a compute or transfer stream"
            )
        self.stream = stream
        self._h = stream_handle
        self._graph = ctypes.c_void_p()
        self._exec = ctypes.c_void_p()
        self.replays = 0
        self._finalizer: Any = None

    def __enter__(self) -> "CapturedGraph":
        from ..compile.launcher import _driver

        _check(_driver().cuStreamBeginCapture_v2(ctypes.c_void_p(self._h), _CAPTURE_MODE_THREAD_LOCAL),
               "cuStreamBeginCapture")  # fmt: skip
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        from ..compile.launcher import _driver

        lib = _driver()
        rc = lib.cuStreamEndCapture(ctypes.c_void_p(self._h), ctypes.byref(self._graph))
        if exc_type is not None:
            if self._graph.value:
                lib.cuGraphDestroy(self._graph)
            return  # the original error propagates
        _check(rc, "cuStreamEndCapture")
        _check(lib.cuGraphInstantiateWithFlags(ctypes.byref(self._exec), self._graph, 0), "cuGraphInstantiate")
        self._finalizer = weakref.finalize(self, _destroy, int(self._exec.value or 0), int(self._graph.value or 0))

    def replay(self, stream: Any = None) -> None:
        """Launch the captured work again (on its stream, or on ``stream``)."""
        if not self._exec.value:
            raise ConfigurationError("nothing captured yet", hint="use the graph as a `with` block first")
        from ..compile.launcher import _driver, stream_handle

        h = stream_handle(stream) if stream is not None else self._h
        _check(_driver().cuGraphLaunch(self._exec, ctypes.c_void_p(h) if h else None), "cuGraphLaunch")
        self.replays += 1

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()


def _destroy(exec_handle: int, graph: int) -> None:
    try:
        from ..compile.launcher import _driver

        lib = _driver()
        if exec_handle:
            lib.cuGraphExecDestroy(ctypes.c_void_p(exec_handle))
        if graph:
            lib.cuGraphDestroy(ctypes.c_void_p(graph))
    except Exception:  # the context may be gone at exit
        pass
