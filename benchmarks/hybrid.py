"""Hybrid CPU/GPU dispatch on the GPU machine (issue 15's figures).

Three element-wise kernels of different arithmetic intensity (saxpy; a 50-FMA polynomial;
sin/exp/log1p/sqrt per element), float32, sizes 2^8..2^26 (every power of two), data on the
host (NumPy) and on the device (numba arrays). Each is one ``@elementwise`` body called through
three dispatchers in the same process (``with_dispatcher``: one compiled loop and kernel, so the
modes differ only in their decisions): CPU_ONLY, GPU_ONLY and ADAPTIVE (after a learning phase
of 32 calls at sizes drawn from the sweep, seeded). Every call returns with its results in
place (the GPU side's copies and synchronisation included), timed by the host clock around
the call. Per size and mode: ``--reps`` rounds (more, up to ``--max-reps``, for sizes whose rounds
are cheap: there a call takes microseconds and noise weighs most), sizes in rotating order and the three modes in
each of their six orders in turn (so that each mode follows each other equally often), each
``--settle`` untimed calls then a burst of ``--burst`` consecutive calls of that mode (its median: the steady
time of a program calling that size repeatedly; a first call after another mode's pays for
waking the CPU's worker threads and clocks), then the median over rounds. The CPU path uses all cores but one (the launching
thread keeps a core). The fixed threshold is the proposal's ``Hybrid { gpu_threshold }`` with the one
threshold that minimises saxpy/host's sweep (found afterwards, from the measured CPU_ONLY and
GPU_ONLY times), applied to every kernel and location.

    python benchmarks/hybrid.py --out benchmarks/results/hybrid.json
    python benchmarks/hybrid.py --plot benchmarks/results/hybrid.json docs/images/hybrid_crossover.svg
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import gc
import itertools
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import ringkernel  # noqa: F401 - before numba.cuda: ringkernel picks the backend


def saxpy(i, a, x, y, out):  # type: ignore[no-untyped-def]
    out[i] = a * x[i] + y[i]


def poly50(i, x, out):  # type: ignore[no-untyped-def]
    v = x[i]
    acc = v * 0.0
    for k in range(50):  # 50 fused multiply-adds (Horner), coefficients 1/(k+1)
        acc = acc * v + 1.0 / (k + 1)
    out[i] = acc


def trig(i, x, out):  # type: ignore[no-untyped-def]
    v = x[i]
    out[i] = math.sin(v) * math.exp(-v * v) + math.log1p(v * v) + math.sqrt(abs(v)) * math.cos(3 * v)


KERNELS = {"saxpy": saxpy, "poly50": poly50, "trig": trig}
SIZES = [1 << k for k in range(8, 27)]
MODES = ("cpu", "gpu", "adaptive")


def reference(name: str, a: np.float32, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    if name == "saxpy":
        return (np.float64(a) * x64 + y.astype(np.float64)).astype(np.float32)
    if name == "poly50":
        acc = np.zeros_like(x64)
        for k in range(50):
            acc = acc * x64 + 1.0 / (k + 1)
        return acc.astype(np.float32)
    return (np.sin(x64) * np.exp(-x64 * x64) + np.log1p(x64 * x64) + np.sqrt(np.abs(x64)) * np.cos(3 * x64)).astype(np.float32)


def best_threshold(cpu: list[float], gpu: list[float]) -> tuple[int, float]:
    """The size index t minimising sum(cpu[:t]) + sum(gpu[t:]) and that total."""
    best = min(range(len(cpu) + 1), key=lambda t: sum(cpu[:t]) + sum(gpu[t:]))
    return best, sum(cpu[:best]) + sum(gpu[best:])


def run(args: argparse.Namespace) -> int:
    from ringkernel.config import simulator_enabled

    if simulator_enabled() and not args.smoke:
        print("needs a CUDA GPU (and its host's cores); --smoke runs it on the simulator, figures meaningless",
              file=sys.stderr)  # fmt: skip
        return 2
    from numba import cuda

    from ringkernel.hybrid import HybridConfig, HybridDispatcher, ProcessingMode, elementwise

    rng = np.random.default_rng(args.seed)
    sizes = [s for s in SIZES if s <= args.max_size]
    a = np.float32(1.75)
    host_x = rng.uniform(-2, 2, sizes[-1]).astype(np.float32)
    host_y = rng.uniform(-2, 2, sizes[-1]).astype(np.float32)
    results: dict[str, Any] = {}
    learning: dict[str, Any] = {}
    gc_runs = [0]  # the collector's runs (all generations), counted by a gc callback

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_runs[0] += 1

    gc.callbacks.append(on_gc)
    started = time.perf_counter()
    for kname, body in KERNELS.items():
        for loc in ("host", "device"):
            key = f"{kname}/{loc}"
            if args.only and key not in args.only:
                continue
            threads = args.cpu_threads or max(1, (os.cpu_count() or 2) - 1)  # a core left for the launching thread
            disp = {
                "cpu": HybridDispatcher(HybridConfig(ProcessingMode.CPU_ONLY, cpu_threads=threads)),
                "gpu": HybridDispatcher(HybridConfig(ProcessingMode.GPU_ONLY, cpu_threads=threads)),
                "adaptive": HybridDispatcher(HybridConfig(ProcessingMode.ADAPTIVE, cpu_threads=threads, seed=args.seed)),
            }
            # one body, its compiled loop and kernel shared by the three modes (with_dispatcher):
            # the modes differ only in their decisions, as in a program that switched modes
            base = elementwise(body, dispatcher=disp["cpu"], name=kname)
            kern = {m: base if m == "cpu" else base.with_dispatcher(disp[m]) for m in MODES}
            data = {}  # the previous key's arrays go first: their frees must not fall into this sweep
            gc.collect()
            if not args.smoke:  # (the simulator has no deferred frees)
                cuda.current_context().deallocations.clear()
            for n in sizes:
                x, y, out = host_x[:n].copy(), host_y[:n].copy(), np.empty(n, np.float32)
                if loc == "device":
                    x, y, out = cuda.to_device(x), cuda.to_device(y), cuda.device_array(n, np.float32)
                data[n] = (x, y, out)

            def call(mode: str, n: int) -> float:
                x, y, out = data[n]
                t0 = time.perf_counter()
                if kname == "saxpy":
                    kern[mode](a, x, y, out)
                else:
                    kern[mode](x, out)
                return time.perf_counter() - t0

            for m in MODES:  # compile both sides (not taught: first calls of a type)
                call(m, sizes[0])
                call(m, sizes[0])
            if args.no_gc:
                gc.collect()
                gc.disable()  # as timeit does: no collector pause inside a timed call (the sweep's lists grow)
            t_learn = time.perf_counter()
            for n in rng.choice(sizes, args.learn_calls):
                call("adaptive", int(n))
            learn_s = time.perf_counter() - t_learn
            times: dict[str, dict[int, list[float]]] = {m: {n: [] for n in sizes} for m in MODES}
            gcs: dict[str, dict[int, list[int]]] = {m: {n: [] for n in sizes} for m in MODES}  # per round
            choice: dict[int, list[bool]] = {n: [] for n in sizes}
            reasons: dict[int, collections.Counter[str]] = {n: collections.Counter() for n in sizes}
            orders = list(itertools.permutations(MODES))  # each mode follows each other equally often
            # An untimed pass over every size and mode first (first touches, the pool's first
            # blocks of each size): its times decide the rounds per size: --reps, more (up to
            # --max-reps, in multiples of the 6 orders) where a round costs little (small sizes:
            # microseconds a call, where noise weighs most), within --size-budget seconds a size.
            # A mode over 3x slower than the other at a size (say, the CPU on device data) needs no
            # precision: it is far from the best. It runs --reps rounds; the best and ADAPTIVE run
            # on, in rounds priced by their own cost, so that their ratio is measured closely.
            rounds, slow_mode = {}, {}

            def plan(n: int, t: dict[str, float], keep_slow: bool = False) -> None:
                lo, hi = sorted(t.values())
                if not keep_slow:  # (a mode that ran --reps rounds only so far stays so)
                    slow_mode[n] = max(t, key=t.__getitem__) if hi > 3 * lo else None
                per_round = (args.burst + args.settle) * (2 * lo if slow_mode[n] else lo + hi)
                want = int(args.size_budget / max(2 * per_round, 1e-9)) // len(orders) * len(orders)
                rounds[n] = min(max(args.reps, want), max(args.reps, args.max_reps))

            for n in sizes:
                plan(n, {m: min(call(m, n), call(m, n)) for m in ("cpu", "gpu")})
            replanned: dict[int, int] = {}
            for r in range(max(args.reps, args.max_reps)):
                if r == args.reps:
                    # the first pass's times are cold (first touches, page faults: at 2^24 they
                    # gave 12 rounds where the steady times allow 30): planned again from the
                    # medians of the first --reps rounds, the slow mode kept
                    for n in sizes:
                        plan(n, {m: float(np.median(times[m][n])) for m in ("cpu", "gpu")}, keep_slow=True)
                        replanned[n] = rounds[n]
                order = sizes[r % len(sizes):] + sizes[: r % len(sizes)]
                for n in order:
                    if r >= rounds[n]:
                        continue
                    # the six orders in turn from one round of this size to the next (the size's own
                    # index, not its place in the rotated order: r + place is constant for 19 rounds
                    # at a time, which kept one mode first at a size for up to 19 rounds, where the
                    # first call after another size pays for the previous size's evictions)
                    for m in orders[(r + sizes.index(n)) % len(orders)]:
                        if m == slow_mode[n] and r >= args.reps:
                            continue
                        # a burst of calls of one mode after one untimed call, its median: the
                        # steady per-call time of a program calling this size repeatedly (the
                        # first call after another mode's pays for waking the CPU's worker
                        # threads and clocks after GPU work, or for the GPU after CPU work)
                        for _ in range(args.settle):
                            call(m, n)
                        burst = []
                        gc_before = gc_runs[0]
                        for _ in range(args.burst):
                            burst.append(call(m, n))
                            if m == "adaptive":  # every timed call's side and why
                                dec = kern[m].last_decision
                                choice[n].append(bool(dec.use_gpu))
                                reasons[n][dec.reason] += 1
                        times[m][n].append(float(np.median(burst)))
                        gcs[m][n].append(gc_runs[0] - gc_before)
            if args.no_gc:
                gc.enable()
            # the results are right on both sides (checked after timing, on the largest size)
            n = sizes[-1]
            want = reference(kname, a, host_x[:n], host_y[:n])
            for m in ("cpu", "gpu"):
                call(m, n)
                got = data[n][2] if loc == "host" else data[n][2].copy_to_host()
                np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
            med = {m: [float(np.median(times[m][n])) for n in sizes] for m in MODES}
            best = [min(c, g) for c, g in zip(med["cpu"], med["gpu"])]
            over = [ad / b for ad, b in zip(med["adaptive"], best)]
            # the interquartile mean (the mean of the middle half of the rounds): where a host's speed
            # steps, one mode's round times are bimodal and a median lands in either mode
            iqm = {m: [_iqm(times[m][n]) for n in sizes] for m in MODES}
            over_iqm = [iqm["adaptive"][i] / min(iqm["cpu"][i], iqm["gpu"][i]) for i in range(len(sizes))]
            # paired: each round's ADAPTIVE median over the better mode's median of the same round
            # (rounds are interleaved in time: a slow stretch of the host weighs on both alike)
            paired = []
            for n, c, g in zip(sizes, med["cpu"], med["gpu"]):
                ref = times["cpu" if c <= g else "gpu"][n]
                paired.append(float(np.median([a / b for a, b in zip(times["adaptive"][n], ref)])))
            # the noise of the measurement: interquartile range of a mode's round medians over their median
            spread = {m: [float((np.percentile(times[m][n], 75) - np.percentile(times[m][n], 25)) / np.median(times[m][n]))
                          for n in sizes] for m in MODES}  # fmt: skip
            # were ADAPTIVE's slow rounds (over 1.25x its median round) those the collector ran in?
            slow = {"rounds": 0, "with_gc": 0, "rounds_with_gc": 0}
            for n in sizes:
                rs, gs = times["adaptive"][n], gcs["adaptive"][n]
                med_r = float(np.median(rs))
                slow["rounds_with_gc"] += sum(1 for g in gs if g)
                for t_, g in zip(rs, gs):
                    if t_ > 1.25 * med_r:
                        slow["rounds"] += 1
                        slow["with_gc"] += bool(g)
            st = disp["adaptive"].stats()
            results[key] = {
                "sizes": sizes, "median_s": med, "best_s": best,
                # the figure: ADAPTIVE against the better mode in the same rounds (below)
                "adaptive_over_best": max(paired), "adaptive_over_best_per_size": paired,
                "adaptive_over_best_paired_per_size": paired, "adaptive_over_best_paired": max(paired),
                "adaptive_over_best_ratio_of_medians_per_size": over, "adaptive_over_best_ratio_of_medians": max(over),
                "adaptive_over_best_ratio_of_iqms_per_size": over_iqm, "adaptive_over_best_ratio_of_iqms": max(over_iqm),
                "iqm_s": iqm, "adaptive_gpu_share": [sum(choice[n]) / len(choice[n]) for n in sizes],
                # every timed ADAPTIVE call's side in order (G/C; a burst's three calls per round)
                "adaptive_sides": ["".join("G" if g else "C" for g in choice[n]) for n in sizes],
                "crossover_learned": disp["adaptive"].crossover(kernel=kname, data_on_device=loc == "device"),
                "explain_at_crossover_region": str(disp["adaptive"].explain(1 << 16, kernel=kname,
                                                                              data_on_device=loc == "device")),
                "total_s": {m: sum(med[m]) for m in MODES},
                "rounds": [rounds[n] for n in sizes], "slow_mode_rounds_only_reps": [slow_mode[n] for n in sizes],
                "rounds_planned_again_after_reps": [replanned.get(n) for n in sizes],
                "spread_iqr_over_median": spread,
                "adaptive_reasons": [dict(reasons[n]) for n in sizes],
                "round_medians_us": {m: [[round(t * 1e6, 2) for t in times[m][n]] for n in sizes] for m in MODES},
                "adaptive_slow_rounds": slow, "gc_collections": {m: sum(sum(gcs[m][n]) for n in sizes) for m in MODES},
                "adaptive_probes": st.probes, "adaptive_calls": st.cpu_executions + st.gpu_executions,
            }  # fmt: skip
            learning[key] = {"calls": args.learn_calls, "seconds": learn_s}
            print(f"{key}: adaptive/best max {max(paired):.3f} (ratio of medians {max(over):.3f}, of IQMs "
                  f"{max(over_iqm):.3f}); totals cpu {sum(med['cpu']):.4f} gpu "
                  f"{sum(med['gpu']):.4f} adaptive {sum(med['adaptive']):.4f} s; crossover "
                  f"{results[key]['crossover_learned']}", flush=True)  # fmt: skip
            if args.out:  # what is measured so far (a run stopped at a time limit keeps it)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.with_suffix(".partial.json").write_text(json.dumps(
                    {"partial": True, "adaptive_over_best": {k: r["adaptive_over_best"] for k, r in results.items()},
                     "by_kernel": results, "command": "python benchmarks/hybrid.py " + " ".join(sys.argv[1:])}, indent=1) + "\n")
    ref = results["saxpy/host"] if "saxpy/host" in results else next(iter(results.values()))  # (--only)
    t_idx, _ = best_threshold(ref["median_s"]["cpu"], ref["median_s"]["gpu"])
    threshold = sizes[t_idx] if t_idx < len(sizes) else sizes[-1] * 2
    for key, r in results.items():
        fixed = [c if n < threshold else g for n, c, g in zip(sizes, r["median_s"]["cpu"], r["median_s"]["gpu"])]
        r["total_s"]["fixed_threshold"] = sum(fixed)
    totals = {m: sum(r["total_s"][m] for r in results.values()) for m in (*MODES, "fixed_threshold")}
    from ringkernel import GpuArchitecture
    from ringkernel._versions import driver_version, library_versions

    import numba

    arch = GpuArchitecture.current()
    result = {
        "benchmark": "hybrid",
        "adaptive_over_best": {k: r["adaptive_over_best"] for k, r in results.items()},
        "adaptive_over_best_max": max(r["adaptive_over_best"] for r in results.values()),
        "adaptive_over_best_paired": {k: r["adaptive_over_best_paired"] for k, r in results.items()},
        "adaptive_over_best_ratio_of_medians": {k: r["adaptive_over_best_ratio_of_medians"] for k, r in results.items()},
        "adaptive_over_best_ratio_of_iqms": {k: r["adaptive_over_best_ratio_of_iqms"] for k, r in results.items()},
        "cells_within_1_10": {s: sum(v <= 1.10 for r in results.values() for v in r[f"adaptive_over_best{s}_per_size"])
                              for s in ("", "_ratio_of_medians", "_ratio_of_iqms")},
        "cells": sum(len(r["sizes"]) for r in results.values()),
        "total_s": totals,
        "adaptive_beats": {m: totals["adaptive"] < totals[m] for m in ("cpu", "gpu", "fixed_threshold")},
        "fixed_threshold": threshold,
        "learning": learning,
        "by_kernel": results,
        "reps": args.reps, "settle": args.settle, "gc_disabled": args.no_gc, "max_reps": args.max_reps, "size_budget_s": args.size_budget, "burst": args.burst, "cpu_threads": threads, "seed": args.seed, "host_cores": os.cpu_count(), "numba_threads": numba.config.NUMBA_NUM_THREADS, "threading_layer": _threading_layer(),
        "device": {"name": arch.name, "compute_capability": list(arch.compute_capability), "driver": driver_version()},
        "versions": library_versions(), "host": platform.node(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - started,
        "command": "python benchmarks/hybrid.py " + " ".join(sys.argv[1:]),
        "method": "per kernel and data location: CPU_ONLY, GPU_ONLY and ADAPTIVE dispatchers in one process, sharing "
        "one compiled CPU loop and GPU kernel (HybridKernel.with_dispatcher); "
        "ADAPTIVE first learns from --learn-calls calls at sizes drawn from the sweep; then --reps rounds over "
        "every size (more, up to --max-reps, where a round costs little: --size-budget seconds a size, planned from an untimed first pass and again from the medians of the first --reps rounds), sizes rotating, the modes in each of their 6 orders in turn, in each --settle untimed calls then a burst "
        "of --burst calls of one mode (its median); a mode over 3x slower than the other at a size (first pass) runs "
        "--reps rounds only, the rounds of the other two priced by their own cost (slow_mode_rounds_only_reps), "
        "host clock around each synchronous call; adaptive_over_best (= adaptive_over_best_paired): the median over "
        "rounds of ADAPTIVE's round over the better mode's same round (the better mode by the medians over rounds); "
        "also the ratio of the medians over rounds and of the interquartile means (the ratio of medians is unstable "
        "where a host's speed steps: one mode's round times are then bimodal). "
        "CPU path: cores - 1 threads. "
        "Fixed threshold: the single threshold minimising saxpy/host's sweep, applied to all (from the measured "
        "CPU_ONLY/GPU_ONLY medians).",
    }  # fmt: skip
    gc.callbacks.remove(on_gc)  # (a script's run: on an error the process ends anyway)
    print(json.dumps({k: result[k] for k in ("adaptive_over_best", "total_s", "adaptive_beats", "fixed_threshold")}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _iqm(values: list[float]) -> float:
    """The interquartile mean: the mean of the middle half (at least one value)."""
    v = sorted(values)
    q = len(v) // 4
    mid = v[q: len(v) - q] or v
    return float(sum(mid) / len(mid))


def _threading_layer() -> str:
    import numba

    try:
        return str(numba.threading_layer())
    except ValueError:  # no parallel function ran yet
        return "unset"


def _seconds(t: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if t >= scale * 0.999:
            return f"{t / scale:g} {unit}"
    return f"{t:g} s"


def plot(src: Path, dst: Path) -> None:
    """An SVG of each kernel and location: CPU_ONLY, GPU_ONLY and ADAPTIVE time against size."""
    data = json.loads(src.read_text())
    keys = list(data["by_kernel"])
    w, h, cols = 420, 300, 2
    rows = math.ceil(len(keys) / cols)
    colours = {"cpu": "#1f77b4", "gpu": "#d62728", "adaptive": "#2ca02c"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * cols}" height="{h * rows + 40}" '
             f'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="10" y="20" font-size="14">Hybrid dispatch on {data["device"]["name"]} + {data["host_cores"]} '
             f'host cores ({data["date"][:10]}): time per call against size</text>']  # fmt: skip
    for idx, key in enumerate(keys):
        r = data["by_kernel"][key]
        ox, oy = (idx % cols) * w, 40 + (idx // cols) * h
        sizes = r["sizes"]
        allt = [t for m in ("cpu", "gpu", "adaptive") for t in r["median_s"][m]]
        lx0, lx1 = math.log2(sizes[0]), math.log2(sizes[-1])
        ly0, ly1 = math.floor(math.log10(min(allt))), math.ceil(math.log10(max(allt)))
        px = lambda n: ox + 50 + (math.log2(n) - lx0) / (lx1 - lx0) * (w - 70)  # noqa: E731
        py = lambda t: oy + h - 40 - (math.log10(t) - ly0) / (ly1 - ly0) * (h - 70)  # noqa: E731
        parts.append(f'<text x="{ox + 50}" y="{oy + 15}" font-size="12">{key}: ADAPTIVE / best, max (paired) '
                     f'{r["adaptive_over_best"]:.2f}</text>')  # fmt: skip
        parts.append(f'<rect x="{ox + 50}" y="{oy + 30}" width="{w - 70}" height="{h - 70}" fill="none" stroke="#999"/>')
        for e in range(ly0, ly1 + 1):
            y = py(10.0**e)
            parts.append(f'<line x1="{ox + 50}" x2="{ox + w - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
            parts.append(f'<text x="{ox + 5}" y="{y + 4:.1f}">{_seconds(10.0**e)}</text>')
        for k in range(int(lx0), int(lx1) + 1, 3):
            x = px(2**k)
            parts.append(f'<text x="{x - 8:.1f}" y="{oy + h - 25}">2^{k}</text>')
        for m in ("cpu", "gpu", "adaptive"):
            pts = " ".join(f"{px(n):.1f},{py(t):.1f}" for n, t in zip(sizes, r["median_s"][m]))
            dash = ' stroke-dasharray="4,3"' if m == "adaptive" else ""
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{colours[m]}" stroke-width="1.6"{dash}/>')
        for n, share in zip(sizes, r["adaptive_gpu_share"]):  # the adaptive choice: filled = GPU
            fill = colours["gpu"] if share >= 0.5 else colours["cpu"]
            parts.append(f'<circle cx="{px(n):.1f}" cy="{oy + h - 45}" r="3" fill="{fill}"/>')
        if r.get("crossover_learned") and 0 < r["crossover_learned"] < float("inf"):
            x = px(min(max(r["crossover_learned"], sizes[0]), sizes[-1]))
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{oy + 30}" y2="{oy + h - 40}" stroke="#555" '
                         'stroke-dasharray="2,2"/>')  # fmt: skip
        lx = ox + 60
        for m, label in (("cpu", "CPU_ONLY"), ("gpu", "GPU_ONLY" + (" (with copies)" if key.endswith("host") else "")),
                         ("adaptive", "ADAPTIVE")):  # fmt: skip
            parts.append(f'<text x="{lx}" y="{oy + 45}" fill="{colours[m]}">{label}</text>')
            lx += 8 * len(label) + 10
    parts.append(f'<text x="10" y="{h * rows + 35}">dots: the side ADAPTIVE chose (red GPU, blue CPU); '
                 'dashed vertical: its learned crossover</text></svg>')  # fmt: skip
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(parts) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--reps", type=int, default=6, help="rounds over the sizes and modes (6: every order of the modes)")
    p.add_argument("--burst", type=int, default=3, help="consecutive calls per size and mode in a round (median)")
    p.add_argument("--settle", type=int, default=3,
                   help="untimed calls of a mode before its burst (caches and threads settle: at 2^24 floats "
                   "saxpy's arrays are 192 MiB of the H200 host's 300 MiB L3, and one call after another "
                   "mode's left them half evicted)")
    p.add_argument("--no-gc", action="store_true", help="disable the garbage collector during each sweep (as timeit does)")
    p.add_argument("--max-reps", type=int, default=96, help="rounds for sizes whose rounds are cheap (a multiple of 6)")
    p.add_argument("--size-budget", type=float, default=1.0,
                   help="seconds per size (all modes) that decide how many rounds above --reps a size gets")
    p.add_argument("--cpu-threads", type=int, default=None, help="CPU path threads (default: cores - 1)")
    p.add_argument("--learn-calls", type=int, default=32)
    p.add_argument("--max-size", type=int, default=SIZES[-1])
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--only", action="append", default=[], metavar="KERNEL/LOCATION",
                   help="run only this key (e.g. trig/host; repeatable): a check, not the issue's sweep")
    p.add_argument("--plot", nargs=2, type=Path, metavar=("JSON", "SVG"))
    p.add_argument("--smoke", action="store_true", help="allow the simulator (a test of the script, not a figure)")
    args = p.parse_args()
    if args.plot:
        plot(*args.plot)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
