"""Issue 12's memory figures: allocate+free from 256 B to 256 MiB, ``pool.device_array``,
peak/live on a random trace, and numba with the allocator plugin against without.

    python benchmarks/memory_sizes.py --out benchmarks/results/memory_sizes.json [--rounds 5]

Every path is measured against CuPy and numba in the same process (the plugin comparison
in two processes, see below), in ``--rounds`` interleaved rounds (each round's paths timed in 20 alternating slices, see
``time_interleaved``; the order of the paths
rotates by one each round); the figure reported is the median of the per-round medians.

* ``alloc_free_us.<bytes>.{ringkernel,cupy,numba}``: one allocate+free pair at 256 B,
  4 KiB, 64 KiB, 1 MiB, 16 MiB and 256 MiB: ``pool.deallocate(pool.allocate(n))``;
  ``cupy.cuda.alloc(n)`` dropped at once (CuPy's default memory pool); numba's
  ``cuda.current_context().memalloc(n)`` dropped at once (numba's own memory manager:
  ``cuMemAlloc``, frees deferred and flushed every 10).
* ``device_array_us``: ``pool.device_array(shape, dtype)`` (whatever it returns; its type is
  recorded) against ``cupy.empty`` and numba's ``cuda.device_array``, for a few shapes, each
  dropped at once; ``ratio`` = ringkernel / CuPy, the largest over the shapes.
* ``peak_over_live``: a random trace (sizes log-uniform in [1 KiB, 64 MiB], a random live
  set of at most 2 GiB, 20000 operations, seeded) replayed on a fresh ringkernel pool, on
  CuPy's ``MemoryPool`` and on a ringkernel pool without the cache budget
  (``large_cache_headroom=math.inf, large_reuse_bins=0``: the large-block cache before it).
* ``numba_plugin_us``: a plain numba program's ``cuda.device_array(n, uint8)`` + free with
  ``NUMBA_CUDA_MEMORY_MANAGER=ringkernel.memory`` (``with``) and without (``without``);
  numba picks its memory manager at import, so each is measured in a child process (this
  script with ``--child``), one child of each kind per round, in alternating order. The
  breakdown: ``memalloc`` (``ctx.memalloc(n)`` + free: the memory manager alone) and
  ``construct`` (numba's ``DeviceNDArray`` over memory allocated already: the floor that
  no memory manager changes).

Refuses to run on numba's simulator (exit 2). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import gc
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SIZES = (256, 4 * KiB, 64 * KiB, 1 * MiB, 16 * MiB, 256 * MiB)
ARRAY_SHAPES = (((256,), "float32"), ((1000, 3), "int32"), ((64, 64, 64), "float64"), ((1024, 1024), "float32"))
PLUGIN_SIZES = (256, 64 * KiB, 1 * MiB)
BATCH = 10  # calls per timed sample: numba flushes its deferred frees every 10


def log(msg: str) -> None:
    print(f"[memory_sizes {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def calls_for(path: str, n: int) -> int:
    """Calls per round: fewer for numba (a driver call each) and for the largest sizes."""
    base = 20000 if n <= 1 * MiB else 5000 if n <= 16 * MiB else 2000
    if path == "numba":
        base = 2000 if n <= 1 * MiB else 500 if n <= 16 * MiB else 100
    return base


def time_calls(fn: Callable[[], Any], calls: int) -> float:
    """Median over batches of ``BATCH`` calls of the time per call, in microseconds; the
    garbage collector paused (for every path alike). One path of :func:`time_interleaved`."""
    return time_interleaved({"fn": fn}, {"fn": max(5 * BATCH, calls)}, chunks=1)["fn"]


def time_interleaved(fns: dict[str, Callable[[], Any]], calls: dict[str, int], chunks: int = 20,
                     r: int = 0, runners: dict[str, Callable[[int], None]] | None = None) -> dict[str, float]:  # fmt: skip
    """``time_calls`` for several paths at once: each path's batches are split into ``chunks``
    slices run in turn (the order rotating by round and chunk), so every path is timed over
    the same stretch of the round. Some hosts change speed in steps (all paths' times jump by
    ~2x between two levels for seconds at a time); timed one after another, a path could then
    fall on the slow level and another on the fast one, which decided the comparison rather
    than the code. ``runners[name](k)``, where given, makes ``k`` calls itself in an inline loop
    (what a program writes), instead of ``k`` calls of ``fns[name]``. Median over each path's
    batches, microseconds per call."""
    names = list(fns)
    per = {k: max(chunks, calls[k] // BATCH) // chunks for k in names}
    samples: dict[str, list[int]] = {k: [] for k in names}
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for c in range(chunks):
            for name in rotated(names, r + c):
                fn, out = fns[name], samples[name]
                run = runners.get(name) if runners else None
                for _ in range(per[name]):
                    t = clock()
                    if run is not None:
                        run(BATCH)
                    else:
                        for _ in range(BATCH):
                            fn()
                    out.append(clock() - t)
    finally:
        gc.enable()
    return {k: float(np.median(v)) / BATCH / 1e3 for k, v in samples.items()}


def rotated(items: list[Any], r: int) -> list[Any]:
    k = r % len(items)
    return items[k:] + items[:k]


def median_of(rounds: list[float]) -> float:
    return float(np.median(rounds))


# -- the random trace -----------------------------------------------------------------------
def random_trace(seed: int = 0, ops: int = 20000, cap: int = 2 * GiB) -> list[tuple[int, int]]:
    """(id, bytes) allocates, (id, 0) frees (tests/memory/test_pool_large.py replays it too).

    Sizes log-uniform in [1 KiB, 64 MiB]; each step allocates with probability 0.55, else
    frees a random live block; an allocation that would take the live bytes past ``cap``
    frees instead.
    """
    rnd = random.Random(seed)
    lo, hi = math.log(1 * KiB), math.log(64 * MiB)
    out: list[tuple[int, int]] = []
    live: list[tuple[int, int]] = []
    live_bytes = 0
    for k in range(ops):
        n = int(math.exp(rnd.uniform(lo, hi)))
        if live and (rnd.random() >= 0.55 or live_bytes + n > cap):
            j = rnd.randrange(len(live))
            live[j], live[-1] = live[-1], live[j]
            i, size = live.pop()
            live_bytes -= size
            out.append((i, 0))
        else:
            out.append((k, n))
            live.append((k, n))
            live_bytes += n
    return out


def replay_ringkernel(trace: list[tuple[int, int]], config: Any) -> dict[str, Any]:
    from ringkernel import GpuMemoryPool

    pool = GpuMemoryPool(config)
    bufs: dict[int, Any] = {}
    t = time.perf_counter()
    for i, n in trace:
        if n:
            bufs[i] = pool.allocate(n)
        else:
            pool.deallocate(bufs.pop(i))
    seconds = time.perf_counter() - t
    d = pool.diagnostics()
    for b in bufs.values():
        pool.deallocate(b)
    pool.close()
    return {"peak_over_live": d.peak_pool_bytes / d.peak_live_bytes, "peak_pool_bytes": d.peak_pool_bytes,
            "peak_live_bytes": d.peak_live_bytes, "hits": d.hits, "misses": d.misses, "hit_rate": d.hit_rate,
            "seconds": round(seconds, 3)}  # fmt: skip


def replay_cupy(trace: list[tuple[int, int]], cupy: Any) -> dict[str, Any]:
    mp = cupy.cuda.MemoryPool()
    bufs: dict[int, Any] = {}
    live = peak_live = peak_total = 0
    t = time.perf_counter()
    for i, n in trace:
        if n:
            bufs[i] = (mp.malloc(n), n)
            live += n
            peak_live = max(peak_live, live)
        else:
            live -= bufs.pop(i)[1]
        peak_total = max(peak_total, mp.total_bytes())
    seconds = time.perf_counter() - t
    bufs.clear()
    mp.free_all_blocks()
    return {"peak_over_live": peak_total / peak_live, "peak_pool_bytes": peak_total, "peak_live_bytes": peak_live,
            "seconds": round(seconds, 3)}  # fmt: skip


# -- the plugin child -----------------------------------------------------------------------
def plugin_child(kind: str) -> int:
    """One round of ``cuda.device_array`` + free, ``memalloc`` + free and ``DeviceNDArray``
    construction, under whatever memory manager numba chose at import; JSON on stdout."""
    from numba import cuda
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    ctx = cuda.current_context()
    manager = type(ctx.memory_manager).__name__
    u8 = np.dtype(np.uint8)
    out: dict[str, Any] = {"kind": kind, "memory_manager": manager, "us": {}}
    for n in PLUGIN_SIZES:
        held = ctx.memalloc(n)
        paths: dict[str, Callable[[], Any]] = {
            "device_array": functools.partial(cuda.device_array, n, np.uint8),
            "memalloc": functools.partial(ctx.memalloc, n),
            "construct": functools.partial(DeviceNDArray, (n,), (1,), u8, gpu_data=held),
        }
        for fn in paths.values():
            for _ in range(200):
                fn()
        out["us"][str(n)] = {name: time_calls(fn, 3000) for name, fn in paths.items()}
        del held
    if kind == "with":
        from ringkernel.memory import plugin_pool

        pool = plugin_pool()
        out["plugin_pool_hit_rate"] = pool.diagnostics().hit_rate if pool is not None else None
    cuda.synchronize()
    print(json.dumps(out))
    return 0


def run_child(kind: str) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("NUMBA_CUDA_MEMORY_MANAGER", None)
    if kind == "with":
        env["NUMBA_CUDA_MEMORY_MANAGER"] = "ringkernel.memory"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(ROOT)) if p)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", kind],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"the {kind}-plugin child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the parent -----------------------------------------------------------------------------
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--child", choices=("with", "without"), help=argparse.SUPPRESS)
    args = p.parse_args()

    from ringkernel.config import simulator_enabled

    if simulator_enabled():
        print("needs a CUDA GPU (allocation costs and device memory mean nothing on the simulator)", file=sys.stderr)
        return 2
    if args.child:
        return plugin_child(args.child)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")

    from numba import cuda

    from ringkernel import GpuArchitecture, GpuMemoryPool, PoolConfig
    from ringkernel._versions import driver_version, library_versions

    started = time.perf_counter()
    ctx = cuda.current_context()
    try:
        import cupy

        cupy.cuda.alloc(1).mem  # noqa: B018 - initialises CuPy's pool on this device
    except Exception as exc:  # noqa: BLE001 - any reason CuPy cannot run: measure without it
        log(f"CuPy unavailable ({type(exc).__name__}: {exc}); its figures are null")
        cupy = None
    rounds = args.rounds

    # 1. allocate + free by size -------------------------------------------------------------
    log(f"alloc_free: {len(SIZES)} sizes x {rounds} rounds")
    pool = GpuMemoryPool(PoolConfig())

    def ringkernel_pair(n: int) -> None:
        pool.deallocate(pool.allocate(n))

    def python_pair(n: int) -> None:  # the pure-Python methods (no compiled module)
        pool._deallocate_py(pool._allocate_py(n))

    from ringkernel import native

    log(f"pool methods: {type(GpuMemoryPool.__dict__['allocate']).__name__} ({native.status().detail})")
    pair_paths: dict[str, Callable[[int], Any]] = {"ringkernel": ringkernel_pair, "ringkernel_python": python_pair,
                                                   "numba": ctx.memalloc}  # fmt: skip
    if cupy is not None:
        pair_paths["cupy"] = cupy.cuda.alloc
    for name, fn in pair_paths.items():
        for n in SIZES:
            for _ in range(20 if name == "numba" else 100):
                fn(n)
    per_round: dict[str, dict[str, list[float]]] = {str(n): {k: [] for k in pair_paths} for n in SIZES}
    def inline(name: str, n: int) -> Callable[[int], None]:
        """``k`` allocate+free pairs of path ``name`` as a program writes them: the calls inline
        in one loop, no wrapper function (CuPy's and numba's a call whose result is dropped)."""
        if name == "ringkernel":
            def run(k: int) -> None:
                a, d = pool.allocate, pool.deallocate
                for _ in range(k):
                    d(a(n))
        elif name == "ringkernel_python":
            def run(k: int) -> None:
                a, d = pool._allocate_py, pool._deallocate_py
                for _ in range(k):
                    d(a(n))
        else:
            f = pair_paths[name]

            def run(k: int) -> None:
                for _ in range(k):
                    f(n)
        return run

    for r in range(rounds):
        for n in SIZES:
            got = time_interleaved({k: functools.partial(fn, n) for k, fn in pair_paths.items()},
                                   {k: calls_for(k, n) for k in pair_paths}, r=r,
                                   runners={k: inline(k, n) for k in pair_paths})  # fmt: skip
            for name, us in got.items():
                per_round[str(n)][name].append(us)
        log(f"  round {r + 1}/{rounds} done")
    cuda.synchronize()
    alloc_free: dict[str, dict[str, float | None]] = {
        n: {k: median_of(v) for k, v in row.items()} for n, row in per_round.items()
    }
    for pair in alloc_free.values():
        pair.setdefault("cupy", None)

    # 2. device arrays ------------------------------------------------------------------------
    log(f"device_array: {len(ARRAY_SHAPES)} shapes x {rounds} rounds")
    returns = type(pool.device_array(1, np.float32)).__name__
    arr_round: dict[str, dict[str, list[float]]] = {}
    for r in range(rounds):
        for shape, dtype in ARRAY_SHAPES:
            key = f"{shape} {dtype}"
            makers: dict[str, Callable[[], Any]] = {
                "ringkernel": functools.partial(pool.device_array, shape, dtype),
                "numba": functools.partial(cuda.device_array, shape, dtype),
            }
            if cupy is not None:
                makers["cupy"] = functools.partial(cupy.empty, shape, dtype)
            if r == 0:
                for make in makers.values():
                    for _ in range(100):
                        make()
            got = time_interleaved(makers, {k: 2000 if k == "numba" else 10000 for k in makers}, r=r)
            for name, us in got.items():
                arr_round.setdefault(key, {}).setdefault(name, []).append(us)
        log(f"  round {r + 1}/{rounds} done")
    cuda.synchronize()
    by_shape: dict[str, dict[str, float | None]] = {}
    for key, times in arr_round.items():
        row: dict[str, float | None] = {k: median_of(v) for k, v in times.items()}
        rk_us, cp_us = row["ringkernel"], row.get("cupy")
        row["cupy"] = cp_us
        row["ratio"] = rk_us / cp_us if rk_us is not None and cp_us else None
        by_shape[key] = row
    ratios = [r for r in (row["ratio"] for row in by_shape.values()) if r is not None]
    worst = max(ratios) if ratios else None
    device_array = {"returns": returns, "by_shape": by_shape, "ratio": worst}
    pool.close()

    # 3. peak pooled bytes over live bytes on a random trace --------------------------------------
    log("peak_over_live: random trace, 20000 operations, 1 KiB - 64 MiB, at most 2 GiB live")
    trace = random_trace()
    rk = replay_ringkernel(trace, PoolConfig())
    before = replay_ringkernel(trace, PoolConfig(large_cache_headroom=math.inf, large_reuse_bins=0))
    cp_trace = replay_cupy(trace, cupy) if cupy is not None else None
    cuda.synchronize()
    peak_over_live = {
        "ringkernel": rk["peak_over_live"],
        "cupy": cp_trace["peak_over_live"] if cp_trace else None,
        "ringkernel_without_budget": before["peak_over_live"],
        "detail": {"ringkernel": rk, "cupy": cp_trace, "ringkernel_without_budget": before},
        "trace": {"seed": 0, "operations": len(trace), "allocations": sum(1 for _, n in trace if n),
                  "sizes": "log-uniform in [1 KiB, 64 MiB]", "live_cap_bytes": 2 * GiB,
                  "p_allocate": 0.55},  # fmt: skip
    }

    # 4. numba with the plugin and without -----------------------------------------------------
    log(f"numba_plugin: {rounds} rounds of one child process with the plugin and one without")
    plugin_round: dict[str, list[dict[str, Any]]] = {"with": [], "without": []}
    managers: dict[str, str] = {}
    hit_rates: list[Any] = []
    for r in range(rounds):
        for kind in rotated(["with", "without"], r):
            out = run_child(kind)
            managers[kind] = out["memory_manager"]
            plugin_round[kind].append(out["us"])
            if kind == "with":
                hit_rates.append(out.get("plugin_pool_hit_rate"))
        log(f"  round {r + 1}/{rounds} done")
    numba_plugin: dict[str, Any] = {"memory_manager": managers, "plugin_pool_hit_rate": hit_rates}
    for kind, rows in plugin_round.items():
        numba_plugin[kind] = {
            str(n): {what: median_of([row[str(n)][what] for row in rows]) for what in ("device_array", "memalloc", "construct")}
            for n in PLUGIN_SIZES
        }  # fmt: skip
    numba_plugin["speedup_device_array"] = {
        str(n): numba_plugin["without"][str(n)]["device_array"] / numba_plugin["with"][str(n)]["device_array"]
        for n in PLUGIN_SIZES
    }

    elapsed = time.perf_counter() - started
    result = {
        "benchmark": "memory_sizes",
        "alloc_free_us": alloc_free,
        "alloc_free_us_per_round": per_round,
        "device_array_us": device_array,
        "device_array_us_per_round": arr_round,
        "peak_over_live": peak_over_live,
        "numba_plugin_us": numba_plugin,
        "numba_plugin_us_per_round": plugin_round,
        "checks": {
            "alloc_free_le_cupy_every_size": (all(pr["ringkernel"] <= pr["cupy"] for pr in alloc_free.values())  # type: ignore[operator]
                                              if cupy is not None else None),
            "device_array_le_1_5x_cupy": worst <= 1.5 if worst is not None else None,
            "peak_over_live_le_1_3": rk["peak_over_live"] <= 1.3,
            "plugin_device_array_faster_every_size": all(v > 1 for v in numba_plugin["speedup_device_array"].values()),
            "plugin_active_in_with_child": managers.get("with") == "RingKernelMemoryManager"
            and managers.get("without") != "RingKernelMemoryManager",
        },  # fmt: skip
        "method": {
            "timing": f"perf_counter_ns around batches of {BATCH} calls, each call one allocate+free (its result "
            f"dropped at once); a sample is the batch time / {BATCH} (so numba's frees, deferred and flushed "
            f"every {BATCH}, are in every sample); median of the samples per round; reported: the median of "
            f"{rounds} per-round medians; in each round every size/shape is measured on every path in 20 "
            "alternating slices (time_interleaved: every path over the same stretch of time, for hosts whose speed "
            "changes in steps), the order of the paths rotated per round and slice; garbage collector paused while "
            "timing, for every path",
            "alloc_free_us": "ringkernel: pool.deallocate(pool.allocate(n)) on a GpuMemoryPool(PoolConfig()), "
            "written inline in the timed loop as every path's call is (no wrapper function); "
            "cupy: cupy.cuda.alloc(n) dropped (CuPy's default memory pool); numba: "
            "cuda.current_context().memalloc(n) dropped (numba's own memory manager)",
            "device_array_us": "pool.device_array(shape, dtype) vs cupy.empty(shape, dtype) vs "
            "cuda.device_array(shape, dtype), each dropped at once; ratio: ringkernel / cupy, the largest over "
            "the shapes",
            "peak_over_live": "the trace (random_trace() in this script, seed 0) replayed once on each allocator; "
            "peak_over_live = the most bytes the allocator held from the device at any point of the trace "
            "(ringkernel: diagnostics().peak_pool_bytes, i.e. slabs + large blocks in use or cached; CuPy: "
            "the largest MemoryPool.total_bytes() after any operation) / the most bytes requested and not yet "
            "freed at any point (ringkernel: peak_live_bytes)",
            "numba_plugin_us": "child processes of this script (--child with|without), one of each per round in "
            "alternating order: cuda.device_array(n, uint8) dropped; ctx.memalloc(n) dropped (the memory "
            "manager alone); DeviceNDArray((n,), (1,), uint8, gpu_data=<memory allocated once>) dropped (numba's "
            "array construction alone); 3000 calls each per child",
        },
        "seconds": round(elapsed, 1),
        "device": GpuArchitecture.current().name,
        "driver": driver_version(),
        "versions": library_versions(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/memory_sizes.py " + " ".join(sys.argv[1:]),
    }
    summary = {k: result[k] for k in ("alloc_free_us", "checks")}
    summary["device_array_ratio"] = worst
    summary["peak_over_live"] = {k: peak_over_live[k] for k in ("ringkernel", "cupy", "ringkernel_without_budget")}
    summary["numba_plugin_us"] = {k: numba_plugin[k] for k in ("with", "without", "speedup_device_array")}
    print(json.dumps(summary, indent=1))
    log(f"done in {elapsed:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
