"""Where a ``GpuMemoryPool``'s memory comes from and goes back: slabs, the large-block cache, memory pressure."""

from __future__ import annotations

import logging
import math

from ..errors import ErrorContext, InsufficientMemory, MemorySnapshot
from .backend import MemoryBackend
from .pool_config import _CLASSES, _LIMITS, PoolConfig

# GpuMemoryPool's logger, whichever of its modules logs: one name to configure
log = logging.getLogger("ringkernel.memory.pool")


class _PoolGrowth:
    """``GpuMemoryPool``'s slabs and blocks above 256 KB: carving slabs for the size classes
    and giving empty ones back, caching freed large blocks within their budget, direct
    allocations, and what goes back to the device under memory pressure. Every method but
    ``max_cached_large_bytes`` runs with the pool's lock held."""

    # The pool's state these work on, set (and described) in GpuMemoryPool.__init__
    config: PoolConfig
    backend: MemoryBackend
    _free: list[list[int]]
    _count: list[int]
    _block_class: dict[int, int]
    _block_slab: dict[int, int]
    _slabs: dict[int, tuple[int, tuple[int, ...]]]
    _large: dict[int, int]
    _large_free: dict[int, list[int]]
    _large_since: dict[int, float]
    _large_clock: float
    _large_limit: int
    _large_room: int
    _max_cached: int
    _live_high: int
    _hits: int
    _misses: int
    _pool_bytes: int
    _peak_pool: int
    _live_bytes: int
    _peak_live: int

    # -- size classes: slabs ------------------------------------------------------------
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

    # -- blocks above 256 KB: the cache and its budget ----------------------------------
    def _take_cached(self, size: int, stack: list[int]) -> int:
        self._hits += 1
        self._large_room += size
        return stack.pop()  # the one freed last: its cache lines may still be warm

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
        # (the request counts for this decision only: kept, a refused 10 GiB request lifted the
        # budget for good and the cache grew past it; an adversarial trial. An allocation that
        # succeeds raises the peak, which is kept.)
        self._live_high = max(self._live_high, self._peak_live)
        high = max(self._live_high, self._live_bytes + requested)
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

    # -- new memory from the device; memory pressure ------------------------------------
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

    def _release_cached(self) -> int:
        """Give cached large blocks and empty slabs back to the device (lock held); the bytes."""
        released = 0
        for size, stack in self._large_free.items():
            while stack:
                self._uncache(stack.pop(), size)
                released += size
        return released + self._compact_locked()
