"""The garbage-collector stress behind tests/memory/test_lifetimes.py, run in a subprocess.

    python tests/memory/_gc_stress.py pool 100000 [SECONDS]    # GpuMemoryPool.device_array (simulator)
    python tests/memory/_gc_stress.py plugin 100000 [SECONDS]  # numba's allocator plugin: numba's real
                                                               # driver module, a simulated pool (no GPU)

After SECONDS (default 90) every thread's traceback is printed and the process exits, so a
hang shows where it waits.

Objects in reference cycles hold pooled arrays, so only the cyclic collector frees them,
and it runs (small thresholds) wherever Python allocates: also inside the pool's lock.
Before the pool's pending list, a finalizer then waited on a lock its own thread held:
a deadlock. A subprocess, because a deadlocked thread cannot be stopped, and because
``gc.set_threshold`` is process-wide. Prints one JSON line; the test reads it.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import sys
import threading
import time
from typing import Any, Callable

if sys.argv[1:2] == ["plugin"]:  # numba's real EMM classes: not the simulator (no GPU is touched)
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    os.environ["RINGKERNEL_SIMULATOR"] = "0"
else:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402

import ringkernel  # noqa: E402, F401  (before numba.cuda: it picks simulator or not)
from ringkernel.memory import GpuMemoryPool, PoolConfig, SimulatorBackend  # noqa: E402


class CollectingBackend(SimulatorBackend):
    """Runs the collector inside every ``alloc``, which the pool calls holding its lock.

    The natural pattern below reaches that state only when an allocation inside the lock
    happens to cross the collector's threshold; this makes it happen on every slab and
    direct allocation, so the test fails the same way on every run and Python version.
    """

    collections = 0

    def alloc(self, nbytes: int) -> int:
        CollectingBackend.collections += 1
        gc.collect()
        return super().alloc(nbytes)


class Node:
    """Half of a reference cycle: freed by the cyclic collector only."""

    peer: Any
    mem: Any


def _cycles(n: int, allocate: Callable[[int], Any], lock: Any, start: int = 0) -> dict[str, int]:
    """``n`` iterations: two objects in a cycle, one holding a fresh allocation."""
    # Sizes from every class, and now and then one above 256 KB (a direct allocation, which
    # calls backend.alloc under the lock).
    sizes = (64, 1000, 4000, 16_000, 64_000, 200_000, 64, 64, 300, 300_000)
    seen = {"collections": 0, "inside_lock": 0}

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["collected"]:
            seen["collections"] += 1
            if lock.locked():
                seen["inside_lock"] += 1

    gc.callbacks.append(watch)
    try:
        for k in range(start, start + n):
            if k % 5000 == 0:  # thresholds 1..16: where the collector lands moves with them
                gc.set_threshold(1 + (k // 5000) % 16, 5, 5)
            a, b = Node(), Node()
            a.peer, b.peer = b, a
            size = sizes[k % len(sizes)]
            if size > 262_144 and k % 1000:
                size = 64
            a.mem = allocate(size)
    finally:
        gc.callbacks.remove(watch)
    return seen


def _threads(n: int, allocate: Callable[[int], Any], lock: Any) -> None:
    """Two threads: a finalizer on one runs while the other holds the lock."""
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            _cycles(n // 2, allocate, lock, start=k)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def _settle(pool: GpuMemoryPool) -> dict[str, Any]:
    gc.set_threshold(700, 10, 10)
    gc.collect()
    d = pool.diagnostics()  # drains the pending list
    return {
        "live_bytes": d.live_bytes,
        "in_use": sum(c.in_use for c in d.classes) + d.large_allocations,
        "pool_bytes": d.pool_bytes,
        "hits": d.hits,
        "misses": d.misses,
    }


def run_pool(n: int) -> dict[str, Any]:
    backend = CollectingBackend()
    pool = GpuMemoryPool(PoolConfig(slab_bytes=64 * 1024), backend=backend)

    def allocate(size: int) -> Any:
        return pool.device_array(size // 4, np.float32)

    t0 = time.perf_counter()
    seen = _cycles(n, allocate, pool._lock)
    t1 = time.perf_counter()
    _threads(n // 10, allocate, pool._lock)
    t2 = time.perf_counter()
    out = {"mode": "pool", "iterations": n, "seconds": round(t1 - t0, 3), "thread_seconds": round(t2 - t1, 3),
           **seen, "backend_collections": CollectingBackend.collections, **_settle(pool)}  # fmt: skip
    pool.close()
    out["closed_backend_bytes"] = backend.allocated_bytes
    return out


def plugin_lifetime() -> dict[str, Any]:
    """The plugin's pool closed under numba: refusals, and a new pool for a new context."""
    from ringkernel.errors import ResourceClosedError
    from ringkernel.memory import numba_plugin, plugin_state

    class Context:
        pass

    numba_plugin.DriverBackend = lambda context: SimulatorBackend()  # type: ignore[assignment,misc]
    manager = numba_plugin.RingKernelMemoryManager(context=Context())
    manager.initialize()
    first = plugin_state.plugin_pool()
    assert first is manager.pool
    held = manager.memalloc(100)
    first.close()
    out: dict[str, Any] = {"closed_diagnostics": first.diagnostics().closed, "held_in_use": first.diagnostics().live_bytes}
    try:
        manager.memalloc(100)
        out["memalloc_after_close"] = "allowed"
    except ResourceClosedError as exc:
        out["memalloc_after_close"] = type(exc).__name__
        out["memalloc_message"] = str(exc)
    manager.reset()  # numba resets contexts: a closed pool is no reason to fail
    out["memory_info_after_close"] = manager.get_memory_info().total > 0
    del held
    gc.collect()
    out["held_released"] = first.diagnostics().live_bytes == 0 and not first._finalizer.alive
    again = numba_plugin.RingKernelMemoryManager(context=Context())
    again.initialize()  # as numba does for a new context
    out["replaced"] = again.pool is not first and not again.pool.closed and plugin_state.plugin_pool() is again.pool
    plugin_state.reset()  # closes the second pool
    out["reset"] = again.pool.closed and plugin_state.plugin_pool() is None
    return out


def run_plugin(n: int) -> dict[str, Any]:
    from ringkernel.memory.numba_plugin import RingKernelMemoryManager

    lifetime = plugin_lifetime()

    class Context:  # numba's manager needs one only to name it in its pointers
        pass

    context = Context()
    manager = RingKernelMemoryManager(context=context)
    backend = CollectingBackend()
    manager.pool = pool = GpuMemoryPool(PoolConfig(slab_bytes=64 * 1024), backend=backend)
    # A view of an allocation keeps it: numba frees it when the last view is gone.
    mem = manager.memalloc(1000)
    view = mem.view(100)
    del mem
    gc.collect()
    view_kept = pool.diagnostics().live_bytes == 1000
    del view
    gc.collect()
    view_released = pool.diagnostics().live_bytes == 0

    t0 = time.perf_counter()
    seen = _cycles(n, manager.memalloc, pool._lock)
    t1 = time.perf_counter()
    _threads(n // 10, manager.memalloc, pool._lock)
    t2 = time.perf_counter()
    out = {"mode": "plugin", "iterations": n, "seconds": round(t1 - t0, 3), "thread_seconds": round(t2 - t1, 3),
           **seen, "backend_collections": CollectingBackend.collections, **_settle(pool),
           "view_kept": view_kept, "view_released": view_released, "lifetime": lifetime}  # fmt: skip
    pool.close()
    out["closed_backend_bytes"] = backend.allocated_bytes
    return out


def main() -> int:
    mode, n = sys.argv[1], int(sys.argv[2])
    faulthandler.dump_traceback_later(float(sys.argv[3]) if len(sys.argv) > 3 else 90.0, exit=True)
    result = run_pool(n) if mode == "pool" else run_plugin(n)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
