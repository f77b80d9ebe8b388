"""A library of ready kernels, one module per family, each with a NumPy reference.

Importing this package imports numba (the kernels are defined at module level), after
choosing the GPU or numba's simulator (:func:`ringkernel.config.select_backend`).
"""

from ..config import select_backend

select_backend()  # before the modules below import numba.cuda

from .reduction import sum_reduce, sum_reduce_kernel, sum_reduce_reference  # noqa: E402
from .saxpy import saxpy, saxpy_reference  # noqa: E402
from .vector_add import vector_add, vector_add_reference  # noqa: E402

__all__ = [
    "vector_add", "vector_add_reference",
    "saxpy", "saxpy_reference",
    "sum_reduce", "sum_reduce_kernel", "sum_reduce_reference",
]  # fmt: skip
