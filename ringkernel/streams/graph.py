"""CUDA graph capture of launches on a managed stream, replayed with one driver call.

ringkernel's own launches (``kernel(..., stream=s)``, ``kernel[grid, block, s](...)``) go
straight to ``cuLaunchKernel`` with the stream's raw handle, so the driver's stream capture
records them. Launch every kernel once before capturing: a first launch loads the module,
which does not belong in a graph. numba's own asynchronous copies on the stream are
captured too; anything that synchronises (a host copy from pageable memory, a numba
dispatcher launch that compiles) breaks the capture, and the driver's error says so.
"""

from __future__ import annotations

import weakref
from typing import Any

from .. import driver
from ..errors import ConfigurationError

__all__ = ["CapturedGraph"]


class CapturedGraph:
    """``with manager.capture(StreamId.compute(0)) as g: ...launches...`` then ``g.replay()``."""

    def __init__(self, stream: Any, stream_handle: int) -> None:
        if stream_handle == 0:
            raise ConfigurationError(
                "cannot capture the legacy default stream", hint="capture a compute or transfer stream"
            )
        self.stream = stream
        self._h = stream_handle
        self._graph = 0
        self._exec = 0
        self.replays = 0
        self._finalizer: Any = None

    def __enter__(self) -> "CapturedGraph":
        driver.stream_begin_capture(self._h)
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        rc, self._graph = driver.stream_end_capture(self._h)
        if exc_type is not None:
            if self._graph:
                _destroy(0, self._graph)
                self._graph = 0
            return  # the original error propagates
        driver.check(rc, "cuStreamEndCapture", hint="see docs/streams.md, graph capture")
        self._exec = driver.graph_instantiate(self._graph)
        self._finalizer = weakref.finalize(self, _destroy, self._exec, self._graph)

    def replay(self, stream: Any = None) -> None:
        """Launch the captured work again (on its stream, or on ``stream``)."""
        if not self._exec:
            raise ConfigurationError("nothing captured yet", hint="use the graph as a `with` block first")
        h = driver.stream_handle(stream) if stream is not None else self._h
        driver.graph_launch(self._exec, h)
        self.replays += 1

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()


def _destroy(exec_handle: int, graph: int) -> None:
    try:
        driver.graph_destroy(exec_handle, graph)
    except Exception:  # noqa: BLE001 - the context may be gone at exit
        pass
