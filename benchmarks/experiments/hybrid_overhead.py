"""Issue 15 (twelfth session, 2026-11-30): what ADAPTIVE's own work costs a call on the GPU host.

The eleventh session's sweep had ADAPTIVE 2-3.5% slower than the fixed mode it agreed with at
every size, whichever mode ran before it (benchmarks/results/hybrid.json's round medians); on the
2-core development machine the two are equal within 0.1 us. This times, in one process and in the
sweep's pattern (each visit of a size: 3 untimed calls then 3 timed, their median; sizes and
modes interleaved), saxpy through the fixed mode (CPU_ONLY on host data, GPU_ONLY on device
data) and through ADAPTIVE, with ADAPTIVE teaching as it does and with teaching off; then the
dispatcher's own calls alone (a kept decision's decide, lease, record with and without a size).

    python benchmarks/experiments/hybrid_overhead.py --out benchmarks/results/hybrid_overhead_session12.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import timeit

import numpy as np

import ringkernel  # noqa: F401


def saxpy(i, a, x, y, out):  # type: ignore[no-untyped-def]
    out[i] = a * x[i] + y[i]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--out", default=None)
    p.add_argument("--host-only", action="store_true", help="host data only (the simulator: no device part)")
    args = p.parse_args()
    from numba import cuda

    from ringkernel.hybrid import HybridConfig, HybridDispatcher, ProcessingMode, elementwise

    threads = max(1, (os.cpu_count() or 2) - 1)
    rng = np.random.default_rng(7)
    a = np.float32(1.75)
    result: dict = {"threads": threads, "rounds": args.rounds, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for loc, sizes in (("host", [256, 4096, 1 << 16, 1 << 20]), ("device", [256, 1 << 16, 1 << 20]))[: 1 if args.host_only else 2]:
        fixed_mode = ProcessingMode.CPU_ONLY if loc == "host" else ProcessingMode.GPU_ONLY
        fixed = elementwise(saxpy, dispatcher=HybridDispatcher(HybridConfig(fixed_mode, cpu_threads=threads)), name="saxpy")
        adaptive = fixed.with_dispatcher(HybridDispatcher(HybridConfig(ProcessingMode.ADAPTIVE, cpu_threads=threads, seed=1)))
        data = {}
        for n in sizes:
            x, y, out = rng.uniform(-2, 2, n).astype(np.float32), rng.uniform(-2, 2, n).astype(np.float32), np.empty(n, np.float32)
            if loc == "device":
                x, y, out = cuda.to_device(x), cuda.to_device(y), cuda.device_array(n, np.float32)
            data[n] = (a, x, y, out)
        for n in sizes:
            for _ in range(3):
                fixed(*data[n])
        for _ in range(40):  # ADAPTIVE learns
            for n in sizes:
                adaptive(*data[n])
        for teach in (True, False):
            d_ad = adaptive.dispatcher
            if not teach:  # the records keep their counts and times but teach no size (probes still do)
                for name in ("record_cpu_execution", "record_gpu_execution"):
                    real = getattr(d_ad, name)
                    setattr(d_ad, name, lambda s, *, real=real, size=None, probe=False, **kw: real(
                        s, size=size if probe else None, probe=probe, **kw))
            times = {m: {n: [] for n in sizes} for m in ("fixed", "adaptive")}
            sides = {n: [] for n in sizes}
            try:
                for r in range(args.rounds):
                    for n in sizes[r % len(sizes):] + sizes[: r % len(sizes)]:
                        for m in (("fixed", "adaptive") if r % 2 else ("adaptive", "fixed")):
                            k = fixed if m == "fixed" else adaptive
                            for _ in range(3):
                                k(*data[n])
                            burst = []
                            for _ in range(3):
                                t0 = time.perf_counter()
                                k(*data[n])
                                burst.append(time.perf_counter() - t0)
                                if m == "adaptive":
                                    sides[n].append(adaptive.last_decision.use_gpu)
                            times[m][n].append(float(np.median(burst)))
            finally:
                for name in ("record_cpu_execution", "record_gpu_execution"):
                    d_ad.__dict__.pop(name, None)  # (the methods again)
            key = f"{loc}/{'teaching' if teach else 'no teaching'}"
            result[key] = {
                str(n): {"fixed_us": round(float(np.median(times["fixed"][n])) * 1e6, 2),
                         "adaptive_us": round(float(np.median(times["adaptive"][n])) * 1e6, 2),
                         "paired_ratio": round(float(np.median(np.array(times["adaptive"][n]) / np.array(times["fixed"][n]))), 4),
                         "adaptive_gpu_share": round(sum(sides[n]) / len(sides[n]), 3)}
                for n in sizes
            }  # fmt: skip
            print(key, json.dumps(result[key]), flush=True)
        # every ADAPTIVE call on its own, by what the dispatcher did in it: served by a held
        # decision (no dispatcher call), a decide, a taught record; and the call after a taught one
        d = adaptive.dispatcher
        kinds: dict[str, list[float]] = {"held": [], "decide": [], "taught": [], "after taught": [], "fixed": []}
        flags = {"decide": False, "taught": False}
        real_decide, real_cpu, real_gpu = d.decide, d.record_cpu_execution, d.record_gpu_execution

        def decide(*a, **k):  # type: ignore[no-untyped-def]
            flags["decide"] = True
            return real_decide(*a, **k)

        def rec(real):  # type: ignore[no-untyped-def]
            def r(*a, **k):  # type: ignore[no-untyped-def]
                if k.get("size") is not None:
                    flags["taught"] = True
                return real(*a, **k)
            return r

        d.decide, d.record_cpu_execution, d.record_gpu_execution = decide, rec(real_cpu), rec(real_gpu)
        prev_taught = False
        n = sizes[0]  # (one size: the kinds' times compare; the smallest, where a microsecond weighs most)
        for r in range(args.rounds * 4):
            for _ in range(6):
                flags["decide"] = flags["taught"] = False
                t0 = time.perf_counter()
                adaptive(*data[n])
                t = time.perf_counter() - t0
                kind = "taught" if flags["taught"] else "decide" if flags["decide"] else "after taught" if prev_taught else "held"
                prev_taught = flags["taught"]
                kinds[kind].append(t)
                t0 = time.perf_counter()
                fixed(*data[n])
                kinds["fixed"].append(time.perf_counter() - t0)
        d.decide, d.record_cpu_execution, d.record_gpu_execution = real_decide, real_cpu, real_gpu
        result[f"{loc}/per_call_us"] = {k: {"calls": len(v), "median": round(float(np.median(v)) * 1e6, 2) if v else None,
                                            "mean": round(float(np.mean(v)) * 1e6, 2) if v else None}
                                        for k, v in kinds.items()}  # fmt: skip
        print(loc, "per call", json.dumps(result[f"{loc}/per_call_us"]), flush=True)
        n = sizes[0]
        kw = {"kernel": "saxpy", "data_on_device": loc == "device"}
        result[f"{loc}/dispatcher_us"] = {
            "decide": timeit.timeit(lambda: d.decide(n, **kw), number=20000) / 20000 * 1e6,
            "lease": timeit.timeit(lambda: d.lease(n, **kw), number=20000) / 20000 * 1e6,
            "record_no_size": timeit.timeit(lambda: d.record_cpu_execution(1e-5, **kw), number=20000) / 20000 * 1e6,
            "record_size": timeit.timeit(lambda: d.record_cpu_execution(1e-5, size=n, **kw), number=5000) / 5000 * 1e6,
        }
        print(loc, "dispatcher us", json.dumps(result[f"{loc}/dispatcher_us"]), flush=True)
    result["command"] = "python benchmarks/experiments/hybrid_overhead.py " + " ".join(sys.argv[1:])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
