"""Element-wise vector addition ``c = a + b``, a grid-stride kernel."""

from __future__ import annotations

import numpy as np

from ..kernel import gpu_kernel
from ..kernel.intrinsics import global_thread_id, grid_stride

__all__ = ["vector_add", "vector_add_reference"]


@gpu_kernel(grid_stride=True, same_size=("a", "b", "c"))
def vector_add(a, b, c):  # type: ignore[no-untyped-def]
    """``c[i] = a[i] + b[i]`` for every i; any dtype numba can add, any launch grid."""
    for i in range(global_thread_id(), c.size, grid_stride()):
        c[i] = a[i] + b[i]


def vector_add_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NumPy reference for :data:`vector_add`."""
    return np.add(a, b)
