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

from ..errors import DeviceError

__all__ = ["MemoryBackend", "DriverBackend", "SimulatorBackend", "default_backend"]


class MemoryBackend(Protocol):
    """What a :class:`~ringkernel.memory.GpuMemoryPool` needs from device memory."""

    name: str

    def alloc(self, nbytes: int) -> int: ...

    def free(self, ptr: int) -> None: ...

    def array(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype, finalizer: Callable[[], None] | None) -> Any: ...

    def mem_info(self) -> tuple[int, int]: ...


class DriverBackend:
    """``cuMemAlloc`` / ``cuMemFree`` in numba's current context; arrays are numba ``DeviceNDArray``."""

    name = "cuda"

    def __init__(self, context: Any = None) -> None:
        from ..compile.launcher import _driver

        if context is None:
            from numba import cuda

            context = cuda.current_context()
        self._ctx = context  # numba's Context: arrays made here belong to it
        self._lib = _driver()

    def alloc(self, nbytes: int) -> int:
        ptr = ctypes.c_uint64()
        rc = self._lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(nbytes))
        if rc:
            from ..compile.launcher import driver_error_name

            raise DeviceError(
                f"cuMemAlloc of {nbytes} bytes failed: {driver_error_name(rc)}",
                hint="free memory (pool.compact(), drop arrays) or lower PoolConfig.max_pool_bytes",
                details={"bytes": nbytes, "code": rc},
            )
        return int(ptr.value)

    def free(self, ptr: int) -> None:
        self._lib.cuMemFree_v2(ctypes.c_uint64(ptr))

    def array(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype, finalizer: Callable[[], None] | None) -> Any:
        from numba.cuda.cudadrv.devicearray import DeviceNDArray
        from numba.cuda.cudadrv.driver import MemoryPointer

        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        mem = MemoryPointer(self._ctx, ctypes.c_void_p(ptr), nbytes, finalizer=finalizer)
        from ..compile.launcher import _strides_c

        strides = _strides_c(shape, dtype.itemsize)
        return DeviceNDArray(shape, strides, dtype, gpu_data=mem)

    def mem_info(self) -> tuple[int, int]:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        rc = self._lib.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total))
        if rc:
            raise DeviceError("cuMemGetInfo failed", details={"code": rc})
        return int(free.value), int(total.value)


class SimulatorBackend:
    """Host memory with synthetic device addresses, for numba's CUDA simulator."""

    name = "cuda-simulator"
    _BASE = 0x7F00_0000_0000

    def __init__(self, total_bytes: int = 1 << 34) -> None:
        self._blocks: dict[int, np.ndarray] = {}
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.total_bytes = total_bytes
        self.allocated_bytes = 0

    def alloc(self, nbytes: int) -> int:
        with self._lock:
            if self.allocated_bytes + nbytes > self.total_bytes:
                raise DeviceError(
                    f"simulated device out of memory: {nbytes} bytes requested, "
                    f"{self.total_bytes - self.allocated_bytes} free",
                    details={"bytes": nbytes},
                )
            # 1 TiB apart: addresses of different allocations never overlap
            ptr = self._BASE + next(self._next) * (1 << 40)
            self._blocks[ptr] = np.zeros(nbytes, dtype=np.uint8)
            self.allocated_bytes += nbytes
            return ptr

    def free(self, ptr: int) -> None:
        with self._lock:
            block = self._blocks.pop(ptr)
            self.allocated_bytes -= block.size

    def _bytes(self, ptr: int, nbytes: int) -> np.ndarray:
        base = ptr - (ptr - self._BASE) % (1 << 40)
        start = ptr - base
        return self._blocks[base][start : start + nbytes]

    def array(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype, finalizer: Callable[[], None] | None) -> Any:
        import weakref

        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        host = self._bytes(ptr, nbytes).view(dtype).reshape(shape)
        arr = FakeCUDAArray(host)
        if finalizer is not None:
            weakref.finalize(arr, finalizer)
        return arr

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
