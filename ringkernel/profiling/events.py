"""``ProfileEvent``: one range, mark, kernel launch or counter sample a profiler recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping

from .categories import ProfileCategory

__all__ = ["EventKind", "ProfileEvent"]


class EventKind(Enum):
    RANGE = "range"
    MARK = "mark"
    KERNEL = "kernel"
    COUNTER = "counter"
    MEMORY = "memory"  # a pool allocation or free (a tracked pool, while the profiler is active)
    TRANSFER = "transfer"  # a copy through numba's or ringkernel's arrays, GPU-timed on its stream


@dataclass(frozen=True)
class ProfileEvent:
    """One recorded event. Times are host ``time.perf_counter_ns()`` values; GPU times of a
    kernel are mapped onto the same clock (see docs/profiling.md, "How GPU times are obtained").

    Attributes
    ----------
    kind, name, category:
        What it is.
    start_ns, end_ns:
        Host times: a range's begin and end; a mark's or counter's instant (``end_ns ==
        start_ns``); for a kernel, when the profiler was told of the launch (right after it
        was queued) and when it had recorded it.
    track, track_id:
        The host track: the thread (and asyncio task) that made the call.
    id, parent_id:
        This event's id, and the range it happened in (``None``: none was open).
    args:
        Extra facts: bytes, direction, grid, block, counter values; for a MEMORY event its
        ``op`` (``"allocate"``, ``"free"``), ``pool`` and ``ptr``.
    stream, stream_id:
        Kernels: the stream's label and the profiler's number for it (the GPU track).
    gpu_start_ns, gpu_end_ns:
        Kernels: when it ran on the GPU (``None``: not known, e.g. launched inside a graph
        capture, or the work before its event failed).
    gpu_start_estimated:
        Kernels: the start is an estimate (the stream was idle before it, or it was the
        first launch seen on its stream), not the end of the work queued before it.
    host_ns:
        Kernels: host time from the previous event the profiler saw on the launching
        thread to this launch's notification: in a loop of launches, one launch's host cost.
    nbytes:
        Bytes moved, when known (annotations); used for bandwidth.
    """

    kind: EventKind
    name: str
    category: ProfileCategory
    start_ns: int
    end_ns: int
    track: str = "MainThread"
    track_id: int = 1
    id: int = 0
    parent_id: int | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    stream: str | None = None
    stream_id: int | None = None
    device: int = 0
    gpu_start_ns: int | None = None
    gpu_end_ns: int | None = None
    gpu_start_estimated: bool = False
    host_ns: int | None = None
    nbytes: int | None = None

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def gpu_duration_ns(self) -> int | None:
        if self.gpu_start_ns is None or self.gpu_end_ns is None:
            return None
        return self.gpu_end_ns - self.gpu_start_ns
