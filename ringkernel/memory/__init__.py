"""Device memory: ``GpuMemoryPool``, ``DeviceArray``, ``ResourceGuard``, ``ManagedBuffer`` and a numba allocator plugin.

``NUMBA_CUDA_MEMORY_MANAGER=ringkernel.memory`` makes numba allocate through a pool (see
``ringkernel.memory.numba_plugin``); the plugin is imported lazily, so importing this
package does not import numba.
"""

from typing import Any

from .array import DeviceArray
from .buffer import ManagedBuffer
from .backend import DriverBackend, MemoryBackend, SimulatorBackend, default_backend
from .pool import ClassDiagnostics, GpuMemoryPool, PoolConfig, PoolDiagnostics, PooledBuffer, SizeClass
from .resource import MemoryEstimate, ResourceGuard

__all__ = [
    "GpuMemoryPool", "DeviceArray", "PoolConfig", "PoolDiagnostics", "ClassDiagnostics", "PooledBuffer", "SizeClass",
    "MemoryEstimate", "ResourceGuard", "ManagedBuffer", "MemoryBackend", "DriverBackend", "SimulatorBackend", "default_backend",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    # numba looks up ``_numba_memory_manager`` on the module named by NUMBA_CUDA_MEMORY_MANAGER.
    if name in ("use_pool", "plugin_pool"):
        from . import plugin_state

        return getattr(plugin_state, name)
    if name in ("_numba_memory_manager", "RingKernelMemoryManager"):
        from ..config import ensure_numba_cuda

        ensure_numba_cuda()  # (numba_plugin imports numba.cuda's driver module directly)
        from . import numba_plugin

        return getattr(numba_plugin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
