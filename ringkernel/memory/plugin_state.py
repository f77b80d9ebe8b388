"""The process-wide pool behind numba's allocations, and ``use_pool`` (no numba import here)."""

from __future__ import annotations

import threading

from ..errors import ConfigurationError
from .pool import GpuMemoryPool, PoolConfig

__all__ = ["use_pool", "plugin_pool"]

_pool: GpuMemoryPool | None = None
_pool_config: PoolConfig | None = None
_lock = threading.Lock()


def plugin_pool() -> GpuMemoryPool | None:
    """The pool behind numba's allocations (``None`` until numba created a context with the plugin)."""
    return _pool


def use_pool(config: PoolConfig | None = None) -> None:
    """Route numba's device allocations through a ringkernel pool; call before any CUDA work.

    Equivalent to ``NUMBA_CUDA_MEMORY_MANAGER=ringkernel.memory``. Not available on numba's
    simulator, which has no memory-manager interface.
    """
    from ..config import simulator_enabled

    global _pool_config
    if simulator_enabled():
        raise ConfigurationError(
            "numba's CUDA simulator has no memory-manager interface",
            hint="use GpuMemoryPool directly (pool.device_array) on the simulator",
        )
    from numba import cuda

    from .numba_plugin import RingKernelMemoryManager

    _pool_config = config
    try:
        cuda.set_memory_manager(RingKernelMemoryManager)
    except Exception as exc:
        raise ConfigurationError(
            f"numba refused the memory manager: {exc}",
            hint="call use_pool() before the first CUDA allocation or kernel launch, or set "
            "NUMBA_CUDA_MEMORY_MANAGER=ringkernel.memory in the environment",
        ) from exc
