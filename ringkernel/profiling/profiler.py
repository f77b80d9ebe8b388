"""``GpuProfiler``: NVTX ranges and marks, automatic capture of ``@gpu_kernel`` launches, events, summaries, traces.

::

    profiler = GpuProfiler("training")
    with profiler:                                   # capture every @gpu_kernel launch, GPU-timed
        with profiler.range("step", ProfileCategory.ALGORITHM):
            step(...)
    print(profiler.summary())
    profiler.export_chrome_tracing("trace.json")     # open in https://ui.perfetto.dev

Ranges nest per thread and per asyncio task (a ``ContextVar`` holds each one's stack of
open ranges); each thread, and each task that opens ranges, is its own track in the trace.
With no profiler entered, nothing is registered on the launch seam and launches pay
nothing; entering registers one launch hook, leaving removes it. Pools given to
:meth:`GpuProfiler.track_pool` get recording wrappers as *instance* attributes while the
profiler is active (their class and their hot path stay untouched otherwise).

The methods live by concern: this module holds the session, its lifetime and the capture of
launches, copies and synchronisations; ranges, marks and annotations are in ``ranges.py``,
pool tracking in ``pool_tracking.py``, events, summaries and traces in ``results.py``.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import sys
import threading
import time
import weakref
from bisect import bisect_right
from contextvars import ContextVar
from typing import Any, Callable, NoReturn

from ..errors import ConfigurationError, ResourceClosedError
from ..kernel.hooks import LaunchEvent, add_launch_hook, remove_launch_hook
from . import capture
from .categories import ProfileCategory
from .events import EventKind, ProfileEvent
from .pool_tracking import PoolTrackingMixin
from .ranges import Open, RangeHandle, RangesMixin, _task, check_name
from .results import ResultsMixin
from .timing import GpuTiming, LaunchCapture, Span, Timer, make_cupti_collector, make_timer

__all__ = ["GpuProfiler", "RangeHandle"]

log = logging.getLogger(__name__)


_get_ident = threading.get_ident
_now = time.perf_counter_ns


def _retire(ref: Any, key: Any, *_: Any) -> None:
    prof = ref()
    if prof is not None:
        prof._retire(key)


class _ThreadEnd:
    """Held in a profiler's thread-local storage: collected when its thread ends."""

    __slots__ = ("ref", "ident")

    def __init__(self, ref: Any, ident: int) -> None:
        self.ref, self.ident = ref, ident

    def __del__(self) -> None:
        try:
            _retire(self.ref, self.ident)
        except Exception:  # noqa: BLE001 - at interpreter exit, anything may be gone
            pass


class GpuProfiler(RangesMixin, PoolTrackingMixin, ResultsMixin):
    """A profiling session: NVTX ranges and marks, captured launches, summaries and traces.

    Parameters
    ----------
    session_name:
        Names the session in the trace and the summary.
    enabled:
        When False every method is a cheap no-op (``begin_range`` returns a handle whose end
        does nothing; ``with profiler:`` captures nothing). Settable later.
    gpu_timing:
        How kernels are timed on a GPU (:class:`~ringkernel.profiling.GpuTiming`; the
        simulator always uses the host clock).
    max_events:
        Events kept; later ones are counted as dropped (``summary().dropped_events``).
    launch_filter:
        Called on the launching thread for each launch while active: only launches for which
        it returns True are captured (``GpuContext`` uses it: the launches made while the
        context is current). ``None``: every launch.
    launches:
        How launches are captured (:class:`~ringkernel.profiling.LaunchCapture`): ``HOOK``
        (the default: reported by the launch seam, exact, a few microseconds a launch) or
        ``CUPTI`` (read from CUPTI's records afterwards: no per-launch Python, every kernel
        of the process; needs ``cupti-python`` and a GPU).
    """

    def __init__(self, session_name: str = "ringkernel", enabled: bool = True, *,
                 gpu_timing: GpuTiming = GpuTiming.AUTO, max_events: int = 1_000_000,
                 launch_filter: Callable[[], bool] | None = None,
                 launches: LaunchCapture = LaunchCapture.HOOK) -> None:  # fmt: skip
        self.session_name = check_name(session_name, "session_name")
        if not isinstance(gpu_timing, GpuTiming):
            raise ConfigurationError(f"gpu_timing must be a GpuTiming, got {gpu_timing!r}", hint="e.g. GpuTiming.EVENTS")
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
            raise ConfigurationError(f"max_events must be a positive integer, got {max_events!r}")
        if not isinstance(enabled, bool) and enabled not in (0, 1):  # (NumPy's bools, 0 and 1 too)
            raise ConfigurationError(f"enabled must be True or False, got {enabled!r}")
        self._enabled = bool(enabled)
        self._disabled_since: int | None = None if enabled else 0  # (LaunchCapture.CUPTI: launches then are dropped)
        self._disabled_spans: list[tuple[int, int]] = []  # (start, end), in time order
        self._disabled_starts: list[int] = []
        self.gpu_timing = gpu_timing
        self.max_events = max_events
        self._closed = False
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        #: Each track's open ranges, innermost last. A thread's or asyncio task's own (a ContextVar
        #: was inherited by child tasks and asyncio.to_thread, so a child could end its parent's
        #: range and parent its launches under a range its parent had ended: an adversarial trial).
        self._stacks: dict[Any, tuple[Open, ...]] = {}
        #: Per thread: a sentinel whose collection, when the thread ends, retires its track (a new
        #: thread that gets the same thread id must not inherit its track, name and last time)
        self._tls = threading.local()
        #: The ranges open where this context was made (a child task or asyncio.to_thread copies
        #: its creator's): the parent of its first ranges and launches, while those are open. Only
        #: read: ending a range goes by the track's own stack.
        self._ctx: ContextVar[tuple[Open, ...]] = ContextVar(f"ringkernel_profiler_{id(self)}", default=())
        self._events: list[ProfileEvent] = []
        #: Captured launches: (event, id, stream key, stream id, host gap, track id, parent id, hook end).
        self._launches: list[tuple[LaunchEvent, int, int, int, int | None, int, int | None, int]] = []
        #: Captured copies: (direction, bytes, id, stream key, stream id, track id, parent id, host start, host end).
        self._copies: list[tuple[str, int, int, int, int, int, int | None, int, int]] = []
        self._times: dict[int, Span] = {}  # launch id -> GPU span, from timers already closed
        self._dropped = 0
        self._count = 0  # events kept (ranges, marks, counters and launches)
        self._t0 = time.perf_counter_ns()
        self._wall0 = time.time()
        self._tracks: dict[Any, tuple[int, str]] = {}
        self._thread_names: dict[int, str] = {}  # thread id -> name, for threads that have ended (CUPTI capture)
        self._open_ranges: dict[int, Open] = {}  # id -> a range begun and not yet ended
        self._track_ids = itertools.count(1)
        self._retired = itertools.count(1)
        self._to_retire: collections.deque[Any] = collections.deque()
        self._last: dict[Any, int] = {}  # track -> last time the profiler saw it act
        self._streams: dict[int, tuple[int, str]] = {}  # stream key -> (stream id, label)
        self._stream_cache: dict[int, tuple[Any, int]] = {}  # id(stream object) -> (object, key)
        self._stream_names: dict[int, str] = {}
        self._kernel_bytes: dict[str, tuple[int | None, int | None]] = {}
        self._pools: list[tuple[Any, str]] = []  # (weakref to a pool, its name)
        self._shadowed: list[tuple[Any, dict[str, Any]]] = []  # (weakref to a pool, its wrappers) while active
        if launch_filter is not None and not callable(launch_filter):
            raise ConfigurationError(f"launch_filter must be callable, got {launch_filter!r}")
        if not isinstance(launches, LaunchCapture):
            raise ConfigurationError(f"launches must be a LaunchCapture, got {launches!r}", hint="e.g. LaunchCapture.CUPTI")
        if launches is LaunchCapture.CUPTI and gpu_timing is GpuTiming.EVENTS:
            raise ConfigurationError("LaunchCapture.CUPTI times kernels from CUPTI's records: gpu_timing=GpuTiming.EVENTS "
                                     "cannot apply", hint="leave gpu_timing at AUTO, or use LaunchCapture.HOOK for events")  # fmt: skip
        if launches is LaunchCapture.CUPTI and launch_filter is not None:
            raise ConfigurationError("LaunchCapture.CUPTI cannot filter launches (nothing runs at a launch to ask the filter)",
                                     hint="use LaunchCapture.HOOK with launch_filter, or filter the events afterwards")  # fmt: skip
        self.launches = launches
        self._filter = launch_filter
        self._hook: int | None = None
        #: The compiled launch hook while active (``_native_recorder``), else None.
        self._recorder: Any = None
        self._depth = 0
        self._timer: Timer | None = None
        self._timing_meta: dict[str, Any] = {}
        self._simulated: bool | None = None

    @property
    def enabled(self) -> bool:
        """False: every call is a cheap no-op and nothing is captured (settable at any time)."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if not isinstance(value, bool) and value not in (0, 1):
            raise ConfigurationError(f"enabled must be True or False, got {value!r}")
        value = bool(value)
        with self._lock:
            if value == self._enabled:
                return
            now = time.perf_counter_ns()
            if value:  # the interval in which launches are not captured (read from CUPTI later)
                self._disabled_spans.append((self._disabled_since or 0, now))
                self._disabled_starts.append(self._disabled_since or 0)
                self._disabled_since = None
            else:
                self._disabled_since = now
            self._enabled = value
            if value and self._depth > 0 and self._timer is None and not self._closed:
                self._activate()  # enabled inside `with profiler:` of a profiler made disabled: capture from now

    def _was_disabled(self, t: int) -> bool:
        """The profiler was disabled at host time ``t`` (CUPTI capture: a launch then is not kept)."""
        since = self._disabled_since
        if since is not None and t >= since:
            return True
        i = bisect_right(self._disabled_starts, t) - 1
        return i >= 0 and t < self._disabled_spans[i][1]

    # -- lifetime -------------------------------------------------------------------------
    def _refuse(self, operation: str) -> NoReturn:
        raise ResourceClosedError("GpuProfiler", operation=operation, hint="create a new GpuProfiler")

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def active(self) -> bool:
        """True inside ``with profiler:`` (launches are being captured)."""
        return self._timer is not None

    def __enter__(self) -> "GpuProfiler":
        if self._closed:
            self._refuse("with")
        with self._lock:
            if self._depth == 0 and self._enabled:
                self._activate()  # raises (no device, CUPTI refused) before the depth counts
            self._depth += 1
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        with self._lock:
            self._depth = max(0, self._depth - 1)
            if self._depth == 0:
                try:
                    self._deactivate()
                except Exception:
                    if exc_type is None:
                        raise
                    # The block's own error (say, a kernel fault) matters more than the timing's.
                    log.warning("GpuProfiler %r could not time the launches of a failed block", self.session_name,
                                exc_info=True)  # fmt: skip

    def _activate(self) -> None:
        from ..config import require_backend

        self._simulated = require_backend()
        if self.launches is LaunchCapture.CUPTI:
            if self._simulated:
                raise ConfigurationError("LaunchCapture.CUPTI needs a GPU: the simulator has no CUPTI",
                                         hint="use LaunchCapture.HOOK (the default) on the simulator")  # fmt: skip
            collector = make_cupti_collector(max(self.max_events - self._count, 0))  # no hook: launches come from its records
            collector.skip = self._was_disabled  # launches while disabled: not kept, not counted
            self._timer = collector
            for t in threading.enumerate():  # names of threads that may end before the records are read
                if t.ident is not None:
                    self._thread_names[t.ident] = t.name
            self._timing_meta = self._timer.metadata()
        else:
            self._timer = make_timer(self.gpu_timing, self._simulated)  # the hook comes last: nothing to undo
            self._timing_meta = self._timer.metadata()
            self._recorder = self._native_recorder()
            self._hook = add_launch_hook(self._recorder if self._recorder is not None else self._on_launch)
        self._last[self._track()[0]] = time.perf_counter_ns()  # the first launch's host time starts here
        try:
            capture.register(self)  # copies and synchronisations
            for ref, name in self._pools:
                self._shadow_pool(ref(), name)
            self._sample_pools()
        except BaseException:
            self._deactivate()
            raise

    def _native_recorder(self) -> Any:
        """The launch hook in C (``_native.c``'s ``Recorder``: ``_on_launch``'s usual case without
        a Python frame: 1.6-2.6 us less a launch on the H200), or None: the compiled module cannot be
        built, ``RINGKERNEL_NATIVE=0``, or on the simulator where nothing built it yet (on a GPU
        it is built here if no kernel's first compile did)."""
        from .. import native
        from ..kernel import hooks

        if not native.HOOKS:
            return None
        mod = native.loaded() if self._simulated else native.load()
        if mod is None:
            return None
        hooks.use_native(mod)
        timer = self._timer
        stamps = getattr(timer, "_stamps", None)  # an EventTimer's: its events recorded in C too
        stamps = stamps if isinstance(stamps, mod.EventStamps) else None
        fast = timer if stamps is not None or getattr(type(timer), "launched_appends_pending", False) else None
        return mod.Recorder(self.__dict__, self._on_launch, fast, self._ctx, self._ids, LaunchEvent, stamps)

    def _deactivate(self) -> None:
        if self._timer is None:
            return
        if self._hook is not None:
            remove_launch_hook(self._hook)
            self._hook = None
        try:
            capture.unregister(self)
            self._unshadow_pools()
            self._resolve()  # the GPU finishes the profiled work: every launch gets its times
            self._sample_pools()
        finally:
            self._take_recorded()  # (when resolving failed)
            self._recorder = None
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.close()

    def close(self) -> None:
        """Stop capturing and release the GPU events (idempotent); afterwards every method
        raises :class:`~ringkernel.errors.ResourceClosedError`."""
        with self._lock:
            if self._closed:
                return
            try:
                self._deactivate()
            finally:
                self._depth = 0
                self._closed = True

    # -- tracks and events ----------------------------------------------------------------
    def _track(self) -> tuple[Any, int]:
        """This thread's (and asyncio task's) track: its key (the thread's id, or (thread, task))
        and trace id. On every captured launch: kept to a few dictionary lookups."""
        if self._to_retire:  # (retirements that found the lock busy)
            self._retire_pending()
        task = _task()
        key: Any = _get_ident() if task is None else (_get_ident(), id(task))
        t = self._tracks.get(key)
        if t is None:
            name = threading.current_thread().name
            self._thread_names[_get_ident()] = name
            if task is not None:
                name += f" / {task.get_name()}"
            with self._lock:
                t = self._tracks.setdefault(key, (next(self._track_ids), name))
            # retire the track when its thread or task ends: thread ids and id(task) are reused
            me = weakref.ref(self)
            if task is not None:
                task.add_done_callback(functools.partial(_retire, me, key))
            if getattr(self._tls, "sentinel", None) is None:
                self._tls.sentinel = _ThreadEnd(me, _get_ident())
        return key, t[0]

    def _inherited(self) -> int | None:
        """The parent of a range or event on a track with no range of its own open: the innermost
        range still open where this context was made (a task's creator's), else None."""
        for op in reversed(self._ctx.get()):
            if not op.ended:
                return op.id
        return None

    def _retire(self, key: Any) -> None:
        """A track's thread or task ended: its entries move to a key no live thread or task has
        (the events keep their track id and name), its stack and last time go.

        Called from a thread-local's finaliser or a task's done callback, which may run while
        another thread holds the lock (a review: at interpreter exit, a daemon thread stopped
        inside ``events()`` hung the process): the lock is only tried; when it is busy the key
        waits in ``_to_retire`` for the next track lookup, and at exit nothing is done."""
        if sys.is_finalizing():
            return
        if not self._lock.acquire(blocking=False):
            self._to_retire.append(key)
            return
        try:
            self._retire_locked(key)
        finally:
            self._lock.release()

    def _retire_pending(self) -> None:
        with self._lock:
            while self._to_retire:
                self._retire_locked(self._to_retire.popleft())

    def _retire_locked(self, key: Any) -> None:
        """(the lock is held)"""
        keys = [key] if not isinstance(key, int) else [k for k in self._tracks if k == key or (isinstance(k, tuple) and k[0] == key and len(k) == 2 and isinstance(k[1], int))]
        for k in keys:
            t = self._tracks.pop(k, None)
            if t is not None:
                ident = k if isinstance(k, int) else k[0]
                self._tracks[(ident, ("ended", next(self._retired)))] = t
            self._stacks.pop(k, None)
            self._last.pop(k, None)

    def _add(self, event: ProfileEvent) -> None:
        if self._count >= self.max_events:
            self._dropped += 1
        else:
            self._events.append(event)
            self._count += 1

    # -- stream labels --------------------------------------------------------------------
    def name_stream(self, stream: Any, name: str) -> None:
        """Label a stream's GPU track (a numba stream, a raw handle, or a ``StreamManager`` for all its streams)."""
        if self._closed:
            self._refuse("name_stream")
        if hasattr(stream, "stream_ids") and hasattr(stream, "stream"):
            for sid in stream.stream_ids:
                self.name_stream(stream.stream(sid), f"{name} {sid}" if name else str(sid))
            return
        key = self._stream_key(stream)
        self._stream_names[key] = str(name)
        if key in self._streams:
            self._streams[key] = (self._streams[key][0], str(name))

    # -- automatic capture ----------------------------------------------------------------
    def _stream_key(self, stream: Any) -> int:
        if stream is None:
            return 0
        if isinstance(stream, int) and not isinstance(stream, bool):
            return int(stream or 0)
        cached = self._stream_cache.get(id(stream))
        if cached is not None and cached[0] is stream:
            return cached[1]
        from .. import driver

        try:
            key = driver.stream_handle(stream)
        except TypeError:  # a simulator stream: no handle; known by identity (kept alive here)
            key = -(len(self._stream_cache) + 1)
        self._stream_cache[id(stream)] = (stream, key)
        return key

    def _stream_id(self, key: int) -> int:
        s = self._streams.get(key)
        if s is None:
            label = self._stream_names.get(key) or (
                "default stream" if key == 0 else "per-thread default stream" if key == 2
                else f"stream {-key}" if key < 0 else f"stream 0x{key:x}"
            )  # fmt: skip
            with self._lock:
                s = self._streams.setdefault(key, (len(self._streams) + 1, label))
        return s[0]

    def _on_launch(self, ev: LaunchEvent, _filtered: bool = False) -> None:
        """The launch hook (runs on the launching thread, right after the launch was queued).

        Its cost is added to every launch while the profiler is active: lookups are inlined
        and the slow cases (a new thread, task or stream) leave through helper calls. Where the
        compiled module is loaded, ``_native.c``'s ``Recorder`` does the same for the usual case
        (reading and writing these attributes) and calls this method for the rest: a change
        here must be made there too (tests/test_native_recorder.py compares them).
        """
        timer = self._timer
        if timer is None or not self._enabled:
            return
        if self._filter is not None and not _filtered and not self._filter():
            return  # (_filtered: the compiled hook asked the filter already, and hands the launch over)
        if self._count >= self.max_events:
            self._dropped += 1
            return
        t = ev.timestamp_ns
        if self._to_retire:  # (retirements that found the lock busy)
            self._retire_pending()
        task = _task()
        key: Any = _get_ident() if task is None else (_get_ident(), id(task))
        track = self._tracks.get(key)
        tid = track[0] if track is not None else self._track()[1]
        last = self._last.get(key)
        gap = None if last is None else t - last
        stack = self._stacks.get(key, ())
        stream = ev.stream
        skey = 0 if stream is None else self._stream_key(stream)
        s = self._streams.get(skey)
        rid = next(self._ids)
        timer.launched(rid, t, gap, skey)
        end = _now()
        self._launches.append((ev, rid, skey, s[0] if s is not None else self._stream_id(skey), gap, tid,
                               (stack[-1].id if stack else self._inherited()), end))  # fmt: skip
        self._count += 1
        self._last[key] = end

    def _wanted(self) -> bool:
        if self._timer is None or not self._enabled:
            return False
        if self._filter is not None and not self._filter():
            return False
        if self._count >= self.max_events:
            self._dropped += 1
            return False
        return True

    def _copy_begin(self, stream: Any) -> tuple[int, int] | None:
        """Before a copy (:mod:`.capture`): its stream's key and the host time; on a GPU an
        event goes onto the stream first, so the copy's span starts there."""
        timer = self._timer
        if timer is None or not self._wanted():
            return None
        skey = self._stream_key(stream)
        t0 = _now()
        timer.before_copy(skey, t0)
        return skey, t0

    def _copy_end(self, token: tuple[int, int], direction: str, nbytes: int, stream: Any, t1: int) -> None:
        timer = self._timer
        if timer is None:
            return
        skey, t0 = token
        key, tid = self._track()
        stack = self._stacks.get(key, ())
        rid = next(self._ids)
        timer.copied(rid, t0, t1, skey)
        s = self._streams.get(skey)
        self._copies.append((direction, nbytes, rid, skey, s[0] if s is not None else self._stream_id(skey), tid,
                             (stack[-1].id if stack else self._inherited()), t0, t1))  # fmt: skip
        self._count += 1
        self._last[key] = t1

    def _synchronized(self, what: str, stream: Any, t0: int, t1: int) -> None:
        """After a synchronisation (:mod:`.capture`): a SYNC range on the calling thread's track."""
        if not self._wanted():
            return
        args: dict[str, Any] = {}
        if stream is not None:
            skey = self._stream_key(stream)
            self._stream_id(skey)
            args["stream"] = self._streams[skey][1]
        self._host_range(what, ProfileCategory.SYNC, args, t0, t1)

    def _host_work(self, name: str, args: dict[str, Any], t0: int, t1: int) -> None:
        """After host work (:mod:`.capture`: an ``@elementwise`` call's CPU side): an ALGORITHM
        range on the calling thread's track."""
        if self._wanted():
            self._host_range(name, ProfileCategory.ALGORITHM, dict(args), t0, t1)

    def _host_range(self, name: str, category: ProfileCategory, args: dict[str, Any], t0: int, t1: int) -> None:
        """A range the host spent between ``t0`` and ``t1`` on the calling thread's track, inside
        the range open there."""
        key, tid = self._track()
        stack = self._stacks.get(key, ())
        self._add(ProfileEvent(EventKind.RANGE, name, category, t0, t1, self._tracks[key][1], tid,
                               next(self._ids), (stack[-1].id if stack else self._inherited()), args))  # fmt: skip
        self._last[key] = t1

    def __repr__(self) -> str:
        state = "closed" if self._closed else "active" if self.active else "idle"
        waiting = self._recorder.waiting if self._recorder is not None else 0
        return f"GpuProfiler({self.session_name!r}, {state}, {len(self._events) + len(self._launches) + waiting + len(self._copies)} events)"
