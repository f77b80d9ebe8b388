"""Device-side helpers for use inside ``@gpu_kernel`` bodies (numba device functions).

``thread_idx_x()`` and friends read CUDA's built-in indices; ``global_thread_id()`` is
``blockIdx.x * blockDim.x + threadIdx.x`` and ``grid_stride()`` the total number of threads
of a 1-D grid, so the grid-stride loop idiom reads::

    for i in range(global_thread_id(), n, grid_stride()):
        ...

Importing this module chooses the GPU or numba's simulator
(:func:`ringkernel.config.select_backend`), then imports ``numba.cuda``; ``import ringkernel``
does neither (these names are resolved lazily on first access). The helpers are compiled with ``forceinline`` on the
GPU, so they cost nothing over writing ``cuda.threadIdx.x`` by hand.
"""

from __future__ import annotations

from ..config import select_backend, simulator_enabled

select_backend()  # before numba.cuda is imported: the simulator when there is no GPU

from numba import cuda  # noqa: E402

__all__ = [
    "thread_idx_x", "thread_idx_y", "thread_idx_z",
    "block_idx_x", "block_idx_y", "block_idx_z",
    "block_dim_x", "block_dim_y", "block_dim_z",
    "grid_dim_x", "grid_dim_y", "grid_dim_z",
    "global_thread_id", "global_thread_id_2d", "grid_stride", "grid_stride_2d",
    "sync_threads",
]  # fmt: skip

_OPTS = {} if simulator_enabled() else {"forceinline": True}
_device = cuda.jit(device=True, **_OPTS)


@_device
def thread_idx_x():  # type: ignore[no-untyped-def]
    return cuda.threadIdx.x


@_device
def thread_idx_y():  # type: ignore[no-untyped-def]
    return cuda.threadIdx.y


@_device
def thread_idx_z():  # type: ignore[no-untyped-def]
    return cuda.threadIdx.z


@_device
def block_idx_x():  # type: ignore[no-untyped-def]
    return cuda.blockIdx.x


@_device
def block_idx_y():  # type: ignore[no-untyped-def]
    return cuda.blockIdx.y


@_device
def block_idx_z():  # type: ignore[no-untyped-def]
    return cuda.blockIdx.z


@_device
def block_dim_x():  # type: ignore[no-untyped-def]
    return cuda.blockDim.x


@_device
def block_dim_y():  # type: ignore[no-untyped-def]
    return cuda.blockDim.y


@_device
def block_dim_z():  # type: ignore[no-untyped-def]
    return cuda.blockDim.z


@_device
def grid_dim_x():  # type: ignore[no-untyped-def]
    return cuda.gridDim.x


@_device
def grid_dim_y():  # type: ignore[no-untyped-def]
    return cuda.gridDim.y


@_device
def grid_dim_z():  # type: ignore[no-untyped-def]
    return cuda.gridDim.z


@_device
def global_thread_id():  # type: ignore[no-untyped-def]
    """Absolute index of this thread in a 1-D grid."""
    return cuda.grid(1)


@_device
def global_thread_id_2d():  # type: ignore[no-untyped-def]
    """``(x, y)`` absolute index of this thread in a 2-D grid."""
    return cuda.grid(2)


@_device
def grid_stride():  # type: ignore[no-untyped-def]
    """Total threads of a 1-D grid: the step of a grid-stride loop."""
    return cuda.gridsize(1)


@_device
def grid_stride_2d():  # type: ignore[no-untyped-def]
    """``(x, y)`` total threads of a 2-D grid."""
    return cuda.gridsize(2)


@_device
def sync_threads():  # type: ignore[no-untyped-def]
    """Barrier for all threads of the block (``__syncthreads``)."""
    cuda.syncthreads()
