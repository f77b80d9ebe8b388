"""numba External Memory Management plugin: every numba device allocation from the pool.

Either set ``NUMBA_CUDA_MEMORY_MANAGER=ringkernel.memory`` before the program starts, or
call :func:`use_pool` before the first CUDA context is created. Then ``cuda.device_array``,
``cuda.to_device`` and every other numba device allocation is served by one process-wide
:class:`~ringkernel.memory.GpuMemoryPool` (:func:`plugin_pool`), and returned to it when
numba frees the array.

Each allocation is a ``MemoryPointer`` whose finalizer returns the block (numba's views of
it keep it alive, so that is when the array and every view of it are gone). The return
goes through the pool's finalizer-safe path (``GpuMemoryPool._release``): numba runs it from
the garbage collector, possibly on a thread that is inside the pool already.
"""

from __future__ import annotations

import ctypes
import functools
import weakref
from typing import Any

from numba.cuda.cudadrv.driver import GetIpcHandleMixin, HostOnlyCUDAMemoryManager, MemoryInfo, MemoryPointer

from ..errors import ResourceClosedError
from . import _plugin_registry as _registry
from .backend import DriverBackend
from .pool import GpuMemoryPool

__all__ = ["RingKernelMemoryManager"]


class RingKernelMemoryManager(GetIpcHandleMixin, HostOnlyCUDAMemoryManager):
    """numba's EMM interface over a :class:`GpuMemoryPool` (host memory stays numba's)."""

    pool: GpuMemoryPool

    def initialize(self) -> None:
        with _registry.lock:
            if _registry.pool is None or _registry.pool.closed:  # a closed pool is replaced
                _registry.pool = GpuMemoryPool(_registry.config, backend=DriverBackend(self.context))
            self.pool = _registry.pool

    def memalloc(self, size: int) -> MemoryPointer:
        pool = self.pool
        if pool.closed:
            raise ResourceClosedError(
                "GpuMemoryPool", operation="numba device allocation (ringkernel.memory plugin)",
                hint="plugin_pool() was closed while numba still allocates from it; keep it open until "
                "the program ends (a new CUDA context makes a new one)",
            )  # fmt: skip
        buf = pool.allocate(max(1, int(size)))
        # numba calls the finalizer when the last reference to the memory goes; it never
        # waits for the pool's lock (the collector may run it inside the pool)
        return MemoryPointer(weakref.proxy(self.context), ctypes.c_void_p(buf.ptr), size,
                             finalizer=functools.partial(pool._release, buf))  # fmt: skip

    def get_memory_info(self) -> MemoryInfo:
        free, total = self.pool.backend.mem_info()
        return MemoryInfo(free=free, total=total)

    def reset(self) -> None:
        super().reset()
        if not self.pool.closed:
            self.pool.compact()

    @property
    def interface_version(self) -> int:
        return 1


_numba_memory_manager: Any = RingKernelMemoryManager
