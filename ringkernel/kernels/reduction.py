"""Sum reduction: per-thread grid-stride sums, a shared-memory tree per block, one atomic per block.

Partial sums are accumulated in float64 whatever the input dtype, so a float32 sum of
2^24 elements stays within ~1e-12 relative of the exact sum instead of drifting by ~1e-4.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda, float64

from ..kernel import gpu_kernel
from ..errors import KernelArgumentError
from ..kernel.intrinsics import global_thread_id, grid_stride

__all__ = ["sum_reduce", "sum_reduce_kernel", "sum_reduce_reference", "REDUCE_BLOCK"]

#: Threads per block of the reduction; fixed because it sizes the shared array.
REDUCE_BLOCK = 256


@gpu_kernel(grid_stride=True, block=REDUCE_BLOCK, elements="x")
def sum_reduce_kernel(x, out):  # type: ignore[no-untyped-def]
    """Adds the sum of ``x`` to ``out[0]`` (float64). ``out`` must be zeroed by the caller."""
    buf = cuda.shared.array(REDUCE_BLOCK, float64)
    tid = cuda.threadIdx.x
    acc = 0.0
    for i in range(global_thread_id(), x.size, grid_stride()):
        acc += x[i]
    buf[tid] = acc
    cuda.syncthreads()
    step = REDUCE_BLOCK // 2
    while step > 0:
        if tid < step:
            buf[tid] += buf[tid + step]
        # The barrier orders this level's shared-memory writes before the next level reads.
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        # Relaxed atomic add: blocks only accumulate; the host reads after the kernel ends.
        cuda.atomic.add(out, 0, buf[0])


def sum_reduce(x: Any, *, stream: Any = None) -> float:
    """Sum of the 1-D device array ``x``, as a Python float (synchronises the stream)."""
    info_size = getattr(x, "size", None)
    if isinstance(x, np.ndarray):
        raise KernelArgumentError(
            f"x is a NumPy array in host memory ({x.dtype}{list(x.shape)})",
            kernel_name="sum_reduce",
            hint="pass numba.cuda.to_device(x); for host data np.sum is faster than a round trip",
        )
    if info_size == 0:
        return 0.0
    out = cuda.to_device(np.zeros(1, dtype=np.float64), stream=stream or 0)
    sum_reduce_kernel(x, out, stream=stream)
    return float(out.copy_to_host(stream=stream or 0)[0])


def sum_reduce_reference(x: np.ndarray) -> float:
    """NumPy reference: the float64 sum of ``x``."""
    return float(np.sum(x, dtype=np.float64))
