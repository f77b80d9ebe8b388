"""``out = alpha * x + y`` (BLAS saxpy/daxpy), a grid-stride kernel."""

from __future__ import annotations

import numpy as np

from ..kernel import gpu_kernel
from ..kernel.intrinsics import global_thread_id, grid_stride

__all__ = ["saxpy", "saxpy_reference"]


@gpu_kernel(grid_stride=True, same_size=("x", "y", "out"))
def saxpy(alpha, x, y, out):  # type: ignore[no-untyped-def]
    """``out[i] = alpha * x[i] + y[i]``; ``out`` may alias ``y``."""
    for i in range(global_thread_id(), out.size, grid_stride()):
        out[i] = alpha * x[i] + y[i]


def saxpy_reference(alpha: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """NumPy reference for :data:`saxpy`, in the inputs' dtype."""
    return (x.dtype.type(alpha) * x + y).astype(np.result_type(x, y))
