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
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import sys
import threading
import time
import weakref
from bisect import bisect_right
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, NoReturn, TypeVar

from ..errors import ConfigurationError, ProfilerError, ResourceClosedError
from ..kernel.hooks import LaunchEvent, add_launch_hook, remove_launch_hook
from ..launch import WorkloadProfile
from . import capture, markers
from .categories import ProfileCategory, TransferDirection
from .events import EventKind, ProfileEvent
from .ranges import DISABLED, Open, RangeHandle, check_bytes, check_category, check_name
from .summary import ProfilingSummary
from .cupti_capture import adopt_records
from .timing import GpuTiming, LaunchCapture, Span, Timer, make_cupti_collector, make_timer

__all__ = ["GpuProfiler", "RangeHandle"]

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)


_UNKNOWN: Span = (None, None, False, None)

#: The pool methods shadowed on a tracked pool instance while a profiler is active: every
#: allocation (``device_array`` and the numba plugin allocate through ``allocate``) and every
#: free (``deallocate``; ``PooledBuffer.close`` through ``_close_buffer``; collected arrays,
#: buffers of a closed pool and numba frees through ``_release``).
_POOL_METHODS = ("allocate", "deallocate", "_close_buffer", "_release")


_get_ident = threading.get_ident
_now = time.perf_counter_ns


def _task() -> Any:
    """The running asyncio task, or None (without importing asyncio: no task exists if it is not loaded)."""
    aio = sys.modules.get("asyncio")
    if aio is None:
        return None
    loop = aio._get_running_loop()  # the public get_running_loop() raises outside a loop
    return aio.current_task(loop) if loop is not None else None


class GpuProfiler:
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
        self._enabled = bool(enabled)
        self._disabled_since: int | None = None if enabled else 0  # (LaunchCapture.CUPTI: launches then are dropped)
        self._disabled_spans: list[tuple[int, int]] = []  # (start, end), in time order
        self._disabled_starts: list[int] = []
        self.gpu_timing = gpu_timing
        self.max_events = max_events
        self._closed = False
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._stack: ContextVar[tuple[Open, ...]] = ContextVar(f"ringkernel_profiler_{id(self)}", default=())
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
            self._hook = add_launch_hook(self._on_launch)
        self._last[self._track()[0]] = time.perf_counter_ns()  # the first launch's host time starts here
        try:
            capture.register(self)  # copies and synchronisations
            for ref, name in self._pools:
                self._shadow_pool(ref(), name)
            self._sample_pools()
        except BaseException:
            self._deactivate()
            raise

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

    # -- ranges ---------------------------------------------------------------------------
    def _track(self) -> tuple[Any, int]:
        """This thread's (and asyncio task's) track: its key (the thread's id, or (thread, task))
        and trace id. On every captured launch: kept to a few dictionary lookups."""
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
        return key, t[0]

    def _add(self, event: ProfileEvent) -> None:
        if self._count >= self.max_events:
            self._dropped += 1
        else:
            self._events.append(event)
            self._count += 1

    def begin_range(self, name: str, category: ProfileCategory = ProfileCategory.ALGORITHM, *,
                    args: dict[str, Any] | None = None, _payload: Any = None) -> RangeHandle:  # fmt: skip
        """Open a range (also an NVTX range); end it with :meth:`end_range` in the same thread or task."""
        if self._closed:
            self._refuse("begin_range")
        if not self.enabled:
            return DISABLED
        check_name(name)
        check_category(category)
        key, tid = self._track()
        stack = self._stack.get()
        t = time.perf_counter_ns()
        op = Open(next(self._ids), name, category, t, key, tid, stack[-1].id if stack else None, dict(args or {}))
        op.nvtx_id = markers.start(name, category, _payload)
        self._stack.set(stack + (op,))
        self._open_ranges[op.id] = op  # (LaunchCapture.CUPTI finds a launch's parent among them too)
        self._last[key] = t
        return RangeHandle(self, op)

    def end_range(self, handle: RangeHandle) -> None:
        """End a range: the innermost open one of this thread or task.

        Raises :class:`~ringkernel.errors.ProfilerError` when it was already ended, when an
        inner range is still open, when it began in another thread or task, or when the
        handle is not one of this profiler's.
        """
        if self._closed:
            self._refuse("end_range")
        if not isinstance(handle, RangeHandle):
            raise ProfilerError(f"end_range needs a RangeHandle from begin_range, got {handle!r}")
        op = handle._open
        if op is None:
            return  # a disabled profiler's handle
        if handle._profiler is not self:
            raise ProfilerError(f"range {op.name!r} belongs to another profiler", range_name=op.name, range_id=op.id)
        stack = self._stack.get()
        with self._lock:
            if op.ended:
                raise ProfilerError(f"range {op.name!r} (id {op.id}) was already ended", range_name=op.name,
                                    range_id=op.id, hint="end each range once")  # fmt: skip
            if not stack or stack[-1] is not op:
                if op in stack:
                    inner = ", ".join(repr(o.name) for o in stack[stack.index(op) + 1:])
                    raise ProfilerError(
                        f"range {op.name!r} ended while ranges opened inside it are still open: {inner}",
                        range_name=op.name, range_id=op.id, hint="end the inner ranges first (ranges nest)",
                    )  # fmt: skip
                raise ProfilerError(
                    f"range {op.name!r} (id {op.id}) began in another thread or asyncio task",
                    range_name=op.name, range_id=op.id,
                    hint="end a range in the thread or task that began it",
                )  # fmt: skip
            op.ended = True
        t = time.perf_counter_ns()
        self._stack.set(stack[:-1])
        markers.end(op.nvtx_id)
        nbytes = op.args.get("bytes")
        self._add(ProfileEvent(EventKind.RANGE, op.name, op.category, op.start_ns, t, self._tracks[op.track_key][1],
                               op.track_id, op.id, op.parent_id, op.args, nbytes=nbytes))  # fmt: skip
        self._open_ranges.pop(op.id, None)  # (after the event: a reader in between sees one of the two)
        self._last[op.track_key] = t
        if self._pools:
            self._sample_pools()

    def range(self, name: str, category: ProfileCategory = ProfileCategory.ALGORITHM) -> RangeHandle:
        """``with profiler.range("step", ProfileCategory.ALGORITHM): ...`` (begins at the call)."""
        return self.begin_range(name, category)

    def profiled(self, fn: F | None = None, *, name: str | None = None,
                 category: ProfileCategory = ProfileCategory.ALGORITHM) -> Any:  # fmt: skip
        """Decorator: each call of a function (``def`` or ``async def``) is a range named after it.

        ``@profiler.profiled`` or ``@profiler.profiled(name="load", category=ProfileCategory.IO)``.
        """
        check_category(category)
        if name is not None:
            check_name(name)

        def wrap(f: F) -> F:
            label: str = name or str(getattr(f, "__qualname__", repr(f)))
            if inspect.iscoroutinefunction(f):

                @functools.wraps(f)
                async def awrapper(*args: Any, **kwargs: Any) -> Any:
                    with self.begin_range(label, category):
                        return await f(*args, **kwargs)

                return awrapper  # type: ignore[return-value]

            @functools.wraps(f)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with self.begin_range(label, category):
                    return f(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return wrap(fn) if fn is not None else wrap

    # -- annotations ----------------------------------------------------------------------
    def annotate_kernel(self, name: str, *, bytes_per_element: int | None = None, bytes_per_launch: int | None = None,
                        profile: WorkloadProfile | None = None) -> RangeHandle:  # fmt: skip
        """Open a KERNEL range named ``name`` and remember the bytes its launches move.

        The bytes (``bytes_per_launch``, or ``bytes_per_element`` times a launch's elements,
        or the ``profile``'s ``bytes_per_element``) apply to every captured launch of the
        ``@gpu_kernel`` called ``name`` in this session, those made before this call too (the
        last annotation of a name wins); the summary turns them into bandwidth.
        """
        check_name(name, "a kernel name")
        if profile is not None:
            if not isinstance(profile, WorkloadProfile):
                raise ConfigurationError(f"profile must be a WorkloadProfile, got {profile!r}")
            bytes_per_element = bytes_per_element if bytes_per_element is not None else profile.bytes_per_element
        bpe = None if bytes_per_element is None else check_bytes(bytes_per_element, "bytes_per_element")
        bpl = None if bytes_per_launch is None else check_bytes(bytes_per_launch, "bytes_per_launch")
        if self._closed:
            self._refuse("annotate_kernel")
        if bpe is not None or bpl is not None:
            self._kernel_bytes[name] = (bpe, bpl)
        args = {k: v for k, v in (("bytes_per_element", bpe), ("bytes_per_launch", bpl)) if v is not None}
        return self.begin_range(name, ProfileCategory.KERNEL, args=args)

    def annotate_memory(self, operation: str, nbytes: int) -> RangeHandle:
        """Open a MEMORY range for ``operation`` (e.g. ``"allocate staging"``) of ``nbytes`` bytes."""
        check_name(operation, "a memory operation")
        check_bytes(nbytes, "nbytes")
        return self.begin_range(operation, ProfileCategory.MEMORY, args={"bytes": nbytes}, _payload=nbytes)

    def annotate_transfer(self, direction: TransferDirection | str, nbytes: int) -> RangeHandle:
        """Open a MEMORY range for a copy of ``nbytes`` (``"HtoD"``, ``"DtoH"``, ``"DtoD"``, ``"PtoP"``)."""
        d = TransferDirection.parse(direction)
        check_bytes(nbytes, "nbytes")
        return self.begin_range(f"transfer {d.value}", ProfileCategory.MEMORY,
                                args={"bytes": nbytes, "direction": d.value}, _payload=nbytes)  # fmt: skip

    def mark(self, name: str, category: ProfileCategory = ProfileCategory.ALGORITHM) -> None:
        """An instant event (an NVTX mark)."""
        if self._closed:
            self._refuse("mark")
        if not self.enabled:
            return
        check_name(name, "a mark name")
        check_category(category)
        key, tid = self._track()
        stack = self._stack.get()
        t = time.perf_counter_ns()
        markers.mark(name, category)
        self._add(ProfileEvent(EventKind.MARK, name, category, t, t, self._tracks[key][1], tid, next(self._ids),
                               stack[-1].id if stack else None))  # fmt: skip
        self._last[key] = t

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

    def track_pool(self, pool: Any, name: str | None = None) -> None:
        """Record the pool's allocations and frees while the profiler is active (MEMORY events,
        each followed by a sample of its bytes in use and held), and sample ``pool.diagnostics()``
        when the profiler is entered and left and at each range end: the trace's pool counters.

        While active, the pool *instance* gets recording wrappers of its allocating and freeing
        methods; leaving removes them, so an untracked pool (or one whose profiler is not
        active) runs its class's methods unchanged. Tracking a pool twice raises
        :class:`~ringkernel.errors.ConfigurationError`.
        """
        if self._closed:
            self._refuse("track_pool")
        if not callable(getattr(pool, "diagnostics", None)):
            raise ConfigurationError(f"track_pool needs a GpuMemoryPool, got {pool!r}")
        if any(ref() is pool for ref, _ in self._pools):
            raise ConfigurationError(f"{pool!r} is tracked by this profiler already",
                                     hint="call track_pool once per pool")  # fmt: skip
        label = name or f"pool {len(self._pools)}"
        with self._lock:
            self._pools.append((weakref.ref(pool), label))
            if self._timer is not None:
                self._shadow_pool(pool, label)

    def _shadow_pool(self, pool: Any, name: str) -> None:
        """Install the recording wrappers on ``pool`` (lock held, profiler active)."""
        if pool is None:
            return
        d = getattr(pool, "__dict__", None)
        cls = type(pool)
        if d is None or not all(callable(getattr(cls, m, None)) for m in _POOL_METHODS):
            log.warning("GpuProfiler %r: %r cannot be recorded (not a GpuMemoryPool); only sampled",
                        self.session_name, pool)  # fmt: skip
            return
        if any(m in d for m in _POOL_METHODS):
            log.warning("GpuProfiler %r: %s is recorded by another active profiler already; here it is only sampled",
                        self.session_name, name)  # fmt: skip
            return
        ref = weakref.ref(pool)  # the wrappers live on the pool: no reference cycle through them
        record = self._record_memory
        allocate, deallocate, close_buffer, release = (getattr(cls, m) for m in _POOL_METHODS)

        def allocate_(nbytes: int) -> Any:
            p = ref()
            buf = allocate(p, nbytes)
            record(p, name, "allocate", buf.nbytes, buf.ptr)
            return buf

        def deallocate_(buffer: Any, nbytes: int | None = None) -> None:
            p = ref()
            deallocate(p, buffer, nbytes)
            record(p, name, "free", getattr(buffer, "nbytes", nbytes), int(getattr(buffer, "ptr", buffer)))

        def close_buffer_(buf: Any) -> None:
            p = ref()
            owned = not buf.closed
            close_buffer(p, buf)
            if owned:
                record(p, name, "free", buf.nbytes, buf.ptr)

        def release_(item: Any) -> None:  # a finalizer: never waits (no counter sample), never raises
            p = ref()
            release(p, item)
            try:
                record(p, name, "free", getattr(item, "nbytes", None), int(getattr(item, "ptr", item)), sample=False)
            except Exception:  # noqa: BLE001 - a finalizer must not raise
                pass

        wrappers = dict(zip(_POOL_METHODS, (allocate_, deallocate_, close_buffer_, release_)))
        d.update(wrappers)
        self._shadowed.append((ref, wrappers))

    def _unshadow_pools(self) -> None:
        """Remove the wrappers (those still in place) from every pool still alive."""
        shadowed, self._shadowed = self._shadowed, []
        for ref, wrappers in shadowed:
            pool = ref()
            if pool is None:
                continue
            d = vars(pool)
            for m, w in wrappers.items():
                if d.get(m) is w:
                    del d[m]

    def _record_memory(self, pool: Any, name: str, op: str, nbytes: int | None, ptr: int, sample: bool = True) -> None:
        """A MEMORY event on the calling thread's track, then (``sample``) the pool's counters."""
        if self._timer is None or not self._enabled:
            return
        key, tid = self._track()
        stack = self._stack.get()
        t = _now()
        self._add(ProfileEvent(EventKind.MEMORY, op, ProfileCategory.MEMORY, t, t, self._tracks[key][1], tid,
                               next(self._ids), stack[-1].id if stack else None, {"op": op, "pool": name, "ptr": ptr},
                               nbytes=nbytes))  # fmt: skip
        self._last[key] = t
        if sample:
            self._sample_pool(pool, name)

    def _sample_pool(self, pool: Any, name: str) -> None:
        d = pool.diagnostics()
        t = time.perf_counter_ns()
        self._add(ProfileEvent(EventKind.COUNTER, f"{name} bytes", ProfileCategory.MEMORY, t, t, track_id=0,
                               args={"in use": d.live_block_bytes, "held": d.pool_bytes}))  # fmt: skip

    def _sample_pools(self) -> None:
        pools = [(p(), n) for p, n in self._pools]
        from ..memory.plugin_state import plugin_pool

        numba_pool = plugin_pool()
        if numba_pool is not None and all(p is not numba_pool for p, _ in pools):
            pools.append((numba_pool, "numba allocations"))
        for pool, name in pools:
            if pool is not None:
                self._sample_pool(pool, name)

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

    def _on_launch(self, ev: LaunchEvent) -> None:
        """The launch hook (runs on the launching thread, right after the launch was queued).

        Its cost is added to every launch while the profiler is active: lookups are inlined
        and the slow cases (a new thread, task or stream) leave through helper calls.
        """
        timer = self._timer
        if timer is None or not self._enabled:
            return
        if self._filter is not None and not self._filter():
            return
        if self._count >= self.max_events:
            self._dropped += 1
            return
        t = ev.timestamp_ns
        task = _task()
        key: Any = _get_ident() if task is None else (_get_ident(), id(task))
        track = self._tracks.get(key)
        tid = track[0] if track is not None else self._track()[1]
        last = self._last.get(key)
        gap = None if last is None else t - last
        stack = self._stack.get()
        stream = ev.stream
        skey = 0 if stream is None else self._stream_key(stream)
        s = self._streams.get(skey)
        rid = next(self._ids)
        timer.launched(rid, t, gap, skey)
        end = _now()
        self._launches.append((ev, rid, skey, s[0] if s is not None else self._stream_id(skey), gap, tid,
                               stack[-1].id if stack else None, end))  # fmt: skip
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
        stack = self._stack.get()
        rid = next(self._ids)
        timer.copied(rid, t0, t1, skey)
        s = self._streams.get(skey)
        self._copies.append((direction, nbytes, rid, skey, s[0] if s is not None else self._stream_id(skey), tid,
                             stack[-1].id if stack else None, t0, t1))  # fmt: skip
        self._count += 1
        self._last[key] = t1

    def _synchronized(self, what: str, stream: Any, t0: int, t1: int) -> None:
        """After a synchronisation (:mod:`.capture`): a SYNC range on the calling thread's track."""
        if not self._wanted():
            return
        key, tid = self._track()
        stack = self._stack.get()
        args: dict[str, Any] = {}
        if stream is not None:
            skey = self._stream_key(stream)
            self._stream_id(skey)
            args["stream"] = self._streams[skey][1]
        self._add(ProfileEvent(EventKind.RANGE, what, ProfileCategory.SYNC, t0, t1, self._tracks[key][1], tid,
                               next(self._ids), stack[-1].id if stack else None, args))  # fmt: skip
        self._last[key] = t1

    # -- results --------------------------------------------------------------------------
    def _resolve(self) -> None:
        timer = self._timer
        if timer is not None:
            with capture.quiet():  # the timer's own wait for the GPU is not the user's synchronisation
                timer.resolve(block=True)
            self._times.update(timer.times)
            timer.times.clear()
            self._timing_meta = timer.metadata()
            if self.launches is LaunchCapture.CUPTI:
                collector: Any = timer  # a CuptiTimer made by make_cupti_collector
                records, dropped = collector.take_launches()
                self._adopt(records, collector)
                self._dropped += dropped  # (launches past max_events: not kept in memory either)

    def _adopt(self, records: list[Any], timer: Any) -> None:
        """Launches read from CUPTI's records (``LaunchCapture.CUPTI``) made into captured launches."""
        adopt_records(self, records, timer)

    def _kernel_nbytes(self, le: LaunchEvent) -> int | None:
        nb = self._kernel_bytes.get(le.kernel_name)
        if nb is None:
            return None
        per_launch, per_element = nb[1], nb[0]
        if per_launch is None and le.elements < 0:  # captured from CUPTI: elements unknown
            return None
        return per_launch if per_launch is not None else (per_element or 0) * le.elements

    def events(self) -> list[ProfileEvent]:
        """Every recorded event in start order; waits for the GPU to finish captured launches."""
        if self._closed:
            self._refuse("events")
        with self._lock:
            self._resolve()
            names = {tid: name for tid, name in self._tracks.values()}
            streams = {key: s for key, s in self._streams.items()}
            out = list(self._events)
            times = self._times
            for le, rid, skey, sid, gap, tid, parent, hook_end in self._launches:
                start, end, estimated, note = times.get(rid, _UNKNOWN)
                args: dict[str, Any] = {"grid": list(le.grid), "block": list(le.block), "elements": le.elements,
                                        "launch": le.kind, "shared_mem": le.shared_mem}  # fmt: skip
                if le.elements < 0:
                    del args["elements"]  # (LaunchCapture.CUPTI: not known)
                if note:
                    args["note"] = note
                out.append(ProfileEvent(
                    EventKind.KERNEL, le.kernel_name, ProfileCategory.KERNEL, le.timestamp_ns, hook_end,
                    names.get(tid, ""), tid, rid, parent, args, stream=streams[skey][1], stream_id=sid,
                    gpu_start_ns=start, gpu_end_ns=end, gpu_start_estimated=estimated, host_ns=gap,
                    nbytes=self._kernel_nbytes(le),
                ))  # fmt: skip
            for direction, nbytes, rid, skey, sid, tid, parent, t0, t1 in self._copies:
                start, end, estimated, note = times.get(rid, _UNKNOWN)
                cargs: dict[str, Any] = {"direction": direction, "bytes": nbytes}
                if note:
                    cargs["note"] = note
                out.append(ProfileEvent(
                    EventKind.TRANSFER, f"memcpy {direction}", ProfileCategory.MEMORY, t0, t1, names.get(tid, ""),
                    tid, rid, parent, cargs, stream=streams[skey][1], stream_id=sid, gpu_start_ns=start,
                    gpu_end_ns=end, gpu_start_estimated=estimated, nbytes=nbytes,
                ))  # fmt: skip
        out.sort(key=lambda e: (e.start_ns, -e.duration_ns))
        return out

    @property
    def timing_source(self) -> str:
        """How kernel times were obtained (``"host (simulator)"``, ``"cuda events ..."``, ``"cupti ..."``)."""
        return str(self._timing_meta.get("timing_source", "none (no launch captured)"))

    def metadata(self) -> dict[str, Any]:
        """The facts the trace carries: session, device, versions, timing source."""
        from .._versions import library_versions

        meta: dict[str, Any] = {"session": self.session_name, "clock": "time.perf_counter_ns, shown relative to the session start",
                                "session_start_unix": self._wall0, "timing_source": self.timing_source}  # fmt: skip
        meta.update({k: v for k, v in self._timing_meta.items() if k != "timing_source"})
        if self._simulated is not None:
            try:
                from ..device import GpuArchitecture

                arch = GpuArchitecture.current()
                meta["device"] = {"index": 0, "name": arch.name, "compute_capability": arch.cc_string,
                                  "sm_count": arch.sm_count, "simulated": arch.simulated}  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - the trace is still worth writing
                meta["device"] = {"index": 0, "name": f"unknown ({exc})"}
        meta["versions"] = library_versions()
        open_ranges = len(self._stack.get())
        meta.update(dropped_events=self._dropped, open_ranges_in_this_context=open_ranges)
        return meta

    def summary(self, *, copy_ceiling_gbps: float | None = None) -> ProfilingSummary:
        """Per-kernel statistics, stream idle gaps and range totals (``print(profiler.summary())``).

        ``copy_ceiling_gbps``: the device's copy bandwidth to judge kernels against; default:
        measured once per process on a GPU (a device-to-device copy), none on the simulator.
        """
        if self._closed:
            self._refuse("summary")
        if copy_ceiling_gbps is not None and (isinstance(copy_ceiling_gbps, bool) or not isinstance(copy_ceiling_gbps, (int, float))
                                              or not 0 < copy_ceiling_gbps < float("inf")):  # fmt: skip
            raise ConfigurationError(f"copy_ceiling_gbps must be a positive number of GB/s, got {copy_ceiling_gbps!r}",
                                     hint="e.g. 4000 for an H200's device-to-device copy, or None to measure it")  # fmt: skip
        events = self.events()
        if copy_ceiling_gbps is None and self._simulated is False and any(e.nbytes for e in events if e.kind is EventKind.KERNEL):
            from .summary import measured_copy_ceiling_gbps

            copy_ceiling_gbps = measured_copy_ceiling_gbps()
        return ProfilingSummary.from_events(events, session=self.session_name, timing_source=self.timing_source,
                                            copy_ceiling_gbps=copy_ceiling_gbps, dropped_events=self._dropped)  # fmt: skip

    def chrome_trace(self) -> dict[str, Any]:
        """The session as a Chrome trace-event JSON object (see docs/profiling.md, "Trace layout")."""
        from .tracing import build_trace

        if self._closed:
            self._refuse("chrome_trace")
        events = self.events()
        return build_trace(events, host_tracks={tid: name for tid, name in self._tracks.values()},
                           streams={sid: label for sid, label in self._streams.values()},
                           metadata=self.metadata(), t0_ns=self._t0)  # fmt: skip

    def export_chrome_tracing(self, path: str | Path | None = None) -> str:
        """The trace as JSON text; written atomically to ``path`` when given, its missing parent
        folders made (open it in https://ui.perfetto.dev or chrome://tracing)."""
        import json

        if self._closed:
            self._refuse("export_chrome_tracing")
        text = json.dumps(self.chrome_trace(), separators=(",", ":"))
        if path is not None:
            from .._fileio import atomic_write_bytes, shared_file_mode

            atomic_write_bytes(Path(path), text.encode(), mode=shared_file_mode())  # a trace is for sharing
        return text

    def __repr__(self) -> str:
        state = "closed" if self._closed else "active" if self.active else "idle"
        return f"GpuProfiler({self.session_name!r}, {state}, {len(self._events) + len(self._launches) + len(self._copies)} events)"
