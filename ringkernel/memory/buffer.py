"""``ManagedBuffer``: a device array with a pinned host shadow that copies only what changed.

``write(data)`` updates the host shadow and starts an asynchronous host-to-device copy (the
shadow is pinned, so the copy overlaps host work). ``read()`` returns the host shadow,
copying it back from the device only when the device side may have changed since the last
copy: after ``device`` or ``__cuda_array_interface__`` handed the array to a kernel, or
``mark_device_dirty()``. ``device_view(readonly=True)`` hands it out for reading only, so a
later ``read()`` does not copy.

``close()`` (or a ``with`` block, or ``weakref.finalize`` when the buffer is collected)
waits for a copy still reading the pinned shadow, then drops both sides.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigurationError, KernelArgumentError, ResourceClosedError

__all__ = ["ManagedBuffer"]

log = logging.getLogger(__name__)


class _Sides:
    """What a :class:`ManagedBuffer` holds, shared with its finalizer (which must not hold the buffer)."""

    __slots__ = ("host", "device", "stream", "pending_h2d")

    def __init__(self, stream: Any) -> None:
        self.host: Any = None  # pinned host shadow
        self.device: Any = None  # device array (numba's, or a pool's)
        self.stream = stream  # 0: the default stream
        self.pending_h2d = False  # a host-to-device copy may still be reading the shadow


def _synchronize(stream: Any) -> None:
    if stream == 0:
        from numba import cuda

        cuda.synchronize()
    else:
        stream.synchronize()


def _release_sides(sides: _Sides) -> None:
    """The finalizer: wait for a copy still reading the pinned shadow, then drop both sides.

    Dropping them returns their memory through their own finalizers (a pooled device side
    to its pool, without waiting for the pool's lock). Never raises.
    """
    try:
        if sides.pending_h2d:
            sides.pending_h2d = False
            _synchronize(sides.stream)
    except Exception as exc:  # the context may be gone at exit
        log.debug("ManagedBuffer: synchronizing before release failed: %s", exc)
    finally:
        sides.host = sides.device = None


class ManagedBuffer:
    """Device array + pinned host shadow with dirty tracking.

    Parameters
    ----------
    shape, dtype:
        Of both sides.
    pool:
        A :class:`~ringkernel.memory.GpuMemoryPool` to take the device side from (default:
        numba's allocator).
    stream:
        numba stream for the copies (default: the default stream).
    data:
        Initial contents (copied to both sides).
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        dtype: Any = np.float32,
        *,
        pool: Any = None,
        stream: Any = None,
        data: Any = None,
    ) -> None:
        from ..config import require_backend

        require_backend()  # a clear error, not numba's, when the GPU was chosen and there is none
        from numba import cuda

        self.shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        if any(s < 0 for s in self.shape):
            raise ConfigurationError(f"ManagedBuffer shape must be non-negative, got {self.shape}")
        self.dtype = np.dtype(dtype)
        self._stream: Any = stream if stream is not None else 0
        self._sides = sides = _Sides(self._stream)
        self._closed = False
        self._finalizer = weakref.finalize(self, _release_sides, sides)
        sides.host = cuda.pinned_array(self.shape, dtype=self.dtype)
        sides.device = pool.device_array(self.shape, self.dtype) if pool is not None else cuda.device_array(self.shape, self.dtype)
        self._device_dirty = False  # device may hold data the host shadow lacks
        self._lock = threading.Lock()
        self.h2d_copies = 0
        self.d2h_copies = 0
        if data is not None:
            self.write(data)
        else:
            self._sides.host[...] = 0
            self._copy_h2d()

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    # -- host side ------------------------------------------------------------------------
    def write(self, data: Any) -> None:
        """Copy ``data`` into the host shadow and start copying it to the device."""
        arr = np.asarray(data)
        if arr.shape != self.shape and not (arr.ndim == 1 and arr.size == int(np.prod(self.shape))):
            raise KernelArgumentError(
                f"write() got shape {arr.shape}, the buffer is {self.shape}",
                kernel_name="ManagedBuffer.write",
                hint="write data of the buffer's shape (or a flat array of as many elements)",
            )
        if not np.can_cast(arr.dtype, self.dtype, casting="same_kind"):
            raise KernelArgumentError(
                f"write() got dtype {arr.dtype}, the buffer holds {self.dtype}",
                kernel_name="ManagedBuffer.write",
                hint=f"convert first: data.astype(np.{self.dtype.name})",
            )
        if not np.can_cast(arr.dtype, self.dtype, casting="safe"):
            # a narrowing cast: refused where a value would change (an int that wraps, a finite
            # float that becomes inf), as DeviceArray.copy_to_device refuses it; a float's lost
            # precision is what a narrower float is for
            from .array import cast_checked

            if cast_checked(arr, self.dtype)[1]:
                raise KernelArgumentError(
                    f"write() got values of {arr.dtype} that {self.dtype} cannot hold (they would wrap or overflow)",
                    kernel_name="ManagedBuffer.write",
                    hint=f"write values in {self.dtype}'s range, or use a wider buffer",
                )
        with self._lock:
            self._check_open("write")
            self._wait_h2d()  # do not overwrite the shadow while a copy reads it
            self._sides.host[...] = arr.reshape(self.shape)
            self._copy_h2d()
            self._device_dirty = False

    def read(self) -> np.ndarray:
        """The contents, as a read-only view of the host shadow (copied back only if the device changed)."""
        with self._lock:
            self._check_open("read")
            sides = self._sides
            if self._device_dirty:
                sides.device.copy_to_host(sides.host, stream=self._stream)
                _synchronize(self._stream)
                self.d2h_copies += 1
                self._device_dirty = False
            else:
                self._wait_h2d()
            view = sides.host.view()
            view.flags.writeable = False
            return view

    # -- device side ----------------------------------------------------------------------
    def device_view(self, *, readonly: bool = False) -> Any:
        """The device array for kernels. Unless ``readonly``, the next ``read()`` copies back."""
        with self._lock:
            self._check_open("device_view")
            if not readonly:
                self._device_dirty = True
            return self._sides.device

    @property
    def device(self) -> Any:
        """The device array (marks the device side as possibly changed)."""
        return self.device_view()

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        # Passing the buffer to a kernel hands out the device side for writing.
        return self.device_view().__cuda_array_interface__

    def mark_device_dirty(self) -> None:
        """Declare that device code changed the data (the next ``read()`` copies back)."""
        self._check_open("mark_device_dirty")
        self._device_dirty = True

    # -- internals ------------------------------------------------------------------------
    def _copy_h2d(self) -> None:
        sides = self._sides
        sides.device.copy_to_device(sides.host, stream=self._stream)
        self.h2d_copies += 1
        sides.pending_h2d = self._stream != 0

    def _wait_h2d(self) -> None:
        if self._sides.pending_h2d:
            _synchronize(self._stream)
            self._sides.pending_h2d = False

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise ResourceClosedError(
                "ManagedBuffer", operation=operation, hint="create a new ManagedBuffer (its contents went with close())"
            )

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Drop both sides (idempotent), after waiting for a copy still reading the host shadow.

        Pooled device memory returns to its pool. Every later method except ``close``
        raises :class:`~ringkernel.errors.ResourceClosedError`.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._wait_h2d()  # a failing synchronize is reported, and the buffer is closed regardless
            finally:
                self._finalizer()

    def __enter__(self) -> "ManagedBuffer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("device newer" if self._device_dirty else "in sync")
        return f"<ManagedBuffer {self.dtype}{list(self.shape)} {state}>"
