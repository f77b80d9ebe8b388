"""GpuMemoryPool on the simulator backend: classes, reuse, limits, refusals, invariants under threads."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringkernel import ConfigurationError, ResourceClosedError
from ringkernel.errors import InsufficientMemory, InvalidFree
from ringkernel.memory import GpuMemoryPool, PoolConfig, SizeClass, SimulatorBackend

KiB = 1024


def _pool(**kw) -> GpuMemoryPool:  # type: ignore[no-untyped-def]
    return GpuMemoryPool(PoolConfig(**kw), backend=SimulatorBackend())


def test_size_classes() -> None:
    assert [c.bytes() for c in SizeClass] == [256, 1024, 4096, 16384, 65536, 262144]
    assert SizeClass.for_size(1) is SizeClass.SIZE_256B
    assert SizeClass.for_size(256) is SizeClass.SIZE_256B
    assert SizeClass.for_size(257) is SizeClass.SIZE_1KB
    assert SizeClass.for_size(256 * KiB) is SizeClass.SIZE_256KB
    assert SizeClass.for_size(256 * KiB + 1) is None
    for bad in (0, -1, 1.5, True, "8"):
        with pytest.raises(ConfigurationError):
            SizeClass.for_size(bad)  # type: ignore[arg-type]


def test_config_validation_and_presets() -> None:
    for bad in (dict(initial_counts=(1, 2)), dict(max_counts=(-1, 0, 0, 0, 0, 0)),
                dict(initial_counts=(10, 0, 0, 0, 0, 0), max_counts=(5, 1, 1, 1, 1, 1)),
                dict(max_pool_bytes=0), dict(slab_bytes=10),
                dict(initial_counts=(0, 0, 0, 0, 0, 10), max_pool_bytes=1 << 20)):  # fmt: skip
        with pytest.raises(ConfigurationError):
            PoolConfig(**bad)
    for preset in (PoolConfig.default(), PoolConfig.for_compute(), PoolConfig.for_messaging(), PoolConfig.minimal()):
        assert isinstance(preset, PoolConfig)


def test_lifo_reuse_and_hit_rate() -> None:
    pool = _pool()
    a = pool.allocate(100)
    pool.deallocate(a)
    b = pool.allocate(200)  # same class: the block just freed comes back first
    assert b.ptr == a.ptr and b.size_class is SizeClass.SIZE_256B
    d = pool.diagnostics()
    assert (d.hits, d.misses) == (1, 1) and d.hit_rate == 0.5
    assert d.classes[0].in_use == 1 and d.classes[0].slabs == 1
    assert d.live_bytes == 200 and d.live_block_bytes == 256


def test_slab_carving_one_driver_call_for_many_blocks() -> None:
    backend = SimulatorBackend()
    pool = GpuMemoryPool(PoolConfig(slab_bytes=64 * KiB), backend=backend)
    bufs = [pool.allocate(1000) for _ in range(64)]
    assert len(backend._blocks) == 1  # one slab of 64 x 1 KB
    ptrs = sorted(b.ptr for b in bufs)
    assert all(q - p >= 1024 for p, q in zip(ptrs, ptrs[1:]))


def test_data_isolation_between_blocks(rng: np.random.Generator) -> None:
    pool = _pool()
    bufs, expected = [], []
    for size in (100, 256, 1000, 5000, 70000, 300000):
        buf = pool.allocate(size)
        arr = buf.as_array(size // 4, np.float32)
        vals = rng.standard_normal(size // 4).astype(np.float32)
        arr.copy_to_device(vals) if hasattr(arr, "copy_to_device") else None
        arr._ary[:] = vals  # simulator arrays wrap host memory
        bufs.append(buf)
        expected.append(vals)
    for buf, vals in zip(bufs, expected):
        np.testing.assert_array_equal(buf.as_array(buf.nbytes // 4, np.float32).copy_to_host(), vals)


def test_as_array_shape_and_dtype_checks() -> None:
    pool = _pool()
    buf = pool.allocate(1000)  # a 1 KB block
    assert buf.as_array((16, 16), np.float32).shape == (16, 16)
    with pytest.raises(ConfigurationError, match="holds 1024"):
        buf.as_array(129, np.float64)
    buf.free()
    with pytest.raises(InvalidFree, match="freed"):
        buf.as_array(4)


def test_large_allocations_are_tracked_and_cached() -> None:
    backend = SimulatorBackend()
    pool = GpuMemoryPool(backend=backend)
    big = pool.allocate(1 << 20)
    assert big.size_class is None and big.capacity == 1 << 20
    d = pool.diagnostics()
    assert d.large_allocations == 1 and d.large_bytes == 1 << 20 and d.cached_large_bytes == 0
    pool.deallocate(big)
    d = pool.diagnostics()
    assert d.large_allocations == 0 and d.cached_large_bytes == 1 << 20  # kept for reuse
    assert backend.allocated_bytes == 1 << 20
    assert pool.compact() == 1 << 20 and backend.allocated_bytes == 0


def test_refusals_corrupt_nothing() -> None:
    pool = _pool()
    a = pool.allocate(100)
    b = pool.allocate(2000)
    before = pool.diagnostics()
    with pytest.raises(InvalidFree, match="not allocated by this pool"):
        pool.deallocate(0xDEAD)
    with pytest.raises(InvalidFree, match="wrong size"):
        pool.deallocate(b, 100)  # 2000 lives in the 4 KB class, 100 in the 256 B class
    with pytest.raises(InvalidFree):
        pool.deallocate("nope")  # type: ignore[arg-type]
    other = _pool()
    with pytest.raises(InvalidFree, match="another pool"):
        other.deallocate(a)
    assert pool.diagnostics() == before
    pool.deallocate(b, 3000)  # same class: accepted
    with pytest.raises(InvalidFree, match="double free"):
        pool.deallocate(b)
    c = pool.allocate(2000)  # gets b's block back
    assert c.ptr == b.ptr
    with pytest.raises(InvalidFree, match="double free"):
        pool.deallocate(b)  # the stale handle cannot free c's block
    pool.deallocate(c)
    pool.deallocate(a.ptr)  # a raw pointer works too


def test_max_pool_bytes_is_never_exceeded() -> None:
    pool = _pool(max_pool_bytes=300 * KiB, slab_bytes=64 * KiB)
    held = []
    with pytest.raises(InsufficientMemory) as err:
        while True:
            held.append(pool.allocate(16 * KiB))
            assert pool.diagnostics().pool_bytes <= 300 * KiB
    assert err.value.needed == 16 * KiB and "max_pool_bytes" in str(err.value)
    assert pool.diagnostics().pool_bytes <= 300 * KiB
    with pytest.raises(InsufficientMemory):
        pool.allocate(1 << 20)


def test_max_counts_overflow_goes_direct() -> None:
    pool = _pool(max_counts=(2, 2, 2, 2, 2, 2))
    bufs = [pool.allocate(100) for _ in range(3)]
    d = pool.diagnostics()
    assert d.classes[0].in_use == 2 and d.large_allocations == 1
    for b in bufs:
        b.free()
    assert pool.diagnostics().large_allocations == 0


def test_warm_bucket_and_compact() -> None:
    backend = SimulatorBackend()
    pool = GpuMemoryPool(PoolConfig(slab_bytes=16 * KiB), backend=backend)
    pool.warm_bucket(SizeClass.SIZE_4KB, 10)
    d = pool.diagnostics()
    assert d.classes[2].free >= 10 and d.misses == 0
    assert pool.compact() == d.classes[2].free * 4 * KiB  # all free: everything goes back
    first = [pool.allocate(4000) for _ in range(4)]  # one 16 KB slab
    second = [pool.allocate(4000) for _ in range(4)]  # another
    for b in first:
        b.free()
    assert pool.compact() == 16 * KiB
    d = pool.diagnostics()
    assert d.classes[2].slabs == 1 and d.classes[2].in_use == 4 and d.classes[2].free == 0
    assert d.pool_bytes == backend.allocated_bytes == 16 * KiB
    again = pool.allocate(4000)  # still works after compaction
    for b in second + [again]:
        b.free()
    pool.compact()
    assert backend.allocated_bytes == 0 and pool.diagnostics().pool_bytes == 0
    with pytest.raises(ConfigurationError):
        pool.warm_bucket(SizeClass.SIZE_256KB, 10**6)


def test_device_array_returns_to_pool_when_collected() -> None:
    import gc

    pool = _pool()
    arr = pool.device_array((10, 10), np.float64)
    assert arr.shape == (10, 10) and pool.diagnostics().classes[1].in_use == 1
    del arr
    gc.collect()
    assert pool.diagnostics().classes[1].in_use == 0


def test_close_is_idempotent_and_frees_everything() -> None:
    backend = SimulatorBackend()
    with GpuMemoryPool(PoolConfig.for_compute(), backend=backend) as pool:
        pool.allocate(1 << 20)
        assert backend.allocated_bytes > 0
    assert backend.allocated_bytes == 0
    pool.close()
    with pytest.raises(ResourceClosedError, match="closed"):
        pool.allocate(10)


# -- invariants under concurrency (hypothesis picks the operation mix; 4 threads) ---------
def _check_invariants(pool: GpuMemoryPool, live: dict[int, tuple[int, int]], cap: int) -> None:
    d = pool.diagnostics()
    spans = sorted((p, p + cap_) for p, (_, cap_) in live.items())
    for (s1, e1), (s2, _) in zip(spans, spans[1:]):
        assert e1 <= s2, "live blocks overlap"
    assert d.live_bytes == sum(n for n, _ in live.values())
    assert d.pool_bytes <= cap
    assert d.pool_bytes == pool.backend.allocated_bytes  # type: ignore[attr-defined]
    in_use = sum(c.in_use for c in d.classes) + d.large_allocations
    assert in_use == len(live)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), weights=st.tuples(st.integers(1, 10), st.integers(1, 10), st.integers(0, 2)))
def test_random_operations_from_four_threads_keep_invariants(seed: int, weights: tuple[int, int, int]) -> None:
    cap = 48 << 20
    pool = GpuMemoryPool(PoolConfig(max_pool_bytes=cap, slab_bytes=256 * KiB), backend=SimulatorBackend())
    sizes = [1, 200, 256, 1000, 4096, 9000, 65536, 200_000, 262144, 400_000]
    ops_per_thread = 25_000  # 100k operations in all
    lock = threading.Lock()
    live: dict[int, tuple[int, int]] = {}
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        rnd = random.Random(seed + k)
        mine: list = []
        try:
            for _ in range(ops_per_thread):
                op = rnd.choices(("alloc", "free", "compact"), weights=weights)[0]
                if op == "alloc" and len(mine) < 200:
                    try:
                        buf = pool.allocate(rnd.choice(sizes))
                    except InsufficientMemory:
                        continue
                    with lock:
                        assert buf.ptr not in live, "a live block was handed out twice"
                        live[buf.ptr] = (buf.nbytes, buf.capacity)
                    mine.append(buf)
                elif op == "free" and mine:
                    buf = mine.pop(rnd.randrange(len(mine)))
                    with lock:
                        del live[buf.ptr]
                    pool.deallocate(buf)
                elif op == "compact":
                    pool.compact()
            for buf in mine:
                with lock:
                    del live[buf.ptr]
                pool.deallocate(buf)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    _check_invariants(pool, live, cap)
    assert pool.diagnostics().live_bytes == 0
    pool.compact()
    assert pool.backend.allocated_bytes == 0  # type: ignore[attr-defined]
