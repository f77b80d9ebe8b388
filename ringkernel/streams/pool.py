"""``StreamPool``: pick the compute stream with the least outstanding GPU work."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

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
    """

    def __init__(self, manager: StreamManager) -> None:
        self.manager = manager
        self._ids = [s for s in manager.stream_ids if s.kind is StreamKind.COMPUTE]
        self._pending: dict[StreamId, list[Event]] = {s: [] for s in self._ids}
        self._submitted: dict[StreamId, int] = {s: 0 for s in self._ids}
        self._workloads: dict[int, StreamId] = {}
        self._lock = threading.Lock()

    def assign_workload(self, workload_id: int, stream_id: StreamId) -> None:
        """Pin ``workload_id`` to ``stream_id`` (e.g. to keep one algorithm's launches ordered)."""
        self.manager.stream(stream_id)  # validates
        with self._lock:
            self._workloads[workload_id] = stream_id

    def stream_for(self, workload_id: int) -> StreamId:
        """The workload's stream: its assignment, or the least utilised stream (then assigned)."""
        with self._lock:
            sid = self._workloads.get(workload_id)
        if sid is None:
            sid = self.least_utilized_stream()
            self.assign_workload(workload_id, sid)
        return sid

    def track(self, stream_id: StreamId) -> Event:
        """Record that a batch of work was just enqueued on ``stream_id``."""
        ev = Event(self.manager.simulated)
        ev.record(self.manager.stream(stream_id))
        with self._lock:
            self._pending.setdefault(stream_id, []).append(ev)
            self._submitted[stream_id] = self._submitted.get(stream_id, 0) + 1
        return ev

    def _outstanding(self) -> dict[StreamId, int]:
        with self._lock:
            for sid, evs in self._pending.items():
                self._pending[sid] = [e for e in evs if not e.query()]
            return {sid: len(evs) for sid, evs in self._pending.items()}

    def least_utilized_stream(self) -> StreamId:
        """The compute stream with the fewest unfinished batches (ties: fewest submitted)."""
        out = self._outstanding()
        return min(self._ids, key=lambda s: (out.get(s, 0), self._submitted.get(s, 0), s.index))

    def utilization_stats(self) -> StreamPoolStats:
        out = self._outstanding()
        with self._lock:
            return StreamPoolStats(dict(self._submitted), out, dict(self._workloads))
