"""Vector add with ringkernel: write the kernel, launch it without a hand-written configuration.

Runs on the GPU when there is one, otherwise on numba's CUDA simulator:

    python examples/vector_add.py [N]
"""

from __future__ import annotations

import sys

import numpy as np

# ringkernel before numba.cuda, so that it can choose numba's CUDA simulator when there is no GPU
from ringkernel import block_dim_x, block_idx_x, gpu_kernel, thread_idx_x
from numba import cuda


@gpu_kernel
def vector_add(a, b, c):  # type: ignore[no-untyped-def]
    idx = thread_idx_x() + block_idx_x() * block_dim_x()
    if idx < c.size:
        c[idx] = a[idx] + b[idx]


def main(n: int) -> int:
    rng = np.random.default_rng()
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    d_a, d_b = cuda.to_device(a), cuda.to_device(b)
    d_c = cuda.device_array_like(d_a)

    vector_add(d_a, d_b, d_c)  # grid and block chosen from the workload and the GPU

    ok = np.array_equal(d_c.copy_to_host(), a + b)
    print(vector_add.last_config.explain())
    print("matches NumPy:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
