"""Light device arrays from the pool: create, copy, slice, launch, and hand to other libraries.

    python examples/device_array.py
"""

from __future__ import annotations

import sys
import time

import numpy as np

# ringkernel before numba.cuda, so that it can choose numba's CUDA simulator when there is no GPU
from ringkernel import DeviceArray, GpuMemoryPool, gpu_kernel, grid_stride, global_thread_id
from numba import cuda


@gpu_kernel(grid_stride=True)
def axpy(a, x, y):  # type: ignore[no-untyped-def]
    for i in range(global_thread_id(), y.size, grid_stride()):
        y[i] = a * x[i] + y[i]


@cuda.jit
def add_row_index(m):  # type: ignore[no-untyped-def]
    i, j = cuda.grid(2)
    if i < m.shape[0] and j < m.shape[1]:
        m[i, j] += i


def main() -> int:
    rng = np.random.default_rng()
    ok = True
    with GpuMemoryPool() as pool:
        # creation: a few slots around a pool block (numba's DeviceNDArray costs ~15 us to build)
        n = 200
        t = time.perf_counter()
        for _ in range(n):
            pool.device_array(1024, np.float32)  # returned to the pool at once: nothing holds it
        per = (time.perf_counter() - t) / n * 1e6
        print(f"pool.device_array + release: {per:.1f} us each")

        x, y = rng.standard_normal(1000).astype(np.float32), rng.standard_normal(1000).astype(np.float32)
        dx, dy = pool.device_array(x.shape, np.float32), pool.device_array(y.shape, np.float32)
        dx.copy_to_device(x)
        dy.copy_to_device(y)
        axpy(np.float32(2.0), dx, dy)  # any @gpu_kernel (or numba kernel) takes a DeviceArray
        ok &= np.allclose(dy.copy_to_host(), 2 * x + y, rtol=1e-6)
        print(f"{dy!r}: axpy correct: {ok}")

        m = pool.device_array((6, 8), np.float64)
        m.copy_to_device(np.zeros((6, 8)))
        add_row_index[(1, 1), (8, 8)](m[::2, 1:])  # a strided view: the kernel writes into m
        expect = np.zeros((6, 8))
        expect[::2, 1:] += np.arange(3)[:, None]
        ok &= np.array_equal(m.copy_to_host(), expect)
        col = m[:, 3]  # a view sharing m's memory; copied out through the span it covers
        print(f"{col!r}: {col.copy_to_host()}")
        m[5] = 9.0  # a row is contiguous: written in place
        ok &= bool((m.copy_to_host()[5] == 9.0).all())

        try:
            np.asarray(m)  # no silent copies to the host
        except TypeError as exc:
            print(f"np.asarray(m): {exc}")
        try:
            m.shape = (48,)  # type: ignore[misc]
        except AttributeError:
            print(f"m.shape stays {m.shape}; m.reshape(48) is a view: {m.reshape(48)!r}")

        numba_view = m.as_numba()  # numba's own array over the same memory, when an API wants one
        ok &= np.array_equal(numba_view.copy_to_host(), m.copy_to_host())
        if pool.backend.name == "cuda":  # on a GPU, with CuPy installed: no copy either
            try:
                import cupy
            except ImportError:
                cupy = None
            if cupy is not None:
                c = cupy.asarray(dy)  # CuPy reads the __cuda_array_interface__
                print(f"cupy.asarray shares memory: {c.data.ptr == dy.ptr}")
        ok &= isinstance(dx, DeviceArray)
    print("all correct" if ok else "WRONG")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
