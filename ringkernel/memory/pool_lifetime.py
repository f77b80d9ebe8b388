"""How a ``GpuMemoryPool`` ends: ``close()``, blocks still in use after it, and blocks returned by the collector."""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from ..errors import InvalidFree, ResourceClosedError
from .backend import MemoryBackend
from .pool_buffer import PooledBuffer
from .pool_config import _CLASSES
from .pool_growth import _PoolGrowth

# GpuMemoryPool's logger, whichever of its modules logs: one name to configure
log = logging.getLogger("ringkernel.memory.pool")


class _PoolLifetime(_PoolGrowth):
    """``GpuMemoryPool``'s lifetime: ``close()`` and the blocks it leaves in use, the
    finalizers' lock-free pending list and its draining (see the ``pool`` module docstring)."""

    # The pool's state these work on (besides _PoolGrowth's), set in GpuMemoryPool.__init__
    _lock: Any
    _live: dict[int, PooledBuffer]
    _closed: bool
    _held: dict[int, tuple[weakref.finalize, int]]
    _slab_held: dict[int, int]
    _pending: deque[PooledBuffer | int]
    _finalizer: weakref.finalize

    if TYPE_CHECKING:  # GpuMemoryPool's checked free path (pool.py), which these call back into
        def _free_locked(self, ptr: int, buf: PooledBuffer | None, nbytes: int | None) -> None: ...
        def _check_size(self, ptr: int, requested: int, nbytes: int) -> None: ...

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

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
        else:
            alive = fin.peek()
            if alive is not None and getattr(alive[0], "_held", False):
                raise InvalidFree(
                    f"block 0x{ptr:x} belongs to an array (a DeviceArray from pool.device_array, a queue's arrays, or "
                    "a numba array of the allocator plugin): freeing it by pointer would free it under the array",
                    hint="drop the array and its views (del a; a queue: close it and drop its device_args()): the "
                    "block is freed when they are collected",
                    details={"ptr": ptr},
                )
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
        if self._lock.held_by_me():  # a finalizer inside this pool's own call (see deallocate)
            if self._owns(buf):
                self._pending.append(buf)
            return
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


def _release_all(backend: MemoryBackend, slabs: dict[int, Any], large: dict[int, int]) -> None:
    """The pool's ``weakref.finalize``: free every slab and direct allocation. Never raises."""
    for ptr in list(slabs) + list(large):
        try:
            backend.free(ptr)
        except Exception:  # the context may be gone at exit
            pass
    slabs.clear()
    large.clear()
