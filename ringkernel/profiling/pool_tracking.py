"""``GpuProfiler.track_pool``: recording wrappers shadowing a tracked pool's methods while active, and pool samples."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, Callable, Iterator, NoReturn

from ..errors import ConfigurationError
from .categories import ProfileCategory
from .events import EventKind, ProfileEvent
from .ranges import Open
from .timing import Timer

__all__ = ["PoolTrackingMixin"]

# The logger these warnings always had (they moved here from ringkernel.profiling.profiler).
log = logging.getLogger(__name__)

#: The pool methods shadowed on a tracked pool instance while a profiler is active: every
#: allocation (``device_array`` and the numba plugin allocate through ``allocate``) and every
#: free (``deallocate``; ``PooledBuffer.close`` through ``_close_buffer``; collected arrays,
#: buffers of a closed pool and numba frees through ``_release``).
_POOL_METHODS = ("allocate", "deallocate", "_close_buffer", "_release")

_now = time.perf_counter_ns


class PoolTrackingMixin:
    """Methods ``GpuProfiler`` gets for tracking memory pools (see the module docstring)."""

    # Set by GpuProfiler.__init__ (declared here for the type checker).
    session_name: str
    _enabled: bool
    _closed: bool
    _lock: threading.RLock
    _ids: Iterator[int]
    _stacks: dict[Any, tuple[Open, ...]]
    _inherited: Callable[[], int | None]
    _tracks: dict[Any, tuple[int, str]]
    _last: dict[Any, int]
    _pools: list[tuple[Any, str]]
    _shadowed: list[tuple[Any, dict[str, Any]]]
    _timer: Timer | None
    _refuse: Callable[[str], NoReturn]
    _track: Callable[[], tuple[Any, int]]
    _add: Callable[[ProfileEvent], None]

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
        stack = self._stacks.get(key, ())
        t = _now()
        self._add(ProfileEvent(EventKind.MEMORY, op, ProfileCategory.MEMORY, t, t, self._tracks[key][1], tid,
                               next(self._ids), (stack[-1].id if stack else self._inherited()), {"op": op, "pool": name, "ptr": ptr},
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
