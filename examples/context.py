"""GpuContext: a pool, streams and a kernel cache of its own; launches on its streams, awaited.

Runs on the GPU when there is one, otherwise on numba's CUDA simulator:

    python examples/context.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile

import numpy as np

# ringkernel before numba.cuda, so that it can choose numba's CUDA simulator when there is no GPU
from ringkernel import GpuContextBuilder, PoolConfig, StreamId, gpu_kernel
from ringkernel.config import simulator_enabled
from numba import cuda


@gpu_kernel
def axpy(a, x, y):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < y.size:
        y[i] = a * x[i] + y[i]


async def two_at_once(ctx, x, y1, y2) -> None:  # type: ignore[no-untyped-def]
    # each on the context's next compute stream; the event loop is free while the GPU runs
    await asyncio.gather(ctx.launch_async(axpy, 2.0, x, y1), ctx.launch_async(axpy, -1.0, x, y2))


def main() -> int:
    n = 5_000 if simulator_enabled() else 10_000_000
    rng = np.random.default_rng()
    xs = rng.random(n)
    with tempfile.TemporaryDirectory() as cache_dir:
        builder = (
            GpuContextBuilder()
            .with_memory_pool(PoolConfig.for_compute())
            .with_streams(2)
            .with_profiling(True)
            .with_ptx_cache_dir(cache_dir)
        )
        with builder.build() as ctx:
            x = ctx.allocate(n, np.float64)  # from the context's pool
            x.copy_to_device(xs)
            y1, y2 = ctx.allocate(n, np.float64), ctx.allocate(n, np.float64)
            y1.copy_to_device(np.zeros(n))
            y2.copy_to_device(np.zeros(n))
            ctx.launch(axpy, 1.0, x, y1, stream=StreamId.compute(0))
            asyncio.run(two_at_once(ctx, x, y1, y2))
            ctx.synchronize()
            ok = np.allclose(y1.copy_to_host(), 3 * xs) and np.allclose(y2.copy_to_host(), -xs)
            print(f"{len(ctx.launches())} launches recorded:", ", ".join(
                f"{e.kernel_name} grid {e.grid[0]} on {'default' if e.stream is None else 'a context stream'}"
                for e in ctx.launches()))  # fmt: skip
            print("results match NumPy:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
