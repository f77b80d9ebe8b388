"""On a real GPU: pooled blocks of every class written by kernels, and numba allocating through the plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


def test_kernels_write_distinct_patterns_into_every_size_class() -> None:
    from numba import cuda

    from ringkernel import GpuMemoryPool, PoolConfig, SizeClass, gpu_kernel, global_thread_id, grid_stride

    @gpu_kernel(grid_stride=True)
    def fill(out, tag):  # type: ignore[no-untyped-def]
        for i in range(global_thread_id(), out.size, grid_stride()):
            out[i] = tag * 1_000_000 + i

    with GpuMemoryPool(PoolConfig(slab_bytes=1 << 20)) as pool:
        bufs = []
        tag = 0
        for cls in SizeClass:
            for _ in range(5):  # several blocks per class, sharing slabs
                for size in (cls.bytes(), cls.bytes() // 2 + 8):
                    tag += 1
                    buf = pool.allocate(size)
                    n = size // 4
                    fill(buf.as_array(n, np.int32), np.int32(tag))
                    bufs.append((buf, n, tag))
        big = pool.allocate(3 << 20)  # a direct allocation next to the slabs
        fill(big.as_array((3 << 20) // 4, np.int32), np.int32(999))
        cuda.synchronize()
        for buf, n, t in bufs:  # nothing overlapped: every block still holds its own pattern
            got = buf.as_array(n, np.int32).copy_to_host()
            np.testing.assert_array_equal(got, t * 1_000_000 + np.arange(n, dtype=np.int32))
        assert (big.as_array(10, np.int32).copy_to_host() == 999 * 1_000_000 + np.arange(10)).all()
        d = pool.diagnostics()
        assert d.live_bytes == sum(b.nbytes for b, _, _ in bufs) + (3 << 20)
        mem_free, mem_total = pool.backend.mem_info()
        assert 0 < mem_free <= mem_total


def test_numba_allocates_through_the_plugin() -> None:
    code = r"""
import numpy as np
from numba import cuda
import ringkernel.memory as rm
from ringkernel.kernels import vector_add
rng = np.random.default_rng()
for n in (10, 1000, 70000, 1 << 20):
    a = rng.standard_normal(n).astype(np.float32)
    d_a = cuda.to_device(a)
    d_c = cuda.device_array(n, np.float32)
    vector_add(d_a, d_a, d_c)
    assert np.array_equal(d_c.copy_to_host(), 2 * a)
pool = rm.plugin_pool()
assert pool is not None
d = pool.diagnostics()
print("PLUGIN", d.hits + d.misses, d.live_bytes, d.pool_bytes)
import gc
view = d_c[5:]  # a slice keeps its array's block (PoolPointer) after the array is gone
del d_a, d_c
gc.collect()
with_view = pool.diagnostics().live_bytes
assert np.array_equal(view.copy_to_host(), 2 * a[5:])
del view
gc.collect()
print("VIEW", d.live_bytes - with_view, with_view - pool.diagnostics().live_bytes)
"""
    env = dict(os.environ, NUMBA_CUDA_MEMORY_MANAGER="ringkernel.memory",
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("PLUGIN"))
    allocations = int(line.split()[1])
    assert allocations >= 8  # every to_device/device_array above went through the pool
    view = next(line for line in out.stdout.splitlines() if line.startswith("VIEW")).split()
    assert int(view[1]) == int(view[2]) == 4 << 20  # d_a back at once, d_c with its last view


def test_resource_guard_reads_the_device() -> None:
    from numba import cuda

    from ringkernel import InsufficientMemory, MemoryEstimate, ResourceGuard

    free, total = cuda.current_context().get_memory_info()
    guard = ResourceGuard(safety_margin=0.3)
    assert 0 < guard.available_bytes <= free
    with pytest.raises(InsufficientMemory) as err:
        guard.check_allocation(MemoryEstimate.for_arrays(total // 4, 4, 4, 4))
    assert err.value.recommended_max == guard.max_safe_elements(12)


def test_managed_buffer_on_the_gpu(rng: np.random.Generator) -> None:
    from numba import cuda

    from ringkernel import GpuMemoryPool, ManagedBuffer
    from ringkernel.kernels import vector_add

    s = cuda.stream()
    n = 1_000_003
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    with GpuMemoryPool() as pool:
        ma, mb = ManagedBuffer(n, data=a, stream=s), ManagedBuffer(n, data=b, stream=s, pool=pool)
        mc = ManagedBuffer(n, stream=s)
        s.synchronize()
        vector_add(ma, mb.device_view(readonly=True), mc)  # buffers go straight into kernels
        cuda.synchronize()
        np.testing.assert_array_equal(mc.read(), a + b)
        assert mc.d2h_copies == 1 and mb.d2h_copies == 0
        mb.read()
        assert mb.d2h_copies == 0
