"""A library of ready kernels, one module per family, each with a NumPy reference.

Importing this package imports numba (the kernels are defined at module level).
"""

from .reduction import sum_reduce, sum_reduce_kernel, sum_reduce_reference
from .saxpy import saxpy, saxpy_reference
from .vector_add import vector_add, vector_add_reference

__all__ = [
    "vector_add", "vector_add_reference",
    "saxpy", "saxpy_reference",
    "sum_reduce", "sum_reduce_kernel", "sum_reduce_reference",
]  # fmt: skip
