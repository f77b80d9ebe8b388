"""Blocks above 256 KB are pooled: size-binned, capped, released under memory pressure."""

from __future__ import annotations

import numpy as np
import pytest

from ringkernel import ConfigurationError, GpuMemoryPool, InsufficientMemory, PoolConfig
from ringkernel.memory.backend import SimulatorBackend
from ringkernel.memory.pool import _large_bin

MiB = 1 << 20


def test_bins_waste_at_most_a_quarter() -> None:
    rng = np.random.default_rng(0)
    for n in rng.integers(256 * 1024 + 1, 1 << 31, 2000):
        b = _large_bin(int(n))
        assert n <= b <= 1.25 * n + 1 and _large_bin(b) == b


def test_a_freed_block_serves_the_next_request_of_its_size() -> None:
    backend = SimulatorBackend()
    pool = GpuMemoryPool(backend=backend)
    a = pool.allocate(3 * MiB + 5)
    ptr = a.ptr
    a.free()
    b = pool.allocate(3 * MiB + 100)  # the same bin
    assert b.ptr == ptr and backend.allocated_bytes == _large_bin(3 * MiB + 5)
    c = pool.allocate(5 * MiB)  # another bin: a new block
    assert c.ptr != ptr
    b.free()
    c.free()
    d = pool.diagnostics()
    assert d.cached_large_bytes == _large_bin(3 * MiB + 5) + 5 * MiB and d.live_block_bytes == 0
    assert d.hits >= 1


def test_the_cache_is_capped_and_large_limit_goes_direct() -> None:
    backend = SimulatorBackend()
    pool = GpuMemoryPool(PoolConfig(max_cached_large_bytes=4 * MiB, large_limit=16 * MiB), backend=backend)
    bufs = [pool.allocate(2 * MiB) for _ in range(3)]
    for b in bufs:
        b.free()
    assert pool.diagnostics().cached_large_bytes == 4 * MiB  # the third went back to the device
    assert backend.allocated_bytes == 4 * MiB
    huge = pool.allocate(32 * MiB)  # above large_limit: direct, freed when freed
    huge.free()
    assert backend.allocated_bytes == 4 * MiB


def test_memory_pressure_releases_the_cache_and_retries() -> None:
    backend = SimulatorBackend(total_bytes=24 * MiB)
    pool = GpuMemoryPool(PoolConfig(max_cached_large_bytes=64 * MiB), backend=backend)
    for size in (8 * MiB, 10 * MiB):  # 18 MiB cached after these are freed
        pool.allocate(size).free()
    assert pool.diagnostics().cached_large_bytes == 18 * MiB
    big = pool.allocate(16 * MiB)  # fits only once the cache is given back
    assert pool.diagnostics().cached_large_bytes == 0 and backend.allocated_bytes == 16 * MiB
    with pytest.raises(InsufficientMemory):
        pool.allocate(12 * MiB)  # nothing left to release: a clear error
    big.free()


def test_arrays_over_large_blocks_and_close_releases_the_cache() -> None:
    backend = SimulatorBackend()
    pool = GpuMemoryPool(backend=backend)
    a = pool.device_array((700, 1000), np.float32)  # 2.8 MB
    a.copy_to_device(np.ones((700, 1000), np.float32))
    assert float(a.copy_to_host().sum()) == 700_000.0
    del a
    import gc

    gc.collect()
    assert pool.diagnostics().cached_large_bytes > 0
    pool.close()
    assert backend.allocated_bytes == 0


def test_bad_large_options() -> None:
    with pytest.raises(ConfigurationError, match="large_limit"):
        PoolConfig(large_limit=-1)
    with pytest.raises(ConfigurationError, match="max_cached_large_bytes"):
        PoolConfig(max_cached_large_bytes=1.5)  # type: ignore[arg-type]


def test_the_default_cache_is_an_eighth_of_the_device() -> None:
    backend = SimulatorBackend(total_bytes=64 * MiB)
    pool = GpuMemoryPool(backend=backend)
    assert pool.max_cached_large_bytes == 8 * MiB
    for _ in range(3):
        pool.allocate(4 * MiB)
    bufs = [pool.allocate(4 * MiB) for _ in range(3)]
    for b in bufs:
        b.free()
    assert pool.diagnostics().cached_large_bytes == 8 * MiB
