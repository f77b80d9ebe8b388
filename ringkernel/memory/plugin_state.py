"""The process-wide pool behind numba's allocations, and ``use_pool`` (no numba import here)."""

from __future__ import annotations

from ..errors import ConfigurationError
from . import _plugin_registry as _registry
from .pool import GpuMemoryPool, PoolConfig

__all__ = ["use_pool", "plugin_pool"]


def plugin_pool() -> GpuMemoryPool | None:
    """The pool behind numba's allocations (``None`` until numba created a context with the plugin).

    Closing it makes numba's next allocation raise
    :class:`~ringkernel.errors.ResourceClosedError`; arrays numba already holds stay valid
    and return their blocks as usual. The next CUDA context numba creates gets a new pool.
    """
    return _registry.pool


def reset() -> None:
    """Forget the plugin's pool (closing it: numba's live arrays keep their blocks) and config; for tests."""
    with _registry.lock:
        pool, _registry.pool, _registry.config = _registry.pool, None, None
    if pool is not None:
        pool.close()


def use_pool(config: PoolConfig | None = None) -> None:
    """Route numba's device allocations through a ringkernel pool; call before any CUDA work.

    Equivalent to ``NUMBA_CUDA_MEMORY_MANAGER=ringkernel.memory``. Not available on numba's
    simulator, which has no memory-manager interface.
    """
    from ..config import simulator_enabled

    if simulator_enabled():
        raise ConfigurationError(
            "numba's CUDA simulator has no memory-manager interface",
            hint="use GpuMemoryPool directly (pool.device_array) on the simulator",
        )
    from numba import cuda

    from .numba_plugin import RingKernelMemoryManager

    _registry.config = config
    try:
        cuda.set_memory_manager(RingKernelMemoryManager)
    except Exception as exc:
        raise ConfigurationError(
            f"numba refused the memory manager: {exc}",
            hint="call use_pool() before the first CUDA allocation or kernel launch, or set "
            "NUMBA_CUDA_MEMORY_MANAGER=ringkernel.memory in the environment",
        ) from exc
