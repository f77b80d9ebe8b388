"""The compiled allocate/deallocate (ringkernel/_native.c ``PoolMethod``) against the Python
methods: the same blocks, statistics and errors on a random trace, under a held lock, and
from threads. (conftest.py also runs every other memory test with both.)"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ringkernel import native
from ringkernel.errors import InvalidFree
from ringkernel.memory import GpuMemoryPool, PoolConfig
from ringkernel.memory import pool as P

pytestmark = pytest.mark.skipif(native.load() is None, reason="the compiled module is not available")

KiB, MiB = 1024, 1 << 20


def _trace(pool: GpuMemoryPool, seed: int) -> list:
    rng = np.random.default_rng(seed)
    live, log = [], []
    for _ in range(3000):
        if live and rng.random() < 0.45:
            buf = live.pop(int(rng.integers(len(live))))
            pool.deallocate(buf)
            log.append(("free", buf.ptr))
        else:
            n = int(np.exp(rng.uniform(np.log(1), np.log(8 * MiB))))
            buf = pool.allocate(n)
            live.append(buf)
            log.append(("alloc", n, buf.ptr, buf._i, buf.capacity))
    d = pool.diagnostics()
    log.append((d.live_bytes, d.peak_live_bytes, pool._hits, pool._misses, pool._large_room, len(pool._live)))
    for buf in live:
        buf.free()
    return log


def test_native_and_python_hand_out_the_same_blocks(pool_methods: str) -> None:
    if pool_methods != "native":
        pytest.skip("compares the native run with a Python run it makes itself")
    assert type(GpuMemoryPool.__dict__["allocate"]).__name__ == "PoolMethod"
    seed = int(np.random.default_rng().integers(1 << 30))
    cfg = PoolConfig(max_cached_large_bytes=64 * MiB)
    got = _trace(GpuMemoryPool(cfg), seed)
    P.uninstall_native_methods()
    want = _trace(GpuMemoryPool(cfg), seed)
    assert got == want, f"seed {seed}"


def test_errors_come_from_the_python_method(pool_methods: str) -> None:
    pool = GpuMemoryPool()
    buf = pool.allocate(100)
    buf.free()
    with pytest.raises(InvalidFree, match="double free"):
        pool.deallocate(buf)
    with pytest.raises(InvalidFree, match="not allocated by this pool"):
        pool.deallocate(12345)
    other = GpuMemoryPool()
    b2 = other.allocate(64)
    with pytest.raises(InvalidFree):
        pool.deallocate(b2)
    b2.free()
    for bad in (0, -5, 2.5, "100", None, True):
        with pytest.raises(Exception):  # noqa: B017 - the Python method's own error for each
            pool.allocate(bad)  # type: ignore[arg-type]
    big = pool.allocate(3 * MiB)
    pool.deallocate(big, 3 * MiB)  # a size given: the Python method checks it
    pool.close()
    with pytest.raises(Exception, match="closed"):
        pool.allocate(100)
    other.close()


def test_a_held_lock_sends_calls_to_the_python_method(pool_methods: str) -> None:
    """A thread holding the pool's lock (growing a class, say): the compiled path never
    touches the free lists meanwhile; the call waits in the Python method."""
    pool = GpuMemoryPool()
    pool.allocate(256).free()
    done = threading.Event()
    pool._lock.acquire()
    t = threading.Thread(target=lambda: (pool.allocate(256).free(), done.set()))
    t.start()
    assert not done.wait(0.2)  # waiting, not racing
    pool._lock.release()
    t.join(5)
    assert done.is_set()
    pool.close()


def test_threads_allocate_and_free_without_loss(pool_methods: str) -> None:
    pool = GpuMemoryPool()
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            mine = []
            for _ in range(2000):
                if mine and rng.random() < 0.5:
                    mine.pop(int(rng.integers(len(mine)))).free()
                else:
                    mine.append(pool.allocate(int(rng.integers(1, 600 * KiB))))
            ptrs = [b.ptr for b in mine]
            assert len(set(ptrs)) == len(ptrs)
            for b in mine:
                b.free()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    d = pool.diagnostics()
    assert d.live_bytes == 0 and not pool._live
    pool.close()
