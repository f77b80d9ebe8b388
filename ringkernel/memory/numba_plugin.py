"""numba External Memory Management plugin: every numba device allocation from the pool.

Either set ``NUMBA_CUDA_MEMORY_MANAGER=ringkernel.memory`` before the program starts, or
call :func:`use_pool` before the first CUDA context is created. Then ``cuda.device_array``,
``cuda.to_device`` and every other numba device allocation is served by one process-wide
:class:`~ringkernel.memory.GpuMemoryPool` (:func:`plugin_pool`), and returned to it when
numba frees the array.

Each allocation is a ``MemoryPointer`` (a subclass, :class:`PoolPointer`) that returns its
block when it is collected (numba's views of it keep it alive, so that is when the array
and every view of it are gone). The return goes through the pool's finalizer-safe path
(``GpuMemoryPool._release``): the collector may run it on a thread that is inside the pool
already. The pointer returns the block in ``__del__`` rather than through numba's
``weakref.finalize`` per allocation: that finalizer and numba's argument conversions were
about 60% of the plugin's cost per allocation (docs/memory.md, "numba allocator plugin").
"""

from __future__ import annotations

import weakref
from typing import Any

from numba.cuda.cudadrv.driver import (
    GetIpcHandleMixin, HostOnlyCUDAMemoryManager, MemoryInfo, MemoryPointer, binding,
)  # fmt: skip

from ..errors import ResourceClosedError
from . import _plugin_registry as _registry
from .backend import DriverBackend
from .pool import GpuMemoryPool, PooledBuffer

__all__ = ["RingKernelMemoryManager", "PoolPointer"]


class PoolPointer(MemoryPointer):
    """numba's ``MemoryPointer`` over a pool block, which it returns when it is collected.

    numba's own constructor would wrap the address twice (``c_void_p``, then
    ``CUdeviceptr``) and register a ``weakref.finalize``; this one sets the same attributes
    directly (``tests/memory/test_numba_plugin.py`` checks they stay the same as numba's)
    and returns the block in ``__del__``. ``free()`` returns it at once, as numba's does.
    """

    def __init__(self, context: Any, buf: PooledBuffer, size: int) -> None:  # noqa: D107
        # what MemoryPointer.__init__ sets, without its conversions and finalizer
        self.context = context
        self.device_pointer = self.handle = binding.CUdeviceptr(buf.ptr)
        self.size = self._cuda_memsize_ = size
        self.is_managed = True
        self.refct = 1
        self._owner = None
        self._buf: PooledBuffer | None = buf

    def free(self) -> None:
        """Return the block to the pool now (numba's ``MemoryPointer.free``); a second call raises."""
        buf, self._buf = self._buf, None
        if buf is None:
            raise RuntimeError("Freeing dead memory")  # numba's words for the same mistake
        buf.pool._release(buf)

    def __copy__(self) -> "PoolPointer":
        return self  # a copy would return the block a second time in its own __del__

    def __deepcopy__(self, memo: dict[int, Any]) -> "PoolPointer":
        return self

    def __del__(self) -> None:
        buf = self._buf
        if buf is not None:
            self._buf = None
            try:
                buf.pool._release(buf)  # never waits, never raises
            except Exception:  # noqa: BLE001 - at interpreter exit the pool's module may be gone
                pass


class RingKernelMemoryManager(GetIpcHandleMixin, HostOnlyCUDAMemoryManager):
    """numba's EMM interface over a :class:`GpuMemoryPool` (host memory stays numba's)."""

    pool: GpuMemoryPool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # numba hands its pointers a weak proxy of the context; one serves every allocation
        # (numba builds a throwaway manager with context=None to check the interface version)
        self._context_proxy = weakref.proxy(self.context) if self.context is not None else None

    def initialize(self) -> None:
        with _registry.lock:
            if _registry.pool is None or _registry.pool.closed:  # a closed pool is replaced
                _registry.pool = GpuMemoryPool(_registry.config, backend=DriverBackend(self.context))
            self.pool = _registry.pool

    def memalloc(self, size: int) -> MemoryPointer:
        pool = self.pool
        if pool._closed:
            raise ResourceClosedError(
                "GpuMemoryPool", operation="numba device allocation (ringkernel.memory plugin)",
                hint="plugin_pool() was closed while numba still allocates from it; keep it open until "
                "the program ends (a new CUDA context makes a new one)",
            )  # fmt: skip
        # numba asks for no bytes only outside arrays (an empty array gets a null pointer)
        buf = pool.allocate(size or 1)
        buf._held = True  # numba's pointer returns it: pool.deallocate(ptr) is refused for it
        return PoolPointer(self._context_proxy, buf, size)

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
