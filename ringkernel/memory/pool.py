"""``GpuMemoryPool``: size-stratified device memory with O(1) allocate and free.

Six size classes (256 B .. 256 KB) each keep a LIFO free list of blocks carved from slabs,
so one driver allocation serves many blocks and a freed block is reused while it is still
warm in cache. Larger requests get driver allocations rounded to quarter-power-of-two
bins, kept for reuse when freed within a budget over the peak demand
(``PoolConfig.large_cache_headroom``); requests beyond a class's ``max_counts`` go straight
to the driver. Both are tracked. Every operation holds one lock; the bookkeeping (which
block is live and which buffer object holds it, which slab it belongs to) is what lets the
pool refuse a double free, a foreign pointer or a wrong size without corrupting anything.

Blocks of arrays freed by the garbage collector (``device_array``, the numba plugin) never
wait for that lock: the collector can run on a thread that already holds it, in the middle
of ``allocate``. Their finalizer puts the block on a lock-free pending list and drains it
only if the lock is free at once; otherwise the next call that takes the lock for more
than the hot path (a slow allocation, a free by pointer, ``diagnostics``, ``compact``,
``close``) returns it. ``close()`` keeps the slabs of blocks still in use until those
blocks are freed or collected (see docs/memory.md, "Lifetimes").
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from collections import deque
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigurationError, InvalidFree
from .array import DeviceArray, new_device_array
from .backend import DriverBackend, MemoryBackend, default_backend
from .pool_buffer import PooledBuffer
from .pool_config import _CLASSES, _INDEX, _LIMITS, ClassDiagnostics, PoolConfig, PoolDiagnostics, SizeClass, _class_index
from .pool_lifetime import _PoolLifetime, _release_all

__all__ = ["SizeClass", "PoolConfig", "PooledBuffer", "GpuMemoryPool", "PoolDiagnostics", "ClassDiagnostics"]


def _state_field(name: str) -> Any:
    """A pool attribute kept in its ``_state`` (a C ``PoolState`` or a ``_PyState``)."""
    return property(lambda self: getattr(self._state, name), lambda self, v: setattr(self._state, name, v),
                    doc=f"the pool state's {name}")  # fmt: skip


class GpuMemoryPool(_PoolLifetime):
    """Size-stratified device memory pool (see the module docstring).

    Parameters
    ----------
    config:
        Growth limits and presets (:class:`PoolConfig`).
    backend:
        Where memory comes from (default: the driver on a GPU, host memory on the simulator).

    ``close()`` (or leaving a ``with`` block) ends the pool: every later ``allocate``,
    ``device_array``, ``warm_bucket``, ``compact``, ``reset_peaks`` and ``as_array`` raises
    :class:`~ringkernel.errors.ResourceClosedError`; ``diagnostics()`` still answers (with
    ``closed=True``). Memory nothing can reach goes back to the device at once; a slab
    holding a block still in use (a live ``device_array``, a buffer still referenced, a
    view) stays until its last such block is freed or collected, so no live array ever
    points at released memory. ``close(force=True)`` releases everything at once. When the
    pool object is garbage-collected (or the interpreter exits), ``weakref.finalize``
    releases whatever it still holds.
    """

    def __init__(self, config: PoolConfig | None = None, *, backend: MemoryBackend | None = None) -> None:
        self.config = config or PoolConfig()
        self.backend = backend if backend is not None else default_backend()
        cap = self.config.max_cached_large_bytes
        if cap is None:
            try:
                cap = self.backend.mem_info()[1] // 8
            except Exception:  # noqa: BLE001 - no answer from the device: keep nothing cached
                cap = 0
        self._max_cached = cap
        if isinstance(self.backend, DriverBackend):  # a GPU: allocate/free in C where it builds
            install_native_methods()
        # The lock and the counters the hot paths change on every call (_hits, _live_bytes,
        # _peak_live, _large_room: properties over it): the compiled module's PoolState when
        # the compiled methods are installed (they count in C and take its lock without a
        # method call), else a Python one (_PyState).
        self._state: Any = _new_state()
        self._lock: Any = self._state if self._state.__class__ is not _PyState else _PyLock()
        n = len(_CLASSES)
        # One LIFO free list per class, plus an always-empty one at index -1 (= n), so that
        # allocate's hot path needs no separate test for "larger than every class".
        self._free: list[list[int]] = [[] for _ in range(n + 1)]
        self._count = [0] * n  # blocks per class, free or in use
        self._block_class: dict[int, int] = {}  # block ptr -> class index (pooled blocks only)
        self._block_slab: dict[int, int] = {}  # block ptr -> slab ptr
        self._slabs: dict[int, tuple[int, tuple[int, ...]]] = {}  # slab ptr -> (class index, blocks)
        # ptr -> the live buffer. Freeing checks identity, so a stale buffer object (its
        # block freed and handed out again since) is refused without a generation counter.
        self._live: dict[int, PooledBuffer] = {}
        self._large: dict[int, int] = {}  # blocks above 256 KB, in use or cached: ptr -> bytes
        self._large_free: dict[int, list[int]] = {}  # cached large blocks by size, oldest first
        # cached block -> the clock when it was cached. Its rank for the budget is that + 1 MiB
        # / its size (GreedyDual-Size): the lowest goes back to the device first, and the
        # clock moves up to it, so blocks cached long ago go eventually, however small. A
        # block handed out again keeps its (stale) entry until it is cached again or freed.
        self._large_since: dict[int, float] = {}
        self._large_clock = 0.0
        self._large_limit = self.config.large_limit  # read on the large hot paths
        self._state.large_limit = min(self._large_limit, 1 << 62)  # (the compiled path's copy)
        self._max_cached = cap = min(cap, 1 << 62)  # (a C counter: a larger budget means no limit anyway)
        self._state.large_room = cap  # max_cached_large_bytes less the bytes cached now
        # The most bytes live at once in the pool's life (reset_peaks keeps it): what
        # large_cache_headroom is measured against
        self._live_high = 0
        self._misses = 0
        self._pool_bytes = self._peak_pool = 0
        # (_live_bytes, _peak_live: bytes requested; blocks in use are counted on demand)
        self._closed = False
        # After close(): the blocks still in use, ptr -> (a weakref.finalize on the buffer
        # that returns the block when the buffer is collected, bytes requested), and per slab
        # kept for them, how many. _live is emptied, so the free hot path misses from then on.
        self._held: dict[int, tuple[weakref.finalize, int]] = {}
        self._slab_held: dict[int, int] = {}
        # Buffers of collected arrays (and, after close, pointers of collected buffers),
        # appended by finalizers (deque.append is atomic) and returned under the lock by
        # _drain: a finalizer must never wait for the lock.
        self._pending: deque[PooledBuffer | int] = deque()
        self._finalizer = weakref.finalize(self, _release_all, self.backend, self._slabs, self._large)
        for cls, count in zip(_CLASSES, self.config.initial_counts):
            if count:
                self.warm_bucket(cls, count)

    # -- allocation ---------------------------------------------------------------------
    def _allocate_py(self, nbytes: int) -> PooledBuffer:
        """A block of at least ``nbytes`` (O(1) when its class, or its large bin, has a free block)."""
        if type(nbytes) is int and 0 < nbytes <= 262144:  # noqa: E721 - the hot path, inlined
            i = bisect_left(_LIMITS, nbytes)
        elif type(nbytes) is int and nbytes > 262144:  # noqa: E721
            i = -1
        else:
            i = _class_index(nbytes)
            nbytes = int(nbytes)
        lock = self._lock
        st = self._state
        lock.acquire()  # acquire/release in try/finally: half the cost of `with` on the hot path
        try:
            stack = self._free[i]  # i == -1: the always-empty list; closed: every list is empty
            if stack:  # the hot path: a free block of the class
                st.hits += 1
                buf = PooledBuffer(self, stack.pop(), nbytes, i)
            elif i < 0 and nbytes <= self._large_limit:
                # above 256 KB: a cached block of the request's own bin, inlined like the class
                # path (close() empties the cache, so a closed pool finds none)
                k = (nbytes - 1).bit_length() - 3  # _large_bin: steps of 2^k
                size = (((nbytes - 1) >> k) + 1) << k
                cached = self._large_free.get(size)
                if cached:
                    st.hits += 1
                    st.large_room += size
                    buf = PooledBuffer(self, cached.pop(), nbytes, -1)  # the one freed last: warm
                else:
                    buf = self._allocate_slow(i, nbytes)
            else:
                buf = self._allocate_slow(i, nbytes)
            self._live[buf.ptr] = buf
            live = st.live_bytes = st.live_bytes + nbytes
            if live > st.peak_live:
                st.peak_live = live
        finally:
            lock.release()
        return buf

    def _allocate_slow(self, i: int, nbytes: int) -> PooledBuffer:
        """Allocate when the class's free list is empty (lock held): drain, grow, or go direct."""
        self._check_open("allocate")
        if self._pending:  # blocks of collected arrays first: one may be of this class
            self._drain()
            stack = self._free[i]
            if stack:
                self._hits += 1
                return PooledBuffer(self, stack.pop(), nbytes, i)
        if i < 0:
            return PooledBuffer(self, self._large_alloc(nbytes), nbytes, -1)
        if self._count[i] < self.config.max_counts[i]:
            self._grow(i, 1)
            self._misses += 1
            return PooledBuffer(self, self._free[i].pop(), nbytes, i)
        why = f"{_CLASSES[i].name} is at max_counts={self.config.max_counts[i]}"
        return PooledBuffer(self, self._direct(_LIMITS[i], why=why, requested=nbytes), nbytes, -1)

    def device_array(self, shape: int | Sequence[int], dtype: Any = np.float32) -> DeviceArray:
        """A :class:`~ringkernel.memory.DeviceArray` from the pool, returned to the pool when
        it and its views are collected (``as_numba()`` gives numba's array over it).

        The array keeps the pool alive; after ``close()`` its block stays valid until the
        array is collected. Raises :class:`ConfigurationError` for a negative or non-integer
        shape and for dtypes that are not numbers.
        """
        return new_device_array(self, shape, dtype)

    def _large_alloc(self, nbytes: int) -> int:
        """A block above 256 KB (lock held): a cached block of its bin (or of one of the
        ``large_reuse_bins`` bins above it); when a new block would pass the cache budget,
        a larger cached block (see :meth:`_spill`); else a new one."""
        if nbytes > self.config.large_limit:
            return self._direct(nbytes, why=f"larger than large_limit={self.config.large_limit}", requested=nbytes)
        size = want = _large_bin(nbytes)
        for _ in range(self.config.large_reuse_bins + 1):
            stack = self._large_free.get(size)
            if stack:
                return self._take_cached(size, stack)
            size = _large_bin(size + 1)  # the next bin up
        if self._large_room != self._max_cached:  # something is cached
            ptr = self._spill(want, nbytes)
            if ptr:
                return ptr
        return self._direct(want, why="a new large block", requested=nbytes)

    def warm_bucket(self, size_class: SizeClass, count: int) -> None:
        """Make sure ``count`` blocks of ``size_class`` are free, allocating slabs now."""
        if not isinstance(size_class, SizeClass):
            raise ConfigurationError(f"warm_bucket takes a SizeClass, got {size_class!r}")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise ConfigurationError(f"warm_bucket takes a count of blocks (a non-negative int), got {count!r}")
        count = int(count)
        i = _INDEX[size_class]
        with self._lock:
            self._check_open("warm_bucket")
            self._drain()
            need = count - len(self._free[i])
            if need <= 0:
                return
            if self._count[i] + need > self.config.max_counts[i]:
                raise ConfigurationError(
                    f"warming {count} {size_class.name} blocks would pass max_counts={self.config.max_counts[i]} "
                    f"({self._count[i]} exist)",
                    hint="raise PoolConfig.max_counts for this class",
                )
            while need > 0:
                before = len(self._free[i])
                self._grow(i, need)
                need -= len(self._free[i]) - before

    # -- deallocation -------------------------------------------------------------------
    def _deallocate_py(self, buffer: PooledBuffer | int, nbytes: int | None = None) -> None:
        """Return a block. ``buffer`` is a :class:`PooledBuffer` or a raw pointer; ``nbytes``,
        if given, must match what was allocated (in the same size class).

        After :meth:`close`, freeing a block still in use returns it (its slab goes back to
        the device with its last such block); freeing a block the pool no longer holds is a
        no-op (a closed pool cannot tell a double free from a block it already released).
        """
        lock = self._lock
        if type(buffer) is PooledBuffer and nbytes is None:
            if not lock.acquire(False):  # (who holds it is asked only when it is held)
                if lock.held_by_me():
                    # A finalizer that a garbage collection ran inside this pool's own call on
                    # this thread (which holds the lock): waiting would never end, so the block
                    # is queued and returned by the next call that takes the lock (as collected
                    # arrays' are).
                    self._pending.append(buffer)
                    return
                lock.acquire()
            try:
                i = buffer._i
                if i >= 0:  # the hot path, inlined: a pooled block, no size given
                    ptr = buffer.ptr
                    live = self._live.pop(ptr, None)  # closed: _live is empty, so this misses
                    if live is buffer:
                        self._state.live_bytes -= buffer.nbytes
                        self._free[i].append(ptr)
                        return
                    if live is not None:  # another buffer holds the block now: put it back
                        self._live[ptr] = live
                else:  # a block above the classes (a direct allocation), no size given
                    ptr = buffer.ptr
                    live = self._live.pop(ptr, None)
                    if live is buffer:
                        st = self._state
                        st.live_bytes -= buffer.nbytes
                        large = self._large[ptr]
                        stack = self._large_free.get(large)  # a bin cached before: cacheable
                        if stack is not None and large <= st.large_room:
                            stack.append(ptr)  # _return_large's common case, inlined
                            self._large_since[ptr] = self._large_clock
                            st.large_room -= large
                        else:
                            self._return_large(ptr, large)
                        return
                    if live is not None:
                        self._live[ptr] = live
            finally:
                lock.release()
        elif type(buffer) is PooledBuffer and lock.held_by_me():  # (a size given: the same as above)
            self._pending.append(buffer)
            return
        if type(buffer) is PooledBuffer:
            if buffer.pool is not self:
                raise InvalidFree(f"buffer 0x{buffer.ptr:x} belongs to another pool", hint="free it with its own pool")
            ptr, buf = buffer.ptr, buffer
        elif isinstance(buffer, (int, np.integer)) and not isinstance(buffer, bool):
            ptr, buf = int(buffer), None
        else:
            raise InvalidFree(f"deallocate takes a PooledBuffer or a pointer, got {type(buffer).__name__}")
        with lock:
            try:
                self._free_locked(ptr, buf, nbytes)
            finally:
                self._drain()

    # The hot counters live in self._state (see __init__); the rest of the code reads them here.
    _hits = _state_field("hits")
    _live_bytes = _state_field("live_bytes")
    _peak_live = _state_field("peak_live")
    _large_room = _state_field("large_room")

    # What ``pool.allocate(n)`` and ``pool.deallocate(buf)`` run: these Python methods, or where
    # ringkernel's compiled module is loaded (a pool on a GPU: install_native_methods) C
    # descriptors doing the same hot paths and deferring to these for everything else.
    allocate = _allocate_py
    deallocate = _deallocate_py

    def _free_locked(self, ptr: int, buf: PooledBuffer | None, nbytes: int | None) -> None:
        if self._closed:
            self._free_held(ptr, buf, nbytes)
            return
        live = self._live.get(ptr)
        if live is None or (buf is not None and live is not buf):
            if ptr in self._block_slab or buf is not None:
                raise InvalidFree(
                    f"double free: block 0x{ptr:x} is not allocated (freed already, or reallocated since)",
                    hint="free each buffer once; a `with pool.allocate(n) as buf:` block does it for you",
                    details={"ptr": ptr},
                )
            raise InvalidFree(
                f"pointer 0x{ptr:x} was not allocated by this pool",
                hint="free it with the allocator it came from",
                details={"ptr": ptr},
            )
        if buf is None and getattr(live, "_held", False):
            raise InvalidFree(
                f"block 0x{ptr:x} belongs to an array (a DeviceArray from pool.device_array, a queue's arrays, or "
                "a numba array of the allocator plugin): freeing it by pointer would hand it out again under the array",
                hint="drop the array and its views (del a; a queue: close it and drop its device_args()): the block "
                "returns to the pool when they are collected",
                details={"ptr": ptr},
            )
        requested = live.nbytes
        if nbytes is not None:
            self._check_size(ptr, requested, nbytes)
        del self._live[ptr]
        self._live_bytes -= requested
        large = self._large.get(ptr)
        if large is not None:
            self._return_large(ptr, large)
            return
        self._free[self._block_class[ptr]].append(ptr)

    def _check_size(self, ptr: int, requested: int, nbytes: int) -> None:
        if ptr in self._large:
            ok = nbytes == self._large[ptr] or nbytes == requested
        else:
            ok = SizeClass.for_size(nbytes) == SizeClass.for_size(requested)
        if not ok:
            raise InvalidFree(
                f"wrong size: block 0x{ptr:x} was allocated with {requested} bytes, freed with {nbytes}",
                hint="pass the size used at allocation (or none)",
                details={"ptr": ptr, "allocated": requested, "freed_with": nbytes},
            )

    # -- maintenance --------------------------------------------------------------------
    def compact(self) -> int:
        """Return every slab whose blocks are all free, and every cached large block, to the
        device; returns the bytes released."""
        with self._lock:
            self._check_open("compact")
            self._drain()
            return self._release_cached()

    def diagnostics(self) -> PoolDiagnostics:
        """A snapshot (also after ``close()``: then ``closed`` is true and only blocks still in use count)."""
        with self._lock:
            self._drain()
            slabs_per = [0] * len(_CLASSES)
            for i, _ in self._slabs.values():
                slabs_per[i] += 1
            if self._closed:
                in_use = [0] * len(_CLASSES)
                for ptr in self._held:
                    k = self._block_class.get(ptr)  # None: a direct allocation
                    if k is not None:
                        in_use[k] += 1
                counts = [(u, 0) for u in in_use]
            else:
                counts = [(self._count[i] - len(self._free[i]), len(self._free[i])) for i in range(len(_CLASSES))]
            classes = tuple(
                ClassDiagnostics(c, counts[i][0], counts[i][1], slabs_per[i]) for i, c in enumerate(_CLASSES)
            )
            cached = self._large_cached_bytes
            n_cached = sum(len(st) for st in self._large_free.values())
            return PoolDiagnostics(
                classes=classes, large_allocations=len(self._large) - n_cached,
                large_bytes=sum(self._large.values()) - cached, cached_large_bytes=cached,
                hits=self._hits, misses=self._misses, pool_bytes=self._pool_bytes, peak_pool_bytes=self._peak_pool,
                live_bytes=self._live_bytes, peak_live_bytes=self._peak_live,
                live_block_bytes=sum(c.in_use_bytes for c in classes) + sum(self._large.values()) - cached,
                max_pool_bytes=self.config.max_pool_bytes, closed=self._closed,
            )  # fmt: skip

    def reset_peaks(self) -> None:
        """Start peak tracking and hit counting afresh (e.g. after warm-up)."""
        with self._lock:
            self._check_open("reset_peaks")
            self._drain()
            self._live_high = max(self._live_high, self._peak_live)  # the cache budget keeps the peak
            self._peak_pool, self._peak_live = self._pool_bytes, self._live_bytes
            self._misses = 0

    def __enter__(self) -> "GpuMemoryPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"closed, {len(self._held)} blocks still in use" if self._closed else f"{len(self._live)} blocks in use"
        return f"<GpuMemoryPool {self.backend.name}: {state}>"


def _large_bin(nbytes: int) -> int:
    """``nbytes`` rounded up to a quarter-power-of-two size (1, 1.25, 1.5, 1.75 x 2^k)."""
    k = (nbytes - 1).bit_length() - 3  # the step is 2^k: a quarter of the power of two below
    return (((nbytes - 1) >> k) + 1) << k if k > 0 else nbytes


def install_native_methods() -> bool:
    """Make ``GpuMemoryPool.allocate`` / ``deallocate`` the compiled module's (their hot paths
    in C: ringkernel/_native.c ``PoolMethod``) if it can be built; True when they are. Called by
    the first pool on a GPU (not at import: building the module writes to the cache
    directory), and by tests."""
    if GpuMemoryPool.__dict__["allocate"] is not GpuMemoryPool._allocate_py:
        return True
    from .. import native

    mod = native.load() if native.POOL else None
    if mod is None:
        return False
    GpuMemoryPool.allocate = mod.PoolMethod(0, PooledBuffer, tuple(_LIMITS))  # type: ignore[method-assign]
    GpuMemoryPool.deallocate = mod.PoolMethod(1, PooledBuffer, tuple(_LIMITS))  # type: ignore[method-assign]
    return True


def uninstall_native_methods() -> None:
    """Back to the Python methods (tests compare both)."""
    GpuMemoryPool.allocate = GpuMemoryPool._allocate_py  # type: ignore[method-assign]
    GpuMemoryPool.deallocate = GpuMemoryPool._deallocate_py  # type: ignore[method-assign]


class _PyLock:
    """``threading.Lock`` that knows its holder (the compiled ``PoolState`` does the same in C): a
    pool call that a finalizer makes on the thread already inside the pool is queued (a free)
    or refused (anything else) instead of waiting for ever."""

    __slots__ = ("_lock", "_owner")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        if blocking and self._owner == me:  # (only ever equal while this thread holds it)
            raise RuntimeError(_SELF_DEADLOCK)
        if not self._lock.acquire(blocking, timeout):
            return False
        self._owner = me
        return True

    def release(self) -> None:
        self._owner = 0
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def held_by_me(self) -> bool:
        return self._owner == threading.get_ident() and self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_SELF_DEADLOCK = (
    "this thread already holds the memory pool's lock: a pool call from a finalizer (__del__ or a weakref callback) "
    "that a garbage collection ran inside another pool call; free blocks there (they are queued), but do not "
    "allocate or close the pool from a finalizer"
)


class _PyState:
    """A pool's hot counters without the compiled module (its ``PoolState`` also is the lock)."""

    __slots__ = ("hits", "live_bytes", "peak_live", "large_room", "large_limit")

    def __init__(self) -> None:
        self.hits = self.live_bytes = self.peak_live = self.large_room = self.large_limit = 0


def _new_state() -> Any:
    if GpuMemoryPool.__dict__["allocate"] is not GpuMemoryPool._allocate_py:
        from .. import native

        mod = native.load()
        if mod is not None:
            return mod.PoolState()
    return _PyState()
