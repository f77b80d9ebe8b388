"""CUDA graph capture of launches on a managed stream, replayed with one driver call.

ringkernel's own launches (``kernel(..., stream=s)``, ``kernel[grid, block, s](...)``) go
straight to ``cuLaunchKernel`` with the stream's raw handle, so the driver's stream capture
records them. Launch every kernel once before capturing: a first launch loads the module,
which does not belong in a graph. numba's own asynchronous copies on the stream are
captured too; anything that synchronises (a host copy from pageable memory, a numba
dispatcher launch that compiles) breaks the capture, and the driver's error says so.

Lifetime: the graph owns its ``CUgraph`` and ``CUgraphExec`` (destroyed by ``close()`` or a
``weakref.finalize``) and keeps its manager referenced, so dropping the manager does not
destroy the capture stream under it. An explicit ``manager.close()`` does: the graph keeps
its executable and still replays on another stream (``replay(stream)``), but a replay on
its own stream is refused with ``ResourceClosedError``, as is everything after the graph's
own ``close()``. The graph's ``with`` block is the capture, not its lifetime: use
``close()`` or ``contextlib.closing(graph)`` to release it.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, NoReturn

from .. import driver
from ..errors import ConfigurationError, ResourceClosedError

if TYPE_CHECKING:
    from .manager import StreamManager

__all__ = ["CapturedGraph"]


class CapturedGraph:
    """``with manager.capture(StreamId.compute(0)) as g: ...launches...`` then ``g.replay()``."""

    def __init__(self, stream: Any, stream_handle: int, *, manager: "StreamManager | None" = None) -> None:
        if stream_handle == 0:
            raise ConfigurationError(
                "cannot capture the legacy default stream", hint="capture a compute or transfer stream"
            )
        self.stream = stream
        self._h = stream_handle
        self._manager = manager  # a strong reference: the capture stream lives as long as the graph
        self._closed = False
        self._capturing = False
        self._aborted_by: str | None = None  # who ended a capture before its block did
        # [CUgraphExec, CUgraph]: what the finalizer destroys; filled in when the capture ends.
        self._handles = [0, 0]
        self.replays = 0
        self._finalizer = weakref.finalize(self, _destroy, self._handles)

    @property
    def closed(self) -> bool:
        return self._closed

    def _refuse(self, operation: str) -> NoReturn:
        raise ResourceClosedError("CapturedGraph", operation=operation)

    def __enter__(self) -> "CapturedGraph":
        if self._closed:
            self._refuse("capture")
        m = self._manager
        if m is not None and m.closed:
            raise ResourceClosedError("StreamManager", operation="capture")
        if self._capturing or self._aborted_by is not None or any(self._handles):
            raise ConfigurationError(
                "this CapturedGraph has already been captured",
                hint="start a new capture with manager.capture(stream_id)",
            )
        driver.stream_begin_capture(self._h)
        self._capturing = True
        if m is not None:
            m._capturing.add(self)
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        m = self._manager
        if m is not None:
            m._capturing.discard(self)
        if not self._capturing:  # closed inside the block: the capture was ended and discarded
            if exc_type is None:
                raise ResourceClosedError(
                    self._aborted_by or "CapturedGraph",
                    operation="capture",
                    hint="it was closed inside the capture block, which discarded the capture; "
                    "capture again on an open manager",
                )
            return  # the original error propagates
        self._capturing = False
        rc, graph = driver.stream_end_capture(self._h)
        self._handles[1] = graph
        if exc_type is not None:
            if graph:
                _destroy(self._handles)
            return  # the original error propagates
        driver.check(rc, "cuStreamEndCapture", hint="see docs/streams.md, graph capture")
        self._handles[0] = driver.graph_instantiate(graph)

    def _abort_capture(self, by: str) -> None:
        """End a capture whose block is still open (its graph or manager is closing); discard it."""
        if not self._capturing:
            return
        self._capturing = False
        self._aborted_by = by
        try:
            _, graph = driver.stream_end_capture(self._h)
        except Exception:  # noqa: BLE001 - cleanup on the way to close(); nothing to keep
            return
        self._handles[1] = graph
        _destroy(self._handles)

    def replay(self, stream: Any = None) -> None:
        """Launch the captured work again (on its stream, or on ``stream``)."""
        if self._closed:
            self._refuse("replay")
        exec_handle = self._handles[0]
        if not exec_handle:
            raise ConfigurationError("nothing captured yet", hint="use the graph as a `with` block first")
        if stream is None:
            m = self._manager
            if m is not None and m._closed:  # its capture stream was destroyed with the manager
                raise ResourceClosedError(
                    "StreamManager",
                    operation="CapturedGraph.replay() on its capture stream",
                    hint="the graph outlives its manager: replay it on an open stream, graph.replay(stream)",
                )
            h = self._h
        else:
            h = driver.stream_handle(stream)
        driver.graph_launch(exec_handle, h)
        self.replays += 1

    def close(self) -> None:
        """Destroy the graph and its executable (idempotent); a capture in progress is discarded."""
        if self._closed:
            return
        self._closed = True
        self._abort_capture("CapturedGraph")
        self._finalizer()


def _destroy(handles: list[int]) -> None:
    exec_handle, graph = handles
    handles[:] = [0, 0]
    try:
        driver.graph_destroy(exec_handle, graph)
    except Exception:  # noqa: BLE001 - the context may be gone at exit
        pass
