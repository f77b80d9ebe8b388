"""The memory pool, the resource guard and a managed buffer, on the GPU or the simulator.

    python examples/memory_pool.py
"""

from __future__ import annotations

import sys

import numpy as np

from ringkernel import (
    GpuMemoryPool,
    InsufficientMemory,
    ManagedBuffer,
    MemoryEstimate,
    PoolConfig,
    ResourceGuard,
    SizeClass,
)
from ringkernel.kernels import vector_add


def main() -> int:
    n = 1000
    rng = np.random.default_rng()
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)

    with GpuMemoryPool(PoolConfig.for_compute()) as pool:
        pool.warm_bucket(SizeClass.SIZE_4KB, 8)
        with pool.allocate(a.nbytes) as ba, pool.allocate(b.nbytes) as bb, pool.allocate(a.nbytes) as bc:
            da, db, dc = ba.as_array(n, np.float32), bb.as_array(n, np.float32), bc.as_array(n, np.float32)
            da.copy_to_device(a)
            db.copy_to_device(b)
            vector_add(da, db, dc)
            ok = np.array_equal(dc.copy_to_host(), a + b)
        d = pool.diagnostics()
        print(f"pool: {d.hits} hits, {d.misses} misses, {d.pool_bytes} bytes held, vector add correct: {ok}")

    with ManagedBuffer(n, data=a) as ma, ManagedBuffer(n) as mc:
        vector_add(ma.device_view(readonly=True), ma.device_view(readonly=True), mc.device)
        ok2 = np.array_equal(mc.read(), 2 * a)
        print(f"managed buffer: {mc.d2h_copies} copy back, doubled correctly: {ok2}")

    guard = ResourceGuard(max_memory_bytes=1 << 20, safety_margin=0.3)
    try:
        guard.check_allocation(MemoryEstimate.for_arrays(1_000_000, 4, 4, 4))
    except InsufficientMemory as exc:
        print(f"guard: {exc}".splitlines()[0])
    return 0 if ok and ok2 else 1


if __name__ == "__main__":
    sys.exit(main())
