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

import functools
import logging
import math
import threading
import weakref
from bisect import bisect_left
from collections import deque
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigurationError, ErrorContext, InsufficientMemory, InvalidFree, MemorySnapshot, ResourceClosedError
from .array import DeviceArray, new_device_array
from .backend import MemoryBackend, default_backend
from .pool_config import _CLASSES, _INDEX, _LIMITS, ClassDiagnostics, PoolConfig, PoolDiagnostics, SizeClass, _class_index

__all__ = ["SizeClass", "PoolConfig", "PooledBuffer", "GpuMemoryPool", "PoolDiagnostics", "ClassDiagnostics"]

log = logging.getLogger(__name__)

class PooledBuffer:
    """A block from a :class:`GpuMemoryPool`: ``ptr``, ``nbytes`` requested, ``capacity``.

    ``as_array(shape, dtype)`` views it as a numba device array (any dtype and shape that
    fits). Free it with ``free()`` / ``pool.deallocate(buf)`` (a second free is refused as a
    double free), or ``close()`` / a ``with`` block (idempotent: a no-op once the block is
    freed). A buffer used after being freed is refused, never silently reused.

    While the pool is open, a buffer needs no finalizer of its own: the pool keeps every live
    buffer, so a buffer is never collected before its pool, and the pool's
    ``weakref.finalize`` releases the memory of the buffers it still holds (docs/memory.md,
    "Two lifetimes", says why buffers are not freed by the garbage collector). ``pool.close()``
    lets go of them: a buffer still in use then gets a ``weakref.finalize`` that returns its
    block when it is collected.
    """

    # __weakref__: close() tracks the buffers still alive by weak reference (nothing on the hot path)
    __slots__ = ("pool", "ptr", "nbytes", "_i", "__weakref__")

    def __init__(self, pool: "GpuMemoryPool", ptr: int, nbytes: int, class_index: int) -> None:
        self.pool = pool
        self.ptr = ptr
        self.nbytes = nbytes
        self._i = class_index  # index into the size classes; -1: a direct allocation

    @property
    def size_class(self) -> SizeClass | None:
        """The block's class; ``None`` for a direct allocation (> 256 KB, or a class at its limit)."""
        return _CLASSES[self._i] if self._i >= 0 else None

    @property
    def capacity(self) -> int:
        return _LIMITS[self._i] if self._i >= 0 else self.nbytes

    @property
    def closed(self) -> bool:
        """Whether the block was freed (or released by ``pool.close(force=True)``)."""
        return not self.pool._owns(self)

    def as_array(self, shape: int | Sequence[int], dtype: Any = np.uint8) -> Any:
        """A numba device array over this block (a view: freeing the block invalidates it).

        The view keeps this buffer, and so its pool, alive: the pool's memory cannot be
        released by the garbage collector while a view of it exists.
        """
        dt = np.dtype(dtype)
        shp = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        if any(s < 0 for s in shp):
            raise ConfigurationError(f"shape must be non-negative, got {shp}")
        need = int(np.prod(shp, dtype=np.int64)) * dt.itemsize
        if need > self.capacity:
            raise ConfigurationError(
                f"an array of shape {shp} and dtype {dt} needs {need} bytes; this block holds {self.capacity}",
                hint="allocate a larger buffer",
            )
        pool = self.pool
        pool._check_open("PooledBuffer.as_array")
        pool._check_live(self)
        # A no-op "finalizer" that holds the buffer: the array keeps it alive (as numba's
        # own arrays keep their allocation), but freeing stays explicit.
        return pool.backend.array(self.ptr, shp, dt, functools.partial(_keep_alive, self))

    def free(self) -> None:
        """Return the block to the pool; a second free raises :class:`InvalidFree` (see :meth:`close`)."""
        self.pool.deallocate(self)

    def close(self) -> None:
        """Return the block to the pool if this buffer still holds it (idempotent)."""
        self.pool._close_buffer(self)

    def __enter__(self) -> "PooledBuffer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = _CLASSES[self._i].name if self._i >= 0 else "direct"
        return f"<PooledBuffer 0x{self.ptr:x} {self.nbytes} B in {where}>"


def _keep_alive(buf: PooledBuffer) -> None:
    """The finalizer of an ``as_array`` view: nothing to do; holding ``buf`` is the point."""


class GpuMemoryPool:
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
        self._lock = threading.Lock()
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
        self._large_room = cap  # max_cached_large_bytes less the bytes cached now
        # The most bytes live at once in the pool's life (reset_peaks keeps it): what
        # large_cache_headroom is measured against
        self._live_high = 0
        self._hits = self._misses = 0
        self._pool_bytes = self._peak_pool = 0
        self._live_bytes = self._peak_live = 0  # bytes requested (blocks in use are counted on demand)
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

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -- allocation ---------------------------------------------------------------------
    def allocate(self, nbytes: int) -> PooledBuffer:
        """A block of at least ``nbytes`` (O(1) when its class, or its large bin, has a free block)."""
        if type(nbytes) is int and 0 < nbytes <= 262144:  # noqa: E721 - the hot path, inlined
            i = bisect_left(_LIMITS, nbytes)
        elif type(nbytes) is int and nbytes > 262144:  # noqa: E721
            i = -1
        else:
            i = _class_index(nbytes)
            nbytes = int(nbytes)
        lock = self._lock
        lock.acquire()  # acquire/release in try/finally: half the cost of `with` on the hot path
        try:
            stack = self._free[i]  # i == -1: the always-empty list; closed: every list is empty
            if stack:  # the hot path: a free block of the class
                self._hits += 1
                buf = PooledBuffer(self, stack.pop(), nbytes, i)
            elif i < 0 and nbytes <= self._large_limit:
                # above 256 KB: a cached block of the request's own bin, inlined like the class
                # path (close() empties the cache, so a closed pool finds none)
                k = (nbytes - 1).bit_length() - 3  # _large_bin: steps of 2^k
                size = (((nbytes - 1) >> k) + 1) << k
                cached = self._large_free.get(size)
                if cached:
                    self._hits += 1
                    self._large_room += size
                    buf = PooledBuffer(self, cached.pop(), nbytes, -1)  # the one freed last: warm
                else:
                    buf = self._allocate_slow(i, nbytes)
            else:
                buf = self._allocate_slow(i, nbytes)
            self._live[buf.ptr] = buf
            live = self._live_bytes = self._live_bytes + nbytes
            if live > self._peak_live:
                self._peak_live = live
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

    def _take_cached(self, size: int, stack: list[int]) -> int:
        self._hits += 1
        self._large_room += size
        return stack.pop()  # the one freed last: its cache lines may still be warm

    @property
    def max_cached_large_bytes(self) -> int:
        """Bytes of freed large blocks this pool keeps at most (``PoolConfig.max_cached_large_bytes``)."""
        return self._max_cached

    @property
    def _large_cached_bytes(self) -> int:
        return self._max_cached - self._large_room

    def _budget(self, requested: int) -> float:
        """The most the pool may hold because of cached blocks (lock held): ``1 +
        large_cache_headroom`` times the most bytes ever live at once, ``requested`` more
        included."""
        high = self._live_high = max(self._live_high, self._peak_live, self._live_bytes + requested)
        return high * (1.0 + self.config.large_cache_headroom)

    def _spill(self, want: int, requested: int) -> int:
        """A cached block larger than ``want`` when a new block would pass the budget (lock
        held); 0: none.

        Without it, sequential temporaries of different sizes (100 MiB, then 300 MiB, then
        100 MiB, ...) would give a block back and allocate another at every step: the pool
        cannot hold both within the budget. The smallest larger cached block serves instead,
        as long as the blocks in use stay within half the headroom above the most bytes ever
        live, so spilled blocks cannot crowd out the cache a random mix of sizes needs.
        """
        headroom = self.config.large_cache_headroom
        if headroom == math.inf or self._pool_bytes + want <= self._budget(requested):
            return 0
        size = min((s for s, st in self._large_free.items() if st and s > want), default=0)
        if not size:
            return 0
        free_small = sum(len(self._free[i]) * _LIMITS[i] for i in range(len(_CLASSES)))
        in_use = self._pool_bytes - self._large_cached_bytes - free_small
        if in_use + size > self._live_high * (1.0 + headroom / 2):
            return 0
        return self._take_cached(size, self._large_free[size])

    def _uncache(self, ptr: int, size: int) -> None:
        """Give a cached large block back to the device (lock held; already off its bin's list)."""
        del self._large_since[ptr]
        del self._large[ptr]
        self._pool_bytes -= size
        self._large_room += size
        self.backend.free(ptr)

    def _fit_budget(self, nbytes: int, requested: int) -> None:
        """Before the pool takes ``nbytes`` more from the device for a request of
        ``requested`` bytes (lock held): give back cached large blocks, lowest rank first,
        until the pool holds at most ``1 + large_cache_headroom`` times the most bytes ever
        live at once (this request included)."""
        if self._large_room == self._max_cached or self.config.large_cache_headroom == math.inf:
            return  # nothing cached, or no budget
        since = self._large_since
        over = self._pool_bytes + nbytes - self._budget(requested)
        while over > 0 and self._large_room != self._max_cached:
            # Each bin's list is oldest first, so its first block has the bin's lowest rank:
            # the lowest overall is the lowest of those (a few dozen bins at most).
            rank, size = min((since[st[0]] + 1048576 / s, s) for s, st in self._large_free.items() if st)
            ptr = self._large_free[size].pop(0)
            self._large_clock = rank
            self._uncache(ptr, size)
            over -= size

    def _release_cached(self) -> int:
        """Give cached large blocks and empty slabs back to the device (lock held); the bytes."""
        released = 0
        for size, stack in self._large_free.items():
            while stack:
                self._uncache(stack.pop(), size)
                released += size
        return released + self._compact_locked()

    def _direct(self, nbytes: int, *, why: str, requested: int = 0) -> int:
        """A new block of ``nbytes`` from the device, tracked as a direct allocation (lock held)."""
        try:
            self._fit_budget(nbytes, requested)
            self._reserve(nbytes)
            ptr = self.backend.alloc(nbytes)
        except InsufficientMemory:
            # Memory pressure: what this pool keeps for reuse goes back first, then one retry.
            released = self._release_cached()
            if not released:
                raise
            log.info("pool: released %d cached bytes to allocate %d", released, nbytes)
            self._reserve(nbytes)
            ptr = self.backend.alloc(nbytes)
        self._large[ptr] = nbytes
        self._pool_bytes += nbytes
        self._peak_pool = max(self._peak_pool, self._pool_bytes)
        self._misses += 1
        log.debug("pool: direct allocation of %d bytes (%s)", nbytes, why)
        return ptr

    def _reserve(self, nbytes: int) -> None:
        cap = self.config.max_pool_bytes
        if cap is not None and self._pool_bytes + nbytes > cap:
            raise InsufficientMemory(
                nbytes, cap - self._pool_bytes, what="pool capacity",
                hint=f"the pool holds {self._pool_bytes} of max_pool_bytes={cap}; free buffers, call compact(), "
                "or raise PoolConfig.max_pool_bytes",
                context=ErrorContext(f"GpuMemoryPool.allocate({nbytes} bytes)", memory=self._snapshot()),
            )  # fmt: skip

    def _snapshot(self) -> MemorySnapshot | None:
        """Device memory and this pool's share of it, for an error's context (``None`` if unknown)."""
        try:
            free, total = self.backend.mem_info()
        except Exception:  # noqa: BLE001 - an error is being raised already; no second one
            return None
        return MemorySnapshot(total - free, total, self._pool_bytes)

    def _grow(self, i: int, at_least: int) -> None:
        """Carve a new slab for class ``i`` with at least ``at_least`` blocks (lock held). Under
        memory pressure (the device or ``max_pool_bytes``) the cached large blocks and empty
        slabs go back first, then one retry, as for a large block (:meth:`_direct`)."""
        try:
            self._grow_once(i, at_least)
        except InsufficientMemory:
            released = self._release_cached()
            if not released:
                raise
            log.info("pool: released %d cached bytes to grow class %d", released, i)
            self._grow_once(i, at_least)

    def _grow_once(self, i: int, at_least: int) -> None:
        size = _CLASSES[i].value
        room = self.config.max_counts[i] - self._count[i]
        per_slab = max(at_least, self.config.slab_bytes // size)
        nblocks = max(1, min(per_slab, room))
        cap = self.config.max_pool_bytes
        if cap is not None:  # shrink the slab to what the cap allows, down to the blocks needed
            fit = (cap - self._pool_bytes) // size
            if fit < min(at_least, nblocks):
                self._reserve(size * min(at_least, nblocks))  # raises with the numbers
            nblocks = min(nblocks, fit)
        self._fit_budget(size * nblocks, 0)
        slab = self.backend.alloc(size * nblocks)
        blocks = tuple(slab + k * size for k in range(nblocks))
        self._slabs[slab] = (i, blocks)
        for b in blocks:
            self._block_slab[b] = slab
            self._block_class[b] = i
        # LIFO: the lowest address is handed out first
        self._free[i].extend(reversed(blocks))
        self._count[i] += nblocks
        self._pool_bytes += size * nblocks
        self._peak_pool = max(self._peak_pool, self._pool_bytes)

    def warm_bucket(self, size_class: SizeClass, count: int) -> None:
        """Make sure ``count`` blocks of ``size_class`` are free, allocating slabs now."""
        if not isinstance(size_class, SizeClass):
            raise ConfigurationError(f"warm_bucket takes a SizeClass, got {size_class!r}")
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
    def deallocate(self, buffer: PooledBuffer | int, nbytes: int | None = None) -> None:
        """Return a block. ``buffer`` is a :class:`PooledBuffer` or a raw pointer; ``nbytes``,
        if given, must match what was allocated (in the same size class).

        After :meth:`close`, freeing a block still in use returns it (its slab goes back to
        the device with its last such block); freeing a block the pool no longer holds is a
        no-op (a closed pool cannot tell a double free from a block it already released).
        """
        lock = self._lock
        if type(buffer) is PooledBuffer and nbytes is None:
            lock.acquire()
            try:
                i = buffer._i
                if i >= 0:  # the hot path, inlined: a pooled block, no size given
                    ptr = buffer.ptr
                    live = self._live.pop(ptr, None)  # closed: _live is empty, so this misses
                    if live is buffer:
                        self._live_bytes -= buffer.nbytes
                        self._free[i].append(ptr)
                        return
                    if live is not None:  # another buffer holds the block now: put it back
                        self._live[ptr] = live
                else:  # a block above the classes (a direct allocation), no size given
                    ptr = buffer.ptr
                    live = self._live.pop(ptr, None)
                    if live is buffer:
                        self._live_bytes -= buffer.nbytes
                        large = self._large[ptr]
                        stack = self._large_free.get(large)  # a bin cached before: cacheable
                        if stack is not None and large <= self._large_room:
                            stack.append(ptr)  # _return_large's common case, inlined
                            self._large_since[ptr] = self._large_clock
                            self._large_room -= large
                        else:
                            self._return_large(ptr, large)
                        return
                    if live is not None:
                        self._live[ptr] = live
            finally:
                lock.release()
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

    def _return_large(self, ptr: int, large: int) -> None:
        """A freed direct block of ``large`` bytes (lock held; already out of ``_live``):
        cached for the next request of its bin, or back to the device."""
        # Blocks in (256 KB, large_limit] are all bin sizes (made by _large_alloc); a class's
        # direct block (256 KB at most) is never asked for by a large request.
        if 262144 < large <= self._large_limit and large <= self._large_room:
            stack = self._large_free.get(large)
            if stack is None:
                stack = self._large_free[large] = []
            stack.append(ptr)  # kept for the next request
            self._large_since[ptr] = self._large_clock
            self._large_room -= large
            return
        del self._large[ptr]
        self._large_since.pop(ptr, None)
        self._pool_bytes -= large
        self.backend.free(ptr)

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

    def _free_held(self, ptr: int, buf: PooledBuffer | None, nbytes: int | None) -> None:
        """Free a block of a closed pool (lock held); ``buf`` None: by pointer, or its buffer was collected.

        A block no longer held (freed before close, released by ``close(force=True)``, or
        freed since) is a no-op: a closed pool has nothing else to give back.
        """
        entry = self._held.get(ptr)
        if entry is None:
            return
        fin, requested = entry
        if buf is not None:
            alive = fin.peek()
            if alive is None or alive[0] is not buf:
                return  # a stale buffer object: the block is not its to free
        if nbytes is not None:
            self._check_size(ptr, requested, nbytes)
        fin.detach()
        del self._held[ptr]
        self._live_bytes -= requested
        large = self._large.pop(ptr, None)
        if large is not None:
            self._pool_bytes -= large
            self.backend.free(ptr)
        else:  # the slab goes back to the device with the last of its blocks in use
            slab = self._block_slab[ptr]
            left = self._slab_held[slab] - 1
            if left:
                self._slab_held[slab] = left
            else:
                del self._slab_held[slab]
                self._free_slab(slab)
        if not self._held:
            self._finalizer()  # everything is back; nothing is left for it to free

    def _close_buffer(self, buf: PooledBuffer) -> None:
        """``PooledBuffer.close``: free the block if ``buf`` still holds it, else nothing."""
        with self._lock:
            if self._owns(buf):
                self._free_locked(buf.ptr, buf, None)
            self._drain()

    def _owns(self, buf: PooledBuffer) -> bool:
        if not self._closed:
            return self._live.get(buf.ptr) is buf
        entry = self._held.get(buf.ptr)
        alive = entry[0].peek() if entry is not None else None
        return alive is not None and alive[0] is buf

    def _release(self, item: PooledBuffer | int) -> None:
        """Finalizer of arrays from :meth:`device_array` and the numba plugin (``item``: the
        array's buffer) and, after ``close()``, of buffers still in use (``item``: the
        pointer; the buffer is gone). Never waits, never raises.

        The garbage collector runs finalizers on whichever thread allocated when it
        triggered, which may be a thread inside ``allocate`` holding this pool's lock.
        Waiting for the lock there would wait forever; so the block goes on the pending list
        and is returned now only if the lock can be had without waiting.
        """
        lock = self._lock
        if lock.acquire(False):
            try:
                # the common case inlined, as in deallocate: a block of an open pool
                if type(item) is PooledBuffer and self._live.get(item.ptr) is item:
                    ptr, i = item.ptr, item._i
                    del self._live[ptr]
                    self._live_bytes -= item.nbytes
                    if i >= 0:
                        self._free[i].append(ptr)
                    else:
                        large = self._large.get(ptr)
                        if large is not None:  # None: the pool's own finalizer released it (a
                            try:  # cycle of pool and arrays collected together)
                                self._return_large(ptr, large)
                            except Exception as exc:  # pragma: no cover - the driver refused a free
                                log.error("pool: automatic release of 0x%x failed: %s", ptr, exc)
                else:
                    self._pending.append(item)
                if self._pending:
                    self._drain()
            finally:
                lock.release()
            return
        self._pending.append(item)
        if lock.acquire(False):  # the holder may have let go since: drain now rather than later
            try:
                self._drain()
            finally:
                lock.release()

    def _drain(self) -> None:
        """Return the blocks of collected arrays and buffers (lock held). Never raises."""
        pending = self._pending
        while pending:
            item = pending.popleft()
            try:
                if isinstance(item, PooledBuffer):
                    self._free_locked(item.ptr, item, None)
                else:  # the pointer of a closed pool's buffer that was collected
                    self._free_held(item, None, None)
            except Exception as exc:  # pragma: no cover - a bug, not a user error
                ptr = item.ptr if isinstance(item, PooledBuffer) else item
                log.error("pool: automatic release of 0x%x failed: %s", ptr, exc)

    def _check_live(self, buf: PooledBuffer) -> None:
        if self._live.get(buf.ptr) is not buf:
            raise InvalidFree(f"buffer 0x{buf.ptr:x} was freed; it cannot be used", hint="allocate a new one")

    # -- maintenance --------------------------------------------------------------------
    def compact(self) -> int:
        """Return every slab whose blocks are all free, and every cached large block, to the
        device; returns the bytes released."""
        with self._lock:
            self._check_open("compact")
            self._drain()
            return self._release_cached()

    def _compact_locked(self) -> int:
        # free blocks per slab, counted now: keeping the count on every allocate and free
        # would tax the hot paths for the sake of this rare call
        released = 0
        free_in: dict[int, int] = {}
        for stack in self._free:
            for b in stack:
                s = self._block_slab[b]
                free_in[s] = free_in.get(s, 0) + 1
        empty = [s for s, (i, blocks) in self._slabs.items() if free_in.get(s, 0) == len(blocks)]
        if not empty:
            return 0
        gone: set[int] = set()
        for slab in empty:
            gone.update(self._slabs[slab][1])
            released += self._free_slab(slab)
        for i, stack in enumerate(self._free):
            if any(b in gone for b in stack):
                self._free[i] = [b for b in stack if b not in gone]
        return released

    def _free_slab(self, slab: int) -> int:
        """Forget a slab and its blocks and return it to the device (lock held); its bytes."""
        i, blocks = self._slabs.pop(slab)
        for b in blocks:
            del self._block_slab[b]
            del self._block_class[b]
        size = _CLASSES[i].value * len(blocks)
        self._count[i] -= len(blocks)
        self._pool_bytes -= size
        self.backend.free(slab)
        return size

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
            self._hits = self._misses = 0

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise ResourceClosedError(
                "GpuMemoryPool", operation=operation,
                hint="create a new GpuMemoryPool (blocks handed out before close() stay valid until freed)",
            )  # fmt: skip

    # -- lifetime -----------------------------------------------------------------------
    def close(self, *, force: bool = False) -> None:
        """End the pool (idempotent): it hands nothing out any more.

        Memory no live object refers to goes back to the device now: free blocks, and blocks
        of buffers that were never freed but that nothing holds any more. A block still in
        use (a live :meth:`device_array` array or numba array, a buffer still referenced, or
        a view of one) keeps its slab until that block is freed or its owner is collected,
        so no array points at released memory; ``diagnostics()`` shows what is still held.
        ``force=True`` releases everything now, blocks in use included (arrays still
        pointing into the pool must then not be used), also on a pool closed before.
        """
        with self._lock:
            if self._closed and not (force and self._held):
                return
            self._drain()
            if not self._closed:
                self._closed = True
                for size, stack in self._large_free.items():  # cached large blocks: nobody holds them
                    for ptr in stack:
                        self._large.pop(ptr, None)
                        self._pool_bytes -= size
                        try:
                            self.backend.free(ptr)
                        except Exception as exc:  # the context may be gone at exit
                            log.warning("pool: releasing cached block 0x%x at close failed: %s", ptr, exc)
                    stack.clear()
                self._large_since.clear()
                self._large_room = self._max_cached
                live, self._live = self._live, {}
                for stack in self._free:
                    stack.clear()
                if not force:
                    for ptr in live:
                        fin = weakref.finalize(live[ptr], self._release, ptr)
                        fin.atexit = False  # at exit the pool's own finalizer frees everything
                        self._held[ptr] = (fin, live[ptr].nbytes)
                        slab = self._block_slab.get(ptr)
                        if slab is not None:
                            self._slab_held[slab] = self._slab_held.get(slab, 0) + 1
                # Buffers only the pool referred to die here; their finalizers queue their
                # blocks (the lock is ours, so they cannot drain), and _drain returns them.
                live.clear()
                self._drain()
            if force or not self._held:
                for fin, _ in self._held.values():
                    fin.detach()
                self._held.clear()
                self._slab_held.clear()
                self._block_slab.clear()
                self._block_class.clear()
                self._count = [0] * len(_CLASSES)
                self._live_bytes = self._pool_bytes = 0
                self._finalizer()  # every slab and direct allocation, now
                return
            for slab in [s for s in self._slabs if s not in self._slab_held]:
                try:
                    self._free_slab(slab)
                except Exception as exc:  # the context may be gone at exit; the pool is closed regardless
                    log.warning("pool: releasing slab 0x%x at close failed: %s", slab, exc)
            log.debug("pool: closed with %d blocks in use; each is released when freed or collected", len(self._held))

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


def _release_all(backend: MemoryBackend, slabs: dict[int, Any], large: dict[int, int]) -> None:
    """The pool's ``weakref.finalize``: free every slab and direct allocation. Never raises."""
    for ptr in list(slabs) + list(large):
        try:
            backend.free(ptr)
        except Exception:  # the context may be gone at exit
            pass
    slabs.clear()
    large.clear()
