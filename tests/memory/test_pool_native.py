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


FINALIZER_SCRIPT = """
import faulthandler, gc, sys
faulthandler.dump_traceback_later(60, exit=True)
from ringkernel.memory import GpuMemoryPool, PoolConfig
from ringkernel.memory import pool as P
mode, op = sys.argv[1], sys.argv[2]
P.install_native_methods() if mode == "native" else P.uninstall_native_methods()
pool = GpuMemoryPool(PoolConfig(max_cached_large_bytes=64 << 20))
refused = []
class G:
    def __init__(s, buf): s.me = s; s.buf = buf
    def __del__(s):
        if op == "free":
            pool.deallocate(s.buf)
        elif op == "close":
            s.buf.close()
        else:
            try:
                pool.allocate(100).free()
            except RuntimeError as exc:
                refused.append(str(exc))
for b in [pool.allocate(100) for _ in range(50)]:
    b.free()
gc.set_threshold(1)
for k in range(2000):
    G(pool.allocate(100) if op != "alloc" else None)
    pool.allocate(64).free()
gc.set_threshold(700)
gc.collect()
pool.allocate(64).free()  # (returns what the finalizers queued)
print("live", pool.diagnostics().live_bytes, "refused", len(refused), refused[:1])
"""


@pytest.mark.parametrize("op", ["free", "close", "alloc"])
def test_finalizers_inside_pool_calls_never_hang(pool_methods: str, op: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A collection inside allocate (this thread holds the lock) runs a __del__ that frees a
    buffer (queued, returned by the next call), closes one (the same) or allocates (refused
    with an error that says why): before, each of these waited for the lock for ever."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), NUMBA_ENABLE_CUDASIM="1", RINGKERNEL_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", FINALIZER_SCRIPT, pool_methods, op], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "live 0 " in out.stdout, out.stdout
    if op == "alloc":
        assert "already holds the memory pool's lock" in out.stdout or "refused 0" in out.stdout


def test_lock_timeouts_and_self_deadlock(pool_methods: str) -> None:
    pool = GpuMemoryPool()
    lock = pool._lock
    for bad, err in ((float("nan"), ValueError), (-2.0, ValueError)):
        with pytest.raises(err):
            lock.acquire(timeout=bad)
    assert lock.acquire(timeout=0.1) and lock.held_by_me()
    with pytest.raises(RuntimeError, match="already holds the memory pool's lock"):
        lock.acquire()  # waiting for oneself would never end
    with pytest.raises(RuntimeError, match="already holds"):
        pool.allocate(100)
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(lock.acquire(timeout=0.05)))
    t.start()
    t.join()
    assert got == [False] and not threading.Thread().is_alive()
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()
    if pool_methods == "native":
        for huge in (float("inf"), 1e300):
            with pytest.raises(OverflowError):
                lock.acquire(timeout=huge)
    pool.allocate(100).free()
    pool.close()
