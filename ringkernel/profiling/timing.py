"""Where a profiled kernel's GPU start and end come from: CUDA events, CUPTI, or the host clock (simulator).

The launch seam (:mod:`ringkernel.kernel.hooks`) reports a launch right *after* it was
queued and has no "before" notification, so a launch cannot be bracketed by two events
of its own. :class:`EventTimer` records **one event after each launch**, on the launch's
stream, and reads spans from consecutive events of a stream:

* ``end`` of launch *i* is its own event;
* ``start`` is the later of the previous event on the same stream (the work queued before
  it finished there) and the host time the launch was reported, mapped onto the GPU clock
  (an idle stream starts the kernel when it arrives).

On a busy stream (the usual case when the GPU is the bottleneck) the start is exact up to
the launch latency between kernels (about 1 us). On an idle stream, and for the first
launch seen on a stream, the start is estimated from the host clock (``gpu_start_estimated``);
its error is the host/GPU clock alignment (``clock_sync_uncertainty_us`` in the trace
metadata, half the round trip of a calibration event) plus the launch's own queueing
time. Work queued on the stream between two launches by other means (a copy, a numba
launch outside ``@gpu_kernel``) is counted into the later launch's span.

Events are timed against the previous event of the same stream (``cuEventElapsedTime`` is a
32-bit float of milliseconds: against one old reference it would lose microseconds after
minutes), so durations stay precise in long sessions; each stream's first event is placed
against the calibration event. Launches queued while their stream captures a CUDA graph get
no event (that would add a node to the user's graph) and no GPU times.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from enum import Enum
from typing import Any, Callable, Protocol

from .. import driver
from ..errors import ConfigurationError

__all__ = ["GpuTiming", "Span", "Timer", "HostTimer", "EventTimer", "make_timer"]

log = logging.getLogger(__name__)


class GpuTiming(Enum):
    """How a profiler times kernels on a GPU (the simulator always uses the host clock)."""

    #: CUPTI activity records when ``cupti-python`` is installed and usable, else CUDA events.
    AUTO = "auto"
    #: CUPTI activity records; a ConfigurationError when CUPTI cannot be used.
    CUPTI = "cupti"
    #: One CUDA event after each launch (see the module docstring).
    EVENTS = "events"


class LaunchCapture(Enum):
    """How a profiler learns of launches.

    ``HOOK`` (the default): ringkernel's launch seam reports each ``@gpu_kernel`` launch to the
    profiler on the launching thread: exact parent range per thread and asyncio task, element
    counts (bytes per element in the summary), auto or explicit configuration; a few
    microseconds of Python per launch. ``CUPTI``: nothing runs per launch in Python; launches
    are read from CUPTI's driver-call and kernel records when the profiler resolves (exit,
    ``events()``): every kernel of the process (CuPy's, numba's own too), grid, block, stream,
    the launching call's thread and time; the parent range is the innermost range open on that
    thread at the call (asyncio tasks sharing a thread are not told apart), no element counts.
    Needs ``cupti-python`` and a GPU; refuses ``launch_filter``.
    """

    HOOK = "hook"
    CUPTI = "cupti"


#: A launch's GPU times: (start, end, start estimated, note); ``None`` times when unknown.
Span = tuple["int | None", "int | None", bool, "str | None"]


class Timer(Protocol):
    """What the profiler needs from a GPU timer. ``launched`` runs on every captured launch;
    ``times`` maps a launch's id to its :data:`Span` once known."""

    source: str
    times: dict[int, Span]

    def launched(self, launch_id: int, host_ns: int, host_gap_ns: int | None, stream_key: int) -> None: ...

    def before_copy(self, stream_key: int, host_ns: int) -> None: ...

    def copied(self, launch_id: int, start_ns: int, end_ns: int, stream_key: int) -> None: ...

    def resolve(self, block: bool) -> None: ...

    def metadata(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class HostTimer:
    """The simulator: kernels run inside the launch call, so a span is the host time from the
    later of the stream's previous span and the launching thread's previous recorded event
    (``host_gap_ns`` before the report) to the report. An upper bound: it includes the
    Python work between the two."""

    source = "host (simulator)"

    def __init__(self) -> None:
        self.times: dict[int, Span] = {}
        self._prev: dict[int, int] = {}
        self._lock = threading.Lock()

    def launched(self, launch_id: int, host_ns: int, host_gap_ns: int | None, stream_key: int) -> None:
        start = host_ns - (host_gap_ns or 0)
        with self._lock:
            start = max(start, self._prev.get(stream_key, start))
            self._prev[stream_key] = host_ns
        self.times[launch_id] = (min(start, host_ns), host_ns, False, None)

    def before_copy(self, stream_key: int, host_ns: int) -> None:
        pass

    def copied(self, launch_id: int, start_ns: int, end_ns: int, stream_key: int) -> None:
        self.launched(launch_id, end_ns, end_ns - start_ns, stream_key)  # the simulator copies inside the call

    def resolve(self, block: bool) -> None:
        pass

    def metadata(self) -> dict[str, Any]:
        return {"timing_source": self.source,
                "timing_note": "numba's simulator runs kernels on the host inside the launch call: spans are "
                               "host-clock upper bounds, not GPU times"}  # fmt: skip

    def close(self) -> None:
        pass


class _PyStamps:
    """The per-launch events of :class:`EventTimer` in Python: ``_native.c``'s ``EventStamps``
    where the compiled module is not built (the same interface and results; tests compare them).
    A stamp is (launch id, its report's host time, its event), queued per stream in GPU order."""

    def __init__(self, new_event: Callable[[], int]) -> None:
        self._new_event = new_event
        self._free: list[int] = []
        self._queues: dict[int, deque[tuple[int, int, int]]] = {}
        self._prev: dict[int, tuple[int, int]] = {}  # stream -> (its last finished event, that event's time)
        self._record = driver.event_recorder()
        self._capturing = driver.capture_checker()
        # (the record is a ctypes call: it lets other threads in; reentrant: a finalizer run by a
        # collection inside poll() may launch, and record, on this thread)
        self._lock = threading.RLock()
        self._ref, self._ref_ns = 0, 0
        self.queued = 0
        self.next_resolve = 512

    @property
    def pooled(self) -> int:
        return len(self._free)

    def event(self) -> int:
        try:
            return self._free.pop()
        except IndexError:
            return self._new_event()

    def give(self, ev: int) -> None:
        self._free.append(ev)

    def set_reference(self, ev: int, ns: int) -> None:
        self._ref, self._ref_ns = ev, ns

    def record(self, launch_id: int, host_ns: int, stream: int) -> int:
        # the legacy default stream (0) can never capture (CUDA refuses to begin a capture on it)
        if stream and self._capturing(stream):
            return 1
        with self._lock:  # record and enqueue together: a stream's queue is in GPU order
            ev = self.event()
            try:
                self._record(ev, stream)
            except BaseException:
                self._free.append(ev)
                raise
            q = self._queues.get(stream)
            if q is None:
                q = self._queues[stream] = deque()
            q.append((launch_id, host_ns, ev))
            self.queued += 1
        return 2 if self.queued >= self.next_resolve else 0

    def last(self) -> dict[int, int]:
        with self._lock:
            return {k: q[-1][2] for k, q in self._queues.items() if q}

    def poll(self, failed: dict[int, str] | None = None) -> list[tuple[int, Any, Any, Any]]:
        out: list[tuple[int, Any, Any, Any]] = []
        with self._lock:
            for key, q in list(self._queues.items()):  # (a launch meanwhile may add a stream)
                why = failed.get(key) if failed else None
                while q:
                    launch_id, host_ns, ev = q[0]
                    if why is not None:
                        out.append((launch_id, None, None, why))
                        self._free.append(ev)
                    else:
                        prev = self._prev.get(key)
                        base_ev, base_ns = prev if prev is not None else (self._ref, self._ref_ns)
                        try:
                            ms = driver.event_elapsed_ms(base_ev, ev)
                        except Exception as exc:  # noqa: BLE001 - the rest of this stream is given up with the error
                            why = str(exc)
                            continue
                        if ms is None:
                            break  # not finished yet: later ones on this stream are not either
                        end = base_ns + round(ms * 1e6)
                        start = max(host_ns, prev[1]) if prev is not None else host_ns
                        out.append((launch_id, min(start, end), end, prev is None or host_ns > prev[1]))
                        if prev is not None:
                            self._free.append(prev[0])
                        self._prev[key] = (ev, end)
                    q.popleft()
                    self.queued -= 1
        return out


def _stamps(new_event: Callable[[], int]) -> Any:
    """The compiled ``EventStamps`` where the module is loaded (and ``native.HOOKS``), else :class:`_PyStamps`."""
    from .. import native

    mod = native.loaded() if native.HOOKS else None
    if mod is None:
        return _PyStamps(new_event)
    rec, cap, ela, keep = driver.event_functions()
    return mod.EventStamps(rec, cap, ela, keep, new_event, driver.check)


class EventTimer:
    """One CUDA event after each launch on its stream; spans from consecutive events (module docstring).

    The events are recorded and read by ``_stamps`` (``_native.c``'s ``EventStamps``, or
    :class:`_PyStamps`); a profiler's compiled launch hook records through it directly."""

    source = "cuda events (one event after each launch)"

    def __init__(self) -> None:
        from numba import cuda

        cuda.current_context()  # events and the calibration stream live in numba's context
        self._thread = threading.current_thread()
        self.times: dict[int, Span] = {}
        self._lock = threading.Lock()
        self._owned: list[int] = []  # every event made: destroyed at close, with the calibration stream
        self._stream = driver.stream_create(0, non_blocking=True)
        self._finalizer = weakref.finalize(self, _destroy, self._owned, self._stream)
        self._untimed = 0
        self._stamps = _stamps(self._new_event)
        self._ref, self._ref_ns, self._uncertainty_ns = self._calibrate()
        self._stamps.set_reference(self._ref, self._ref_ns)

    def _new_event(self) -> int:
        ev = driver.event_create()
        self._owned.append(ev)
        return ev

    def _calibrate(self) -> tuple[int, int, int]:
        """An event on the private stream whose host time is known to half a round trip."""
        best: tuple[int, int, int] | None = None
        stamps = self._stamps
        for _ in range(5):
            ev = stamps.event()
            t0 = time.perf_counter_ns()
            driver.event_record(ev, self._stream)
            driver.event_synchronize(ev)
            t1 = time.perf_counter_ns()
            if best is None or t1 - t0 < best[2] - best[1]:
                if best is not None:
                    stamps.give(best[0])
                best = (ev, t0, t1)
            else:
                stamps.give(ev)
        assert best is not None
        ev, t0, t1 = best
        return ev, (t0 + t1) // 2, (t1 - t0) // 2

    def _captured(self, launch_id: int) -> None:
        """A launch queued while its stream captured a CUDA graph: no event (it would be a node
        of the user's graph), no GPU times."""
        self.times[launch_id] = (None, None, False, "launched during a CUDA graph capture: not timed")
        self._untimed += 1

    def launched(self, launch_id: int, host_ns: int, host_gap_ns: int | None, stream_key: int) -> None:
        done = self._stamps.record(launch_id, host_ns, stream_key)
        if done == 1:
            self._captured(launch_id)
        elif done == 2:
            self.resolve(block=False)  # recycle the events of finished work

    def before_copy(self, stream_key: int, host_ns: int) -> None:
        """An event right before a copy on its stream (launch id -1, never read): the copy's
        span then starts at this event, not at the stream's previous one. In a capture the
        copy itself goes untimed (:meth:`copied`)."""
        if self._stamps.record(-1, host_ns, stream_key) == 2:
            self.resolve(block=False)

    def copied(self, launch_id: int, start_ns: int, end_ns: int, stream_key: int) -> None:
        """The event after a copy: its span runs from the event of :meth:`before_copy`."""
        self.launched(launch_id, start_ns, None, stream_key)

    def resolve(self, block: bool) -> None:
        """Give GPU times to every launch whose event completed (all of them when ``block``)."""
        stamps = self._stamps
        if stamps.queued and threading.current_thread() is not self._thread:
            from numba import cuda

            cuda.current_context()  # driver calls from another thread need numba's context current there
        if not block:  # (a poll due at a launch: skipped while a resolve runs, e.g. one whose
            # collection ran a finalizer that launched on this very thread: it would wait for itself)
            if not self._lock.acquire(blocking=False):
                return
            try:
                self._poll(None)
            finally:
                self._lock.release()
            return
        with self._lock:
            failed: dict[int, str] | None = None
            if block:  # a stream's newest event: everything queued before it on the stream finished too
                for key, ev in stamps.last().items():
                    try:
                        driver.event_synchronize(ev)
                    except Exception as exc:  # noqa: BLE001 - a faulted kernel: report, keep the rest
                        failed = failed or {}
                        failed[key] = f"the GPU work before its event failed: {exc}"
            self._poll(failed)

    def _poll(self, failed: dict[int, str] | None) -> None:
        """(the lock is held)"""
        stamps = self._stamps
        for launch_id, start, end, estimated in stamps.poll(failed):
            if start is None:
                self.times[launch_id] = (None, None, False, estimated)
                self._untimed += 1
            else:
                self.times[launch_id] = (start, end, estimated, None)
        stamps.next_resolve = stamps.queued + 512  # a GPU far behind is not polled on every launch

    def metadata(self) -> dict[str, Any]:
        return {"timing_source": self.source,
                "clock_sync_uncertainty_us": round(self._uncertainty_ns / 1e3, 3),
                "untimed_launches": self._untimed}  # fmt: skip

    def close(self) -> None:
        self._finalizer()


def _destroy(owned: list[int], stream: int) -> None:
    for ev in owned:
        try:
            driver.event_destroy(ev)
        except Exception:  # noqa: BLE001 - the context may be gone at exit
            pass
    owned.clear()
    try:
        driver.stream_destroy(stream)
    except Exception:  # noqa: BLE001
        pass


def make_cupti_collector(limit: int = 1_000_000) -> Any:
    """A CUPTI timer that keeps every kernel with its launching call (``LaunchCapture.CUPTI``),
    up to ``limit`` launches between two resolves (the rest counted as dropped)."""
    from . import _cupti

    try:
        return _cupti.CuptiTimer(copy_timer=EventTimer, collect=True, limit=limit)
    except Exception as exc:  # noqa: BLE001 - not installed, or CUPTI busy with another tool
        raise ConfigurationError(
            f"LaunchCapture.CUPTI cannot use CUPTI: {exc}",
            hint="pip install cupti-python (matching your CUDA), close other CUPTI users (another profiler, "
            "Nsight), or use LaunchCapture.HOOK (the default)",
        ) from exc


def make_timer(choice: GpuTiming, simulated: bool) -> Timer:
    """The timer for this backend: the host clock on the simulator; else CUPTI or events per ``choice``."""
    if not isinstance(choice, GpuTiming):
        raise ConfigurationError(f"gpu_timing must be a GpuTiming, got {choice!r}", hint="e.g. GpuTiming.EVENTS")
    if simulated:
        return HostTimer()
    if choice is not GpuTiming.EVENTS:
        from . import _cupti

        try:
            return _cupti.CuptiTimer(copy_timer=EventTimer)
        except Exception as exc:  # noqa: BLE001 - not installed, or CUPTI busy with another tool
            if choice is GpuTiming.CUPTI:
                raise ConfigurationError(
                    f"CUPTI cannot be used: {exc}",
                    hint="pip install cupti-python (matching your CUDA), close other CUPTI users "
                    "(another profiler, Nsight), or use GpuTiming.EVENTS",
                ) from exc
            log.debug("CUPTI unavailable (%s): timing kernels with CUDA events", exc)
    return EventTimer()
