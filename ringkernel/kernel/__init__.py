"""Kernels: the ``@gpu_kernel`` decorator, ``GpuKernel``, argument checks, what a kernel's code
says about its launch (``indexing``), the one launch seam (``hooks``) and device helpers.

Importing this package imports no numba; the device helpers (``global_thread_id``, ...) are
numba device functions, resolved on first access (``ringkernel.kernel.intrinsics``).
"""

from .core import GpuKernel
from .decorator import gpu_kernel, kernel_from_source
from .explicit import ConfiguredLaunch
from .hooks import LaunchEvent, add_launch_hook, launch_hooks, remove_launch_hook
from .indexing import AxisMap, KernelIndexing, analyze_kernel

__all__ = [
    "gpu_kernel", "GpuKernel", "ConfiguredLaunch", "kernel_from_source",
    "LaunchEvent", "add_launch_hook", "remove_launch_hook", "launch_hooks",
    "AxisMap", "KernelIndexing", "analyze_kernel",
]  # fmt: skip
