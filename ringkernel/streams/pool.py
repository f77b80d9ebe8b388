"""``StreamPool``: pick the compute stream with the least outstanding GPU work."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import NoReturn

from ..errors import ResourceClosedError
from .manager import Event, StreamId, StreamKind, StreamManager

__all__ = ["StreamPool", "StreamPoolStats"]


@dataclass(frozen=True)
class StreamPoolStats:
    """Per compute stream: batches submitted and still running; workload assignments."""

    submitted: dict[StreamId, int]
    outstanding: dict[StreamId, int]
    workloads: dict[int, StreamId] = field(default_factory=dict)


class StreamPool:
    """Load balancing over a :class:`StreamManager`'s compute streams.

    Outstanding work is judged by events: call :meth:`track` after enqueuing a batch of work
    on a stream; an event recorded then is "outstanding" until the GPU passes it.

    The pool does not own the manager: closing the pool leaves the manager open, and closing
    the manager makes the pool refuse every method too (``ResourceClosedError`` naming
    ``StreamManager``). The pool's own resources are the events it tracks; ``close()`` (or a
    ``with`` block, or garbage collection) drops them. Events that :meth:`track` returned
    stay usable by their holder, like any :class:`Event`.
    """

    def __init__(self, manager: StreamManager) -> None:
        if manager.closed:
            raise ResourceClosedError("StreamManager", operation="StreamPool(manager)")
        self.manager = manager
        self._closed = False
        self._ids = [s for s in manager.stream_ids if s.kind is StreamKind.COMPUTE]
        self._pending: dict[StreamId, list[Event]] = {s: [] for s in self._ids}
        self._submitted: dict[StreamId, int] = {s: 0 for s in self._ids}
        self._workloads: dict[int, StreamId] = {}
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _drop_events, self._pending)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`, or once its manager is closed."""
        return self._closed or self.manager.closed

    def _refuse(self, operation: str) -> NoReturn:
        raise ResourceClosedError("StreamPool" if self._closed else "StreamManager", operation=operation)

    def assign_workload(self, workload_id: int, stream_id: StreamId) -> None:
        """Pin ``workload_id`` to ``stream_id`` (e.g. to keep one algorithm's launches ordered)."""
        if self._closed or self.manager._closed:
            self._refuse("assign_workload")
        self.manager.stream(stream_id)  # validates
        with self._lock:
            self._workloads[workload_id] = stream_id

    def stream_for(self, workload_id: int) -> StreamId:
        """The workload's stream: its assignment, or the least utilised stream (then assigned)."""
        if self._closed or self.manager._closed:
            self._refuse("stream_for")
        with self._lock:
            sid = self._workloads.get(workload_id)
        if sid is None:
            choice = self.least_utilized_stream()
            with self._lock:  # the first caller's choice is the workload's: later callers get it too
                # (two threads asking at once each picked and assigned a stream: one workload's
                # batches on two streams, unordered; an adversarial trial)
                sid = self._workloads.setdefault(workload_id, choice)
        return sid

    def track(self, stream_id: StreamId) -> Event:
        """Record that a batch of work was just enqueued on ``stream_id``."""
        if self._closed or self.manager._closed:
            self._refuse("track")
        ev = Event(self.manager.simulated)
        ev.record(self.manager.stream(stream_id))
        with self._lock:
            self._pending.setdefault(stream_id, []).append(ev)
            self._submitted[stream_id] = self._submitted.get(stream_id, 0) + 1
        return ev

    def _outstanding(self) -> dict[StreamId, int]:
        with self._lock:
            for sid, evs in self._pending.items():
                # an event its holder closed counts as done: it cannot be asked any more
                self._pending[sid] = [e for e in evs if not e.closed and not e.query()]
            return {sid: len(evs) for sid, evs in self._pending.items()}

    def least_utilized_stream(self) -> StreamId:
        """The compute stream with the fewest unfinished batches (ties: fewest submitted)."""
        if self._closed or self.manager._closed:
            self._refuse("least_utilized_stream")
        out = self._outstanding()
        return min(self._ids, key=lambda s: (out.get(s, 0), self._submitted.get(s, 0), s.index))

    def utilization_stats(self) -> StreamPoolStats:
        if self._closed or self.manager._closed:
            self._refuse("utilization_stats")
        out = self._outstanding()
        with self._lock:
            return StreamPoolStats(dict(self._submitted), out, dict(self._workloads))

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop tracking (idempotent); the manager stays open."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> "StreamPool":
        if self._closed or self.manager._closed:
            self._refuse("with")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_events(pending: dict[StreamId, list[Event]]) -> None:
    # The pool's references only: an Event is released when its last holder lets go of it.
    pending.clear()
