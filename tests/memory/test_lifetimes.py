"""Lifetimes of the memory package: close(), use after close, finalizers, and the collector.

Every resource (GpuMemoryPool, PooledBuffer, ManagedBuffer, the numba plugin's pool) closes
idempotently, works as a context manager, is released by ``weakref.finalize`` when
collected, and refuses use after close with ``ResourceClosedError``. Arrays still alive when
their pool closes keep their memory. Finalizers never wait for the pool's lock: the
reproduction of the deadlock that caused (objects in reference cycles holding pooled arrays,
the collector running inside ``allocate``) runs in a subprocess, with a timeout.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import ringkernel
from ringkernel import ManagedBuffer, RingKernelError
from ringkernel.errors import InvalidFree, ResourceClosedError
from ringkernel.memory import GpuMemoryPool, PoolConfig, PooledBuffer, SimulatorBackend, SizeClass

ROOT = Path(__file__).resolve().parents[2]
STRESS = Path(__file__).with_name("_gc_stress.py")
KiB = 1024


def _pool(backend: SimulatorBackend | None = None, **kw: Any) -> GpuMemoryPool:
    return GpuMemoryPool(PoolConfig(**kw), backend=backend or SimulatorBackend())


def _in_use(pool: GpuMemoryPool) -> int:
    d = pool.diagnostics()
    return sum(c.in_use for c in d.classes) + d.large_allocations


def _finishes(fn: Callable[[], None], timeout: float = 20.0) -> None:
    """Run ``fn`` on a daemon thread; fail (instead of hanging the suite) if it does not return."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"did not finish in {timeout} s: a finalizer is waiting for a lock (deadlock)"
    if errors:
        raise errors[0]


def _refused(call: Callable[[], Any], resource: str, operation: str | None = None) -> ResourceClosedError:
    with pytest.raises(ResourceClosedError) as err:
        call()
    e = err.value
    assert isinstance(e, RingKernelError) and not isinstance(e, (KeyError, AttributeError, TypeError))
    assert e.resource == resource and "closed" in str(e) and e.hint and "new" in e.hint
    if operation is not None:
        assert e.operation == operation
    return e


def test_resource_closed_error_is_public() -> None:
    assert ringkernel.ResourceClosedError is ResourceClosedError
    assert "ResourceClosedError" in ringkernel.__all__ and "ResourceClosedError" in ringkernel.errors.__all__
    e = ResourceClosedError("GpuMemoryPool", operation="allocate")
    assert (e.resource, e.operation, e.details["resource"]) == ("GpuMemoryPool", "allocate", "GpuMemoryPool")


# -- GpuMemoryPool: use after close ---------------------------------------------------------
POOL_METHODS: dict[str, Callable[[GpuMemoryPool, PooledBuffer], Any]] = {
    "allocate": lambda pool, buf: pool.allocate(100),
    "device_array": lambda pool, buf: pool.device_array(10, np.float32),
    "warm_bucket": lambda pool, buf: pool.warm_bucket(SizeClass.SIZE_1KB, 4),
    "compact": lambda pool, buf: pool.compact(),
    "reset_peaks": lambda pool, buf: pool.reset_peaks(),
    "PooledBuffer.as_array": lambda pool, buf: buf.as_array(10, np.float32),
}


@pytest.mark.parametrize("method", sorted(POOL_METHODS))
def test_pool_refuses_use_after_close(method: str) -> None:
    pool = _pool()
    buf = pool.allocate(100)  # a buffer from before the close, still held
    pool.close()
    operation = method if method != "device_array" else "allocate"
    _refused(lambda: POOL_METHODS[method](pool, buf), "GpuMemoryPool", operation)
    assert pool.closed and pool.diagnostics().closed  # the refusal changed nothing


@pytest.mark.parametrize("size", [100, 5000, 1 << 20])  # a pooled block (two classes) and a direct one
def test_pool_refuses_after_close_for_every_size(size: int) -> None:
    pool = _pool()
    pool.deallocate(pool.allocate(size))  # the class has a free block: the hot path would take it
    pool.close()
    _refused(lambda: pool.allocate(size), "GpuMemoryPool", "allocate")


def test_pool_diagnostics_after_close_say_closed() -> None:
    backend = SimulatorBackend()
    pool = _pool(backend)
    before = pool.diagnostics()
    assert not before.closed and before.to_dict()["closed"] is False
    kept = pool.allocate(3000)
    pool.deallocate(pool.allocate(100))
    pool.close()
    d = pool.diagnostics()
    assert d.closed and d.to_dict()["closed"] is True
    assert [c.in_use for c in d.classes] == [0, 0, 1, 0, 0, 0] and all(c.free == 0 for c in d.classes)
    assert d.live_bytes == 3000 and d.pool_bytes == backend.allocated_bytes > 0
    assert "closed" in repr(pool)
    kept.free()
    d = pool.diagnostics()
    assert d.closed and d.pool_bytes == d.live_bytes == backend.allocated_bytes == 0


def test_double_close_and_close_inside_with() -> None:
    backend = SimulatorBackend()
    with _pool(backend) as pool:
        with pool.allocate(100) as buf:
            buf.close()
            buf.close()  # idempotent; `with` closes it a third time
        with pool.allocate(100) as buf2:
            buf2.free()  # an explicit free inside `with` is no double free any more
        pool.close()
        pool.close()
    pool.close()
    assert pool.closed and backend.allocated_bytes == 0
    b = _pool().allocate(1)
    b.free()
    with pytest.raises(InvalidFree, match="double free"):
        b.free()  # free() itself still reports a double free while the pool is open
    b.close()  # close() after free(): nothing to do
    assert b.closed


def test_freeing_after_close() -> None:
    """A closed pool returns blocks still in use when freed; anything else is a no-op."""
    backend = SimulatorBackend()
    pool = _pool(backend)
    held, freed, big = pool.allocate(100), pool.allocate(100), pool.allocate(1 << 20)
    freed.free()
    pool.close()
    freed.free()  # freed before close: a no-op, not an error
    freed.close()
    assert not held.closed  # still in use: its memory stays valid
    pool.deallocate(big.ptr)  # by pointer
    pool.deallocate(big.ptr)  # twice: nothing left to do
    with pytest.raises(InvalidFree, match="another pool"):
        _pool().deallocate(held)
    with pytest.raises(InvalidFree):
        pool.deallocate("nope")  # type: ignore[arg-type]
    with pytest.raises(InvalidFree, match="wrong size"):
        pool.deallocate(held, 5000)  # a real mistake is still one
    assert not held.closed
    held.free()
    assert held.closed and _in_use(pool) == 0 and backend.allocated_bytes == 0


def test_live_arrays_keep_their_memory_after_close(rng: np.random.Generator) -> None:
    """No use after free: close() keeps the slab of a block in use until the block dies."""
    backend = SimulatorBackend()
    pool = _pool(backend)
    data = rng.standard_normal(64).astype(np.float32)
    arr = pool.device_array(64, np.float32)
    arr.copy_to_device(data)
    buf = pool.allocate(4000)
    view = buf.as_array(1000, np.float32)
    view.copy_to_device(np.resize(data, 1000))  # data, repeated
    pool.allocate(5000)  # dropped without free(): nothing can reach it, so close() releases it
    pool.deallocate(pool.allocate(70_000))  # an idle slab
    pool.close()
    assert _in_use(pool) == 2
    np.testing.assert_array_equal(arr.copy_to_host(), data)  # still there, not handed to anyone
    half = arr[32:]
    del arr
    gc.collect()
    assert _in_use(pool) == 2  # a slice still points into the block
    half[0] = 7.0
    np.testing.assert_array_equal(half.copy_to_host()[1:], data[33:])
    del half
    gc.collect()
    assert _in_use(pool) == 1
    np.testing.assert_array_equal(view.copy_to_host()[:64], data)
    buf_fin_pool = pool._finalizer
    del buf  # the view holds the buffer: its block stays
    gc.collect()
    assert _in_use(pool) == 1 and buf_fin_pool.alive
    del view
    gc.collect()
    assert _in_use(pool) == 0 and backend.allocated_bytes == 0 and not buf_fin_pool.alive


def test_close_force_releases_everything_now() -> None:
    backend = SimulatorBackend()
    pool = _pool(backend)
    arr = pool.device_array(100, np.float32)
    buf = pool.allocate(1 << 20)
    pool.close()
    assert backend.allocated_bytes > 0
    pool.close(force=True)  # escalates a close that is waiting for blocks
    assert backend.allocated_bytes == 0 and _in_use(pool) == 0 and not pool._finalizer.alive
    assert buf.closed
    buf.free()  # released by force: a no-op
    del arr
    gc.collect()  # its finalizer finds nothing to return
    d = pool.diagnostics()
    assert d.closed and d.pool_bytes == d.live_bytes == 0
    other = _pool(backend)
    other.allocate(100)
    other.close(force=True)  # force on an open pool
    assert backend.allocated_bytes == 0


# -- finalizers ------------------------------------------------------------------------------
def test_pool_finalizer_runs_on_collection() -> None:
    backend = SimulatorBackend()
    pool = _pool(backend)
    pool.allocate(100)  # never freed: the pool's finalizer releases it
    pool.device_array(10)
    fin = pool._finalizer
    del pool
    gc.collect()
    assert not fin.alive and backend.allocated_bytes == 0


def test_arrays_and_views_keep_their_pool_alive() -> None:
    backend = SimulatorBackend()
    pool = _pool(backend)
    arr = pool.device_array(10)
    view = pool.allocate(100).as_array(25, np.float32)  # the buffer itself is dropped
    fin = pool._finalizer
    del pool
    gc.collect()
    assert fin.alive and backend.allocated_bytes > 0  # released now would be a use after free
    view[0] = 1.0
    del arr
    gc.collect()
    assert fin.alive
    del view
    gc.collect()
    assert not fin.alive and backend.allocated_bytes == 0


def test_closed_pool_finalizer_runs_when_the_last_held_block_returns() -> None:
    backend = SimulatorBackend()
    pool = _pool(backend)
    buf = pool.allocate(100)
    pool.close()
    assert pool._finalizer.alive and backend.allocated_bytes > 0
    del buf  # collected, not freed: its block comes back all the same
    gc.collect()
    assert not pool._finalizer.alive and backend.allocated_bytes == 0 and _in_use(pool) == 0


def test_pool_closed_with_nothing_in_use_releases_at_once() -> None:
    backend = SimulatorBackend()
    pool = _pool(backend, initial_counts=(4, 4, 0, 0, 0, 0))
    pool.device_array(10)  # collected at once (refcount)
    pool.close()
    assert not pool._finalizer.alive and backend.allocated_bytes == 0


# -- the pending list: finalizers never wait for the pool's lock --------------------------
def test_finalizer_while_the_lock_is_held_does_not_wait() -> None:
    pool = _pool()

    def body() -> None:
        arr = pool.device_array(10)
        with pool._lock:  # as allocate holds it when the collector runs inside it
            del arr  # the finalizer runs here, on the thread holding the lock
        assert len(pool._pending) == 1  # queued, not waiting
        assert _in_use(pool) == 0  # diagnostics drained it

    _finishes(body)


def test_collections_inside_allocate_return_every_block() -> None:
    """The collector running inside allocate (here: forced in backend.alloc, under the lock)."""

    class CollectingBackend(SimulatorBackend):
        def alloc(self, nbytes: int) -> int:
            gc.collect()
            return super().alloc(nbytes)

    backend = CollectingBackend()
    pool = _pool(backend, slab_bytes=4 * KiB)

    class Node:
        peer: Any
        arr: Any

    def body() -> None:
        for k in range(300):
            a, b = Node(), Node()
            a.peer, b.peer = b, a
            a.arr = pool.device_array(75_000 if k % 10 == 1 else 64, np.float32)  # 300 KB: direct
        del a, b
        gc.collect()
        assert _in_use(pool) == 0 and pool.diagnostics().live_bytes == 0

    _finishes(body)
    pool.close()
    assert backend.allocated_bytes == 0


def _stress(mode: str, n: int, timeout: float = 90.0) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, str(STRESS), mode, str(n), str(timeout - 5)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - the bug this guards against
        raise AssertionError(f"{mode}: {n} iterations did not finish in {timeout} s (deadlock)") from exc
    assert r.returncode == 0, f"{mode} stress failed or hung (tracebacks below):\n{r.stderr[-6000:]}"
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"{mode}: {n} iterations in {out['seconds']} s (+{out['thread_seconds']} s on 2 threads), "
          f"{time.perf_counter() - t:.1f} s with start-up; {out['inside_lock']} collections inside the lock")  # fmt: skip
    return out


def _check_settled(out: dict[str, Any]) -> None:
    assert out["inside_lock"] > 0, "the reproduction never ran the collector inside the pool's lock"
    assert out["live_bytes"] == 0 and out["in_use"] == 0, out  # every block back after gc.collect + drain
    assert out["closed_backend_bytes"] == 0


def test_cyclic_garbage_with_pooled_arrays_never_deadlocks() -> None:
    """The reproduction: 100000 objects in cycles holding pooled arrays, collector thresholds 1..16.

    Before the pending list this hung at the first collection inside the lock.
    """
    _check_settled(_stress("pool", 100_000))


def test_numba_plugin_path_survives_the_same_collector_pattern() -> None:
    """numba's allocator plugin (numba_plugin.RingKernelMemoryManager.memalloc) under the same pattern,
    and its pool's lifetime: closed, it refuses numba's allocations; a new context gets a new pool."""
    out = _stress("plugin", 100_000)
    _check_settled(out)
    assert out["view_kept"] and out["view_released"]  # a slice keeps its allocation
    life = out["lifetime"]
    assert life["closed_diagnostics"] and life["held_in_use"] == 100
    assert life["memalloc_after_close"] == "ResourceClosedError" and "plugin_pool()" in life["memalloc_message"]
    assert life["memory_info_after_close"] and life["held_released"] and life["replaced"] and life["reset"]


# -- ManagedBuffer ---------------------------------------------------------------------------
MANAGED_METHODS: dict[str, Callable[[ManagedBuffer], Any]] = {
    "write": lambda mb: mb.write(np.zeros(8, np.float32)),
    "read": lambda mb: mb.read(),
    "device_view": lambda mb: mb.device_view(readonly=True),
    "device": lambda mb: mb.device,
    "__cuda_array_interface__": lambda mb: mb.__cuda_array_interface__,
    "mark_device_dirty": lambda mb: mb.mark_device_dirty(),
}


@pytest.mark.parametrize("method", sorted(MANAGED_METHODS))
def test_managed_buffer_refuses_use_after_close(method: str) -> None:
    mb = ManagedBuffer(8, np.float32)
    mb.close()
    operation = {"device": "device_view", "__cuda_array_interface__": "device_view"}.get(method, method)
    _refused(lambda: MANAGED_METHODS[method](mb), "ManagedBuffer", operation)
    assert mb.closed and mb.shape == (8,) and mb.size == 8 and "closed" in repr(mb)


def test_managed_buffer_close_idempotent_with_and_finalizer(rng: np.random.Generator) -> None:
    pool = _pool()
    data = rng.standard_normal(16).astype(np.float32)
    with ManagedBuffer(16, pool=pool, data=data) as mb:
        np.testing.assert_array_equal(mb.read(), data)
        mb.close()
        mb.close()
    assert _in_use(pool) == 0  # the pooled device side went back
    mb2 = ManagedBuffer(16, pool=pool, data=data)
    fin = mb2._finalizer
    assert fin.alive and _in_use(pool) == 1
    del mb2
    gc.collect()
    assert not fin.alive and _in_use(pool) == 0


def test_managed_buffer_and_a_closed_pool(rng: np.random.Generator) -> None:
    backend = SimulatorBackend()
    pool = _pool(backend)
    data = rng.standard_normal(16).astype(np.float32)
    mb = ManagedBuffer(16, pool=pool, data=data)
    pool.close()
    np.testing.assert_array_equal(mb.device.copy_to_host(), data)  # its device side stays valid
    mb.write(data * 2)
    np.testing.assert_array_equal(mb.read(), data * 2)
    mb.close()
    gc.collect()
    assert backend.allocated_bytes == 0
    _refused(lambda: ManagedBuffer(16, pool=pool), "GpuMemoryPool", "allocate")
