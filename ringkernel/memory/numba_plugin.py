"""numba External Memory Management plugin: every numba device allocation from the pool.

Either set ``NUMBA_CUDA_MEMORY_MANAGER=ringkernel.memory`` before the program starts, or
call :func:`use_pool` before the first CUDA context is created. Then ``cuda.device_array``,
``cuda.to_device`` and every other numba device allocation is served by one process-wide
:class:`~ringkernel.memory.GpuMemoryPool` (:func:`plugin_pool`), and returned to it when
numba frees the array.
"""

from __future__ import annotations

import ctypes
import functools
import weakref
from typing import Any

from numba.cuda.cudadrv.driver import GetIpcHandleMixin, HostOnlyCUDAMemoryManager, MemoryInfo, MemoryPointer

from .backend import DriverBackend
from .pool import GpuMemoryPool

from . import plugin_state

__all__ = ["RingKernelMemoryManager"]


class RingKernelMemoryManager(GetIpcHandleMixin, HostOnlyCUDAMemoryManager):
    """numba's EMM interface over a :class:`GpuMemoryPool` (host memory stays numba's)."""

    def initialize(self) -> None:
        with plugin_state._lock:
            if plugin_state._pool is None:
                plugin_state._pool = GpuMemoryPool(plugin_state._pool_config, backend=DriverBackend(self.context))
        self.pool = plugin_state._pool

    def memalloc(self, size: int) -> MemoryPointer:
        pool = self.pool
        buf = pool.allocate(max(1, int(size)))
        # numba calls the finalizer when the last reference to the memory goes
        return MemoryPointer(weakref.proxy(self.context), ctypes.c_void_p(buf.ptr), size,
                             finalizer=functools.partial(pool._release, buf))  # fmt: skip

    def get_memory_info(self) -> MemoryInfo:
        free, total = self.pool.backend.mem_info()
        return MemoryInfo(free=free, total=total)

    def reset(self) -> None:
        super().reset()
        self.pool.compact()

    @property
    def interface_version(self) -> int:
        return 1


_numba_memory_manager: Any = RingKernelMemoryManager
