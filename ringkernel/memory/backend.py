"""Where pool memory comes from: the CUDA driver on a GPU, host bytes on the simulator.

A backend allocates and frees raw blocks by integer address and turns a range of one into
a numba device array. The simulator backend hands out synthetic addresses backed by NumPy
byte arrays, so the pool's logic (and its tests) is the same on both.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from typing import Any, Callable, Protocol

import numpy as np

from .. import driver
from .._layout import c_strides
from .._layout import span as _span
from ..errors import DriverError, ErrorContext, InsufficientMemory, InvalidFree, MemorySnapshot
from ..config import ensure_numba_cuda

__all__ = ["MemoryBackend", "DriverBackend", "SimulatorBackend", "default_backend"]


class MemoryBackend(Protocol):
    """What a :class:`~ringkernel.memory.GpuMemoryPool` needs from device memory."""

    name: str

    def alloc(self, nbytes: int) -> int: ...

    def free(self, ptr: int) -> None: ...

    # ``finalizer`` runs once, when the array and every view of it are gone; it may run
    # inside the garbage collector, on any thread, so it must never wait for a lock.
    def array(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype, finalizer: Callable[[], None] | None) -> Any: ...

    def mem_info(self) -> tuple[int, int]: ...

    # What a DeviceArray (``pool.device_array``) needs: copies by address (``host`` is a
    # C-contiguous NumPy array; ``stream`` a numba stream, or None/0 for a synchronous
    # copy), and a numba array over a range that keeps ``owner`` alive.
    def copy_to_host(self, host: np.ndarray, src: int, nbytes: int, stream: Any = None) -> None: ...

    def copy_to_device(self, dst: int, host: np.ndarray, nbytes: int, stream: Any = None) -> None: ...

    def copy_device(self, dst: int, src: int, nbytes: int, stream: Any = None) -> None: ...

    def synchronize(self, stream: Any = None) -> None: ...

    def numba_array(
        self, ptr: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: np.dtype, owner: Any
    ) -> Any: ...


def _host_address(host: np.ndarray) -> int:
    return int(host.__array_interface__["data"][0])


def _hold(owner: Any) -> None:
    """The finalizer of a simulator view: nothing to do; holding ``owner`` is the point."""


class DriverBackend:
    """``cuMemAlloc`` / ``cuMemFree`` in numba's current context; arrays are numba ``DeviceNDArray``."""

    name = "cuda"

    def __init__(self, context: Any = None) -> None:
        if context is None:
            from numba import cuda

            context = cuda.current_context()
        self._ctx = context  # numba's Context: arrays made here belong to it
        driver.lib()

    def _current(self, exc: DriverError) -> None:
        """Re-raise ``exc`` unless it says no context is current on this thread; then make the
        pool's current (numba makes its context current on a thread's first use of numba; a
        pool call may be a thread's first use of CUDA)."""
        if exc.result != driver.CUDA_ERROR_INVALID_CONTEXT:
            raise exc
        self._ctx.push()

    def alloc(self, nbytes: int) -> int:
        try:
            try:
                return driver.mem_alloc(nbytes)
            except DriverError as exc:
                self._current(exc)
                return driver.mem_alloc(nbytes)
        except DriverError as exc:
            if exc.result != driver.CUDA_ERROR_OUT_OF_MEMORY:
                raise
            try:
                free, total = driver.mem_get_info()
                snapshot: MemorySnapshot | None = MemorySnapshot(total - free, total)
            except DriverError:
                free, snapshot = 0, None
            raise InsufficientMemory(
                nbytes, free,
                hint="free memory (pool.compact(), drop arrays), use a smaller problem, or lower "
                "PoolConfig.max_pool_bytes so that the pool keeps less cached",
                context=ErrorContext(f"cuMemAlloc({nbytes} bytes)", memory=snapshot),
            ) from exc  # fmt: skip

    def free(self, ptr: int) -> None:
        try:
            try:
                driver.mem_free(ptr)
            except DriverError as exc:
                self._current(exc)
                driver.mem_free(ptr)
        except DriverError as exc:
            if exc.result not in (driver.CUDA_ERROR_DEINITIALIZED, driver.CUDA_ERROR_CONTEXT_IS_DESTROYED):
                raise  # at interpreter exit the context goes first: nothing left to free then

    def array(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype, finalizer: Callable[[], None] | None) -> Any:
        ensure_numba_cuda()
        from numba.cuda.cudadrv.devicearray import DeviceNDArray
        from numba.cuda.cudadrv.driver import MemoryPointer

        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        mem = MemoryPointer(self._ctx, ctypes.c_void_p(ptr), nbytes, finalizer=finalizer)
        return DeviceNDArray(shape, c_strides(shape, dtype.itemsize), dtype, gpu_data=mem)

    def _copy(self, copy: Callable[[int, int, int, int], None], dst: int, src: int, nbytes: int, stream: Any) -> None:
        handle = driver.stream_handle(stream)
        try:
            copy(dst, src, nbytes, handle)
        except DriverError as exc:
            self._current(exc)  # a thread's first use of CUDA: the pool's context made current
            copy(dst, src, nbytes, handle)

    def copy_to_host(self, host: np.ndarray, src: int, nbytes: int, stream: Any = None) -> None:
        if nbytes:
            self._copy(driver.memcpy_dtoh, _host_address(host), src, nbytes, stream)

    def copy_to_device(self, dst: int, host: np.ndarray, nbytes: int, stream: Any = None) -> None:
        if nbytes:
            self._copy(driver.memcpy_htod, dst, _host_address(host), nbytes, stream)

    def copy_device(self, dst: int, src: int, nbytes: int, stream: Any = None) -> None:
        if nbytes:
            self._copy(driver.memcpy_dtod, dst, src, nbytes, stream)

    def synchronize(self, stream: Any = None) -> None:
        handle = driver.stream_handle(stream)
        if handle:  # copies without a stream are synchronous already
            driver.stream_synchronize(handle)

    def numba_array(
        self, ptr: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: np.dtype, owner: Any
    ) -> Any:
        ensure_numba_cuda()
        from numba.cuda.cudadrv.devicearray import DeviceNDArray
        from numba.cuda.cudadrv.driver import MemoryPointer

        lo, hi = _span(shape, strides, dtype.itemsize)
        # ``owner``: the memory pointer, and so every numba view of the array, holds it.
        mem = MemoryPointer(self._ctx, ctypes.c_void_p(ptr), hi - lo, owner=owner)
        return DeviceNDArray(shape, strides, dtype, gpu_data=mem)

    def mem_info(self) -> tuple[int, int]:
        return driver.mem_get_info()


class SimulatorBackend:
    """Host memory with synthetic device addresses, for numba's CUDA simulator."""

    name = "cuda-simulator"
    _BASE = 0x7F00_0000_0000

    def __init__(self, total_bytes: int = 1 << 34) -> None:
        self._blocks: dict[int, np.ndarray] = {}
        self._next = itertools.count()
        # Reentrant: a pool's finalizer may free a block from inside the garbage collector,
        # which can run on a thread that is in alloc() or free() already.
        self._lock = threading.RLock()
        self.total_bytes = total_bytes
        self.allocated_bytes = 0

    def alloc(self, nbytes: int) -> int:
        with self._lock:
            if self.allocated_bytes + nbytes > self.total_bytes:
                raise InsufficientMemory(
                    nbytes, self.total_bytes - self.allocated_bytes, what="simulated device memory",
                    hint="free memory, or give SimulatorBackend a larger total_bytes",
                )  # fmt: skip
            # 1 TiB apart: addresses of different allocations never overlap
            ptr = self._BASE + next(self._next) * (1 << 40)
            self._blocks[ptr] = np.zeros(nbytes, dtype=np.uint8)
            self.allocated_bytes += nbytes
            return ptr

    def free(self, ptr: int) -> None:
        with self._lock:
            block = self._blocks.pop(ptr, None)
            if block is None:
                raise InvalidFree(
                    f"simulated device pointer 0x{ptr:x} is not allocated (freed already, or never allocated)",
                    hint="free each allocation once, with the backend that made it",
                    details={"ptr": ptr},
                )
            self.allocated_bytes -= block.size

    def _bytes(self, ptr: int, nbytes: int) -> np.ndarray:
        base = ptr - (ptr - self._BASE) % (1 << 40)
        start = ptr - base
        return self._blocks[base][start : start + nbytes]

    def array(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype, finalizer: Callable[[], None] | None) -> Any:
        import weakref

        ensure_numba_cuda()
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        # An array of our own over the bytes (through a memoryview, so NumPy does not look
        # through it to the slab): every slice, view or reshape of the result keeps it alive,
        # so the finalizer runs when the last of them is gone, as with numba's device memory.
        owner = np.frombuffer(self._bytes(ptr, nbytes).data, dtype=dtype)
        if finalizer is not None:
            weakref.finalize(owner, finalizer)
        return FakeCUDAArray(owner.reshape(shape))

    def _range(self, ptr: int, nbytes: int) -> np.ndarray:
        """The simulated bytes ``[ptr, ptr + nbytes)``; a freed or foreign range is refused."""
        base = ptr - (ptr - self._BASE) % (1 << 40)
        block = self._blocks.get(base)
        start = ptr - base
        if block is None or start + nbytes > block.size:
            raise InvalidFree(
                f"simulated device range 0x{ptr:x} + {nbytes} bytes is not allocated (freed, e.g. by "
                "pool.close(force=True), or never allocated)",
                hint="use arrays only while their memory is allocated",
                details={"ptr": ptr, "nbytes": nbytes},
            )
        return block[start : start + nbytes]

    def copy_to_host(self, host: np.ndarray, src: int, nbytes: int, stream: Any = None) -> None:
        if nbytes:
            host.reshape(-1).view(np.uint8)[:nbytes] = self._range(src, nbytes)

    def copy_to_device(self, dst: int, host: np.ndarray, nbytes: int, stream: Any = None) -> None:
        if nbytes:
            self._range(dst, nbytes)[:] = host.reshape(-1).view(np.uint8)[:nbytes]

    def copy_device(self, dst: int, src: int, nbytes: int, stream: Any = None) -> None:
        if nbytes:
            self._range(dst, nbytes)[:] = self._range(src, nbytes)  # overlapping ranges: NumPy copies safely

    def synchronize(self, stream: Any = None) -> None:
        pass  # simulated copies and kernels are done when their call returns

    def numba_array(
        self, ptr: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: np.dtype, owner: Any
    ) -> Any:
        import weakref

        ensure_numba_cuda()
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        lo, hi = _span(shape, strides, dtype.itemsize)
        # An array of our own over the bytes (through a memoryview, as in array()), whose
        # finalizer holds ``owner``: every slice or view of the result keeps ``owner`` alive.
        root = np.frombuffer(self._range(ptr + lo, hi - lo).data, dtype=np.uint8) if hi > lo else np.empty(0, np.uint8)
        weakref.finalize(root, _hold, owner)
        return FakeCUDAArray(np.ndarray(shape, dtype, buffer=root, offset=-lo, strides=strides))

    def mem_info(self) -> tuple[int, int]:
        return self.total_bytes - self.allocated_bytes, self.total_bytes


def default_backend() -> MemoryBackend:
    """The driver on a GPU, host memory under the simulator.

    Raises :class:`~ringkernel.errors.DeviceError` when the GPU was chosen and is not usable
    (see :func:`ringkernel.config.require_backend`).
    """
    from ..config import require_backend

    if require_backend():
        return SimulatorBackend()
    return DriverBackend()
