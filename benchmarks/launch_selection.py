"""Does the automatic launch configuration find the fast one? (issue 2's acceptance figure)

A grid-stride vector add of 2^28 float32 is timed (CUDA events, median) with:
  * the configuration ``@gpu_kernel`` chooses (``vector_add(a, b, c)``),
  * every block size 64..1024 (powers of two) with one thread per element, and with
    grid-stride grids of 1, 2, 4, 8, 16, 32 blocks per SM,
  * device-to-device copies moving the same number of bytes: numba's ``copy_to_device``
    (cuMemcpyDtoD), and CuPy's and PyTorch's copies where installed; the fastest is the
    ceiling ``auto_fraction_of_copy`` is taken against.
Each sample is one CUDA-event pair around ``--batch`` back-to-back launches (time / batch),
so the host's launch overhead overlaps the previous launch instead of leaving the GPU idle
between the events: the figure is the kernel's bandwidth, whatever path launched it. The
host overhead per launch is measured separately (``launch_overhead_us``, small arrays, host
clock, one synchronize at the end). Rounds interleave all configurations in random order so
clock drift affects them alike. Writes JSON with
``auto_fraction_of_best``, ``auto_fraction_of_copy`` and the full sweep.

    python benchmarks/launch_selection.py --out benchmarks/results/launch_selection.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log2n", type=int, default=28)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds over all configurations")
    p.add_argument("--reps", type=int, default=10, help="samples per configuration per round")
    p.add_argument("--batch", type=int, default=10, help="back-to-back launches per sample")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    from numba import cuda

    from ringkernel import GpuArchitecture
    from ringkernel.benchmark import GpuTimer, Statistics
    from ringkernel._versions import driver_version as _driver_version
    from ringkernel._versions import library_versions as _versions
    from ringkernel.kernels import vector_add

    if not cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    arch = GpuArchitecture.current()
    n = 1 << args.log2n
    rng = np.random.default_rng()
    a_h = rng.standard_normal(n, dtype=np.float32)
    b_h = rng.standard_normal(n, dtype=np.float32)
    a, b = cuda.to_device(a_h), cuda.to_device(b_h)
    c = cuda.device_array(n, np.float32)
    moved = 3 * n * 4  # two reads and one write of 4 bytes per element
    copy_src = cuda.to_device(rng.standard_normal(3 * n // 2, dtype=np.float32))
    copy_dst = cuda.device_array(3 * n // 2, np.float32)  # copy moves 2 * its size: the same bytes
    ref = a_h + b_h

    def poison() -> None:
        c.copy_to_device(np.full(n, np.nan, dtype=np.float32))

    # Warm-up and correctness: the automatic launch compiles, then must be right.
    poison()
    vector_add(a, b, c)
    cuda.synchronize()
    auto = vector_add.last_config
    assert auto is not None
    if not np.array_equal(c.copy_to_host(), ref):
        print("automatic launch gave a wrong result", file=sys.stderr)
        return 1
    dispatcher = vector_add.dispatcher

    configs: list[dict] = [{"kind": "auto", "grid": auto.grid[0], "block": auto.block[0]}]
    for block in (64, 128, 256, 512, 1024):
        configs.append({"kind": "one_per_element", "grid": -(-n // block), "block": block})
        for per_sm in (1, 2, 4, 8, 16, 32):
            configs.append({"kind": "grid_stride", "blocks_per_sm": per_sm, "grid": per_sm * arch.sm_count, "block": block})
    copies: list[dict] = [{"kind": "copy", "via": "numba copy_to_device (cuMemcpyDtoD)"}]
    extra_copy: dict[str, tuple] = {}
    try:
        import cupy

        cp_src = cupy.asarray(copy_src)
        cp_dst = cupy.empty_like(cp_src)
        extra_copy["cupy"] = (lambda: cp_dst.__setitem__(Ellipsis, cp_src))
        copies.append({"kind": "copy", "via": "cupy dst[...] = src"})
    except Exception:  # not installed here
        pass
    try:
        import torch

        t_src = torch.as_tensor(copy_src, device="cuda")
        t_dst = torch.empty_like(t_src)
        extra_copy["torch"] = (lambda: t_dst.copy_(t_src))
        copies.append({"kind": "copy", "via": "torch dst.copy_(src)"})
    except Exception:
        pass
    configs.extend(copies)

    # Every swept configuration must also be correct (poisoned output, full comparison).
    for cfg in configs[1 : -len(copies)]:
        poison()
        dispatcher[cfg["grid"], cfg["block"]](a, b, c)
        if not np.array_equal(c.copy_to_host(), ref):
            print(f"sweep configuration {cfg} gave a wrong result", file=sys.stderr)
            return 1

    timer = GpuTimer()  # ringkernel.benchmark's event timing: events around a batch of launches

    batch = args.batch

    def time_one(cfg: dict) -> float:
        if cfg["kind"] == "auto":
            def go() -> None:
                vector_add(a, b, c)
        elif cfg["kind"] == "copy":
            via = cfg["via"].split()[0]
            go = (lambda: copy_dst.copy_to_device(copy_src)) if via == "numba" else extra_copy[via]
        else:
            launcher = dispatcher[cfg["grid"], cfg["block"]]

            def go() -> None:
                launcher(a, b, c)
        timer.synchronize()
        return timer.time_batch(go, batch)

    for cfg in configs:  # warm each once
        time_one(cfg)
        cfg["times_ms"] = []
    t0 = time.perf_counter()
    for r in range(args.rounds):
        order = configs[:]
        random.shuffle(order)
        for cfg in order:
            cfg["times_ms"].extend(time_one(cfg) for _ in range(args.reps))
        print(f"round {r + 1}/{args.rounds} done ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    for cfg in configs:
        ci = Statistics.median_confidence_interval(cfg["times_ms"], 0.95)
        cfg["median_ms"] = ci.estimate
        cfg["median_ms_ci95"] = [ci.low, ci.high]
        cfg["gbps"] = moved / (ci.estimate * 1e-3) / 1e9
    # Host overhead per launch, small arrays so the GPU is never the bottleneck.
    small = 4096
    sa, sb, sc = cuda.to_device(a_h[:small]), cuda.to_device(b_h[:small]), cuda.device_array(small, np.float32)
    sg, sbk = -(-small // 256), 256
    overhead_paths = {
        "ringkernel_auto": lambda: vector_add(sa, sb, sc),
        "ringkernel_explicit": lambda: vector_add[sg, sbk](sa, sb, sc),
        "numba_dispatcher": lambda: dispatcher[sg, sbk](sa, sb, sc),
    }
    import warnings

    launch_overhead: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's low-occupancy warning for the tiny grid
        for name, fn in overhead_paths.items():
            for _ in range(200):
                fn()
            cuda.synchronize()
            per = []
            for _ in range(5):
                t = time.perf_counter()
                for _ in range(2000):
                    fn()
                cuda.synchronize()
                per.append((time.perf_counter() - t) / 2000 * 1e6)
            launch_overhead[name] = float(np.median(per))

    auto_cfg = configs[0]
    copy_cfg = max(copies, key=lambda c_: c_["gbps"])
    sweep = configs[1 : -len(copies)]
    best = max(sweep, key=lambda c_: c_["gbps"])
    result = {
        "benchmark": "launch_selection",
        "auto_fraction_of_best": auto_cfg["gbps"] / best["gbps"],
        "auto_fraction_of_copy": auto_cfg["gbps"] / copy_cfg["gbps"],
        "auto": {**{k: v for k, v in auto_cfg.items() if k != "times_ms"}, "explain": auto.explain()},
        "best": {k: v for k, v in best.items() if k != "times_ms"},
        "copy_gbps": copy_cfg["gbps"],
        "copy_median_ms": copy_cfg["median_ms"],
        "copy_via": copy_cfg["via"],
        "copies": [{k: v for k, v in c_.items() if k != "times_ms"} for c_ in copies],
        "elements": n,
        "bytes_moved_per_launch": moved,
        "samples_per_config": args.rounds * args.reps,
        "launches_per_sample": batch,
        "launch_overhead_us": launch_overhead,
        "sweep": [{k: v for k, v in s.items() if k != "times_ms"} for s in sweep],
        "device": {"name": arch.name, "compute_capability": list(arch.compute_capability), "sm_count": arch.sm_count,
                   "l2_cache_bytes": arch.l2_cache_bytes, "driver": _driver_version()},
        "versions": _versions(),
        "host": platform.node(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/launch_selection.py " + " ".join(sys.argv[1:]),
        "timing": "CUDA events around --batch back-to-back launches (time/batch), median over all samples; "
        "rounds interleave configurations in random order; launch_overhead_us: host clock per launch, "
        "4096-element arrays, 2000 launches then one synchronize, median of 5",
    }
    print(f"{'config':<34} {'grid':>9} {'block':>5} {'ms':>8} {'GB/s':>8} {'of best':>8}")
    for cfg in sorted(configs, key=lambda c_: -c_["gbps"]):
        label = cfg["kind"] + (f" {cfg['blocks_per_sm']}/SM" if "blocks_per_sm" in cfg else "")
        label += f" {cfg['via'].split()[0]}" if "via" in cfg else ""
        print(f"{label:<34} {cfg.get('grid', '-'):>9} {cfg.get('block', '-'):>5} {cfg['median_ms']:>8.4f} "
              f"{cfg['gbps']:>8.1f} {cfg['gbps'] / best['gbps']:>8.3f}")
    print("host overhead per launch (us):", {k: round(v, 2) for k, v in launch_overhead.items()})
    print(f"auto_fraction_of_best = {result['auto_fraction_of_best']:.4f}")
    print(f"auto_fraction_of_copy = {result['auto_fraction_of_copy']:.4f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
