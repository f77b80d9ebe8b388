"""``PooledBuffer``: the handle to one block of a ``GpuMemoryPool``."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import ConfigurationError
from .pool_config import _CLASSES, _LIMITS, SizeClass

if TYPE_CHECKING:
    from .pool import GpuMemoryPool

__all__ = ["PooledBuffer"]


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
    # _held: set (to True) when a DeviceArray owns the block (pool.device_array): a raw-pointer
    # deallocate of it is refused; unset otherwise (read with getattr, off the hot path)
    __slots__ = ("pool", "ptr", "nbytes", "_i", "_held", "__weakref__")
    _held: bool

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
