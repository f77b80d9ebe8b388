"""2-D and 3-D stencils launched without a configuration: ringkernel reads the kernel's grid
dimensionality and which array axis each grid dimension indexes from its code.

Runs on the GPU when there is one (8192^2 and 256^3), otherwise on numba's CUDA simulator
(small grids):

    python examples/stencil_nd.py
"""

from __future__ import annotations

import sys

import numpy as np

# ringkernel before numba.cuda, so that it can choose numba's CUDA simulator when there is no GPU
from ringkernel import LaunchConfigError, gpu_kernel
from ringkernel.config import simulator_enabled
from numba import cuda


@gpu_kernel
def laplace2d(u, out):  # type: ignore[no-untyped-def]
    col, row = cuda.grid(2)
    if 0 < row < out.shape[0] - 1 and 0 < col < out.shape[1] - 1:
        out[row, col] = u[row - 1, col] + u[row + 1, col] + u[row, col - 1] + u[row, col + 1] - 4 * u[row, col]


@gpu_kernel
def laplace3d(u, out):  # type: ignore[no-untyped-def]
    i = cuda.threadIdx.x + cuda.blockIdx.x * cuda.blockDim.x
    j = cuda.threadIdx.y + cuda.blockIdx.y * cuda.blockDim.y
    k = cuda.threadIdx.z + cuda.blockIdx.z * cuda.blockDim.z
    if 0 < k < u.shape[0] - 1 and 0 < j < u.shape[1] - 1 and 0 < i < u.shape[2] - 1:
        out[k, j, i] = (
            u[k - 1, j, i] + u[k + 1, j, i] + u[k, j - 1, i] + u[k, j + 1, i] + u[k, j, i - 1] + u[k, j, i + 1]
            - 6 * u[k, j, i]
        )


@gpu_kernel
def fill_flat(a, width):  # type: ignore[no-untyped-def]
    x, y = cuda.grid(2)  # 2-D grid over a flat array: no array axis says how far x and y go
    if x < width and y * width + x < a.size:
        a[y * width + x] = y


def main() -> int:
    sim = simulator_enabled()
    n2, n3 = (37, 61) if sim else (8192, 8192), (5, 7, 9) if sim else (256, 256, 256)
    rng = np.random.default_rng()
    ok = True

    u = rng.standard_normal(n2).astype(np.float32)
    d_out = cuda.to_device(np.zeros_like(u))
    laplace2d(cuda.to_device(u), d_out)
    ref = np.zeros_like(u)
    ref[1:-1, 1:-1] = u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4 * u[1:-1, 1:-1]
    ok2 = np.allclose(d_out.copy_to_host(), ref, rtol=1e-5, atol=1e-5)
    print(laplace2d.last_config.explain())
    print("2-D matches NumPy:", ok2, "\n")

    v = rng.standard_normal(n3)
    d_v = cuda.to_device(np.zeros_like(v))
    laplace3d(cuda.to_device(v), d_v)
    ref3 = np.zeros_like(v)
    ref3[1:-1, 1:-1, 1:-1] = (
        v[:-2, 1:-1, 1:-1] + v[2:, 1:-1, 1:-1] + v[1:-1, :-2, 1:-1] + v[1:-1, 2:, 1:-1]
        + v[1:-1, 1:-1, :-2] + v[1:-1, 1:-1, 2:] - 6 * v[1:-1, 1:-1, 1:-1]
    )
    ok3 = np.allclose(d_v.copy_to_host(), ref3, atol=1e-12)
    print(laplace3d.last_config.explain())
    print("3-D matches NumPy:", ok3, "\n")

    width, height = 13, 7
    flat = cuda.to_device(np.full(width * height, -1.0))
    try:
        fill_flat(flat, width)
        print("fill_flat launched without its extent: unexpected")
        ok = False
    except LaunchConfigError as exc:
        print("refused, as it should be:", exc.message.split(":", 1)[1].strip()[:90], "...")
    fill_flat(flat, width, elements=(width, height))  # the fix the error names
    okf = np.array_equal(flat.copy_to_host(), np.repeat(np.arange(height, dtype=float), width))
    print("with elements=(width, height):", okf)
    return 0 if ok and ok2 and ok3 and okf else 1


if __name__ == "__main__":
    sys.exit(main())
