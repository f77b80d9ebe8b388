"""Do 2-D and 3-D automatic launches compute the right answer, fast? (issue 10's acceptance figure)

Each workload is a kernel written the usual numba way and launched without a configuration
(``kernel(u, out)``); its result is checked against NumPy, and its time (CUDA events around
``--batch`` back-to-back launches, median over interleaved rounds in random order) is compared
with an explicit sweep of block shapes (every shape's result also checked):

  stencil2d        5-point stencil, 8192x8192 float32, ``col, row = cuda.grid(2)``   (the issue's)
  stencil3d        7-point stencil, 512^3 float32, threadIdx/blockIdx by hand          (the issue's)
  matadd_rowcol    matrix add, 8192x8192 float32, ``row, col = cuda.grid(2)``: x runs along
                   the strided axis (numba's documentation's convention)
  stencil2d_f64    the 5-point stencil on an odd 5001x7003 float64 grid
  scale2d_gs       a 2-D grid-stride kernel (global_thread_id_2d / grid_stride_2d), 8192x8192

Also timed: a device-to-device copy of the bytes a launch moves (the bandwidth ceiling), and
where CuPy is installed, the same stencils as CuPy array expressions (what a CuPy user writes
without a kernel). Writes JSON with ``stencil2d.auto_fraction_of_best``,
``stencil3d.auto_fraction_of_best`` and ``correct``.

    python benchmarks/launch_nd.py --out benchmarks/results/launch_nd.json
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
from typing import Any, Callable

import numpy as np

import ringkernel  # noqa: F401 - before numba.cuda: ringkernel picks the backend
from ringkernel import gpu_kernel
from ringkernel.kernel.intrinsics import global_thread_id_2d, grid_stride_2d
from numba import cuda


@gpu_kernel
def stencil2d(u, out):  # type: ignore[no-untyped-def]
    col, row = cuda.grid(2)
    if 0 < row < out.shape[0] - 1 and 0 < col < out.shape[1] - 1:
        out[row, col] = u[row - 1, col] + u[row + 1, col] + u[row, col - 1] + u[row, col + 1] - 4 * u[row, col]


@gpu_kernel
def stencil3d(u, out):  # type: ignore[no-untyped-def]
    i = cuda.threadIdx.x + cuda.blockIdx.x * cuda.blockDim.x
    j = cuda.threadIdx.y + cuda.blockIdx.y * cuda.blockDim.y
    k = cuda.threadIdx.z + cuda.blockIdx.z * cuda.blockDim.z
    if 0 < k < u.shape[0] - 1 and 0 < j < u.shape[1] - 1 and 0 < i < u.shape[2] - 1:
        out[k, j, i] = (
            u[k - 1, j, i] + u[k + 1, j, i] + u[k, j - 1, i] + u[k, j + 1, i] + u[k, j, i - 1] + u[k, j, i + 1]
            - 6 * u[k, j, i]
        )  # fmt: skip


@gpu_kernel
def matadd_rowcol(a, b, c):  # type: ignore[no-untyped-def]
    row, col = cuda.grid(2)
    if row < c.shape[0] and col < c.shape[1]:
        c[row, col] = a[row, col] + b[row, col]


@gpu_kernel(grid_stride=True)
def scale2d_gs(a, out):  # type: ignore[no-untyped-def]
    x0, y0 = global_thread_id_2d()
    sx, sy = grid_stride_2d()
    for r in range(y0, out.shape[0], sy):
        for c in range(x0, out.shape[1], sx):
            out[r, c] = 3 * a[r, c]


def ref2d(u: np.ndarray) -> np.ndarray:
    out = np.zeros_like(u)
    out[1:-1, 1:-1] = u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4 * u[1:-1, 1:-1]
    return out


def ref3d(u: np.ndarray) -> np.ndarray:
    out = np.zeros_like(u)
    out[1:-1, 1:-1, 1:-1] = (
        u[:-2, 1:-1, 1:-1] + u[2:, 1:-1, 1:-1] + u[1:-1, :-2, 1:-1] + u[1:-1, 2:, 1:-1]
        + u[1:-1, 1:-1, :-2] + u[1:-1, 1:-1, 2:] - 6 * u[1:-1, 1:-1, 1:-1]
    )  # fmt: skip
    return out


SHAPES_2D = [
    (32, 1), (32, 2), (32, 4), (32, 8), (32, 16), (32, 32), (64, 1), (64, 2), (64, 4), (64, 8), (64, 16),
    (128, 1), (128, 2), (128, 4), (128, 8), (256, 1), (256, 2), (256, 4), (512, 1), (512, 2), (1024, 1),
    (16, 16), (16, 8), (16, 32), (8, 32), (8, 8), (4, 64), (2, 128), (1, 256), (1, 512), (1, 1024),
]  # fmt: skip
SHAPES_3D = [
    (32, 8, 1), (32, 4, 2), (32, 4, 4), (32, 2, 2), (32, 8, 2), (32, 16, 1), (32, 1, 8), (32, 32, 1),
    (64, 4, 1), (64, 2, 2), (64, 8, 1), (64, 4, 4), (128, 2, 1), (128, 1, 2), (128, 4, 1), (256, 1, 1),
    (256, 2, 1), (512, 1, 1), (1024, 1, 1), (16, 16, 1), (16, 8, 2), (16, 4, 4), (8, 8, 8), (8, 8, 4),
]  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n2d", type=int, default=8192)
    p.add_argument("--n3d", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all configurations")
    p.add_argument("--reps", type=int, default=5, help="samples per configuration per round")
    p.add_argument("--batch", type=int, default=10, help="back-to-back launches per sample")
    p.add_argument("--odd", default="5001,7003", help="rows,cols of the odd float64 stencil grid")
    p.add_argument("--max-shapes", type=int, default=None, help="sweep only the first N shapes (smoke tests)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    from ringkernel import GpuArchitecture
    from ringkernel._versions import driver_version, library_versions
    from ringkernel.benchmark import GpuTimer, Statistics

    from ringkernel.config import simulator_enabled

    if simulator_enabled():
        print("on numba's CUDA simulator: a smoke run, the times mean nothing", file=sys.stderr)
    elif not cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    arch = GpuArchitecture.current()
    rng = np.random.default_rng()
    try:
        import cupy
    except Exception:  # not installed
        cupy = None

    def grid_for(shape_xyz: tuple[int, ...], block: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(-(-e // b) for e, b in zip(shape_xyz, block))

    workloads: list[dict[str, Any]] = []

    n2, n3 = args.n2d, args.n3d
    u2 = rng.standard_normal((n2, n2), dtype=np.float32)
    d_u2, d_o2 = cuda.to_device(u2), cuda.device_array_like(u2)
    workloads.append(dict(name="stencil2d", kernel=stencil2d, args=(d_u2, d_o2), out=d_o2, ref=lambda: ref2d(u2),
                          extent=(n2, n2), shapes=SHAPES_2D, bytes=2 * u2.nbytes, gs=False, stencil=True,
                          cupy=_cupy_stencil2d(cupy, d_u2, d_o2) if cupy else None))
    u3 = rng.standard_normal((n3, n3, n3), dtype=np.float32)
    d_u3, d_o3 = cuda.to_device(u3), cuda.device_array_like(u3)
    workloads.append(dict(name="stencil3d", kernel=stencil3d, args=(d_u3, d_o3), out=d_o3, ref=lambda: ref3d(u3),
                          extent=(n3, n3, n3), shapes=SHAPES_3D, bytes=2 * u3.nbytes, gs=False, stencil=True,
                          cupy=_cupy_stencil3d(cupy, d_u3, d_o3) if cupy else None))
    a = rng.standard_normal((n2, n2), dtype=np.float32)
    b = rng.standard_normal((n2, n2), dtype=np.float32)
    d_a, d_b, d_c = cuda.to_device(a), cuda.to_device(b), cuda.device_array_like(a)
    workloads.append(dict(name="matadd_rowcol", kernel=matadd_rowcol, args=(d_a, d_b, d_c), out=d_c,
                          ref=lambda: a + b, extent=(n2, n2), shapes=SHAPES_2D, bytes=3 * a.nbytes, gs=False,
                          cupy=None))
    rows, cols = (int(x) for x in args.odd.split(","))
    u4 = rng.standard_normal((rows, cols))
    d_u4, d_o4 = cuda.to_device(u4), cuda.device_array_like(u4)
    workloads.append(dict(name="stencil2d_f64", kernel=stencil2d, args=(d_u4, d_o4), out=d_o4, ref=lambda: ref2d(u4),
                          extent=(cols, rows), shapes=SHAPES_2D, bytes=2 * u4.nbytes, gs=False, stencil=True,
                          cupy=None))
    d_o5 = cuda.device_array_like(a)
    workloads.append(dict(name="scale2d_gs", kernel=scale2d_gs, args=(d_a, d_o5), out=d_o5, ref=lambda: 3 * a,
                          extent=(n2, n2), shapes=SHAPES_2D, bytes=2 * a.nbytes, gs=True, cupy=None))

    all_correct = True
    results: dict[str, Any] = {}
    for w in workloads:
        k, kargs, out = w["kernel"], w["args"], w["out"]
        t0 = time.perf_counter()
        ref = w["ref"]()
        out.copy_to_device(np.full(out.shape, np.nan, dtype=out.dtype))
        k(*kargs)  # compiles (or loads from the cache) and launches with the automatic configuration
        cuda.synchronize()
        auto = k.last_config
        got = out.copy_to_host()
        tol = 1e-5 if got.dtype == np.float32 else 1e-12
        inner = tuple(slice(1, -1) for _ in got.shape) if w.get("stencil") else tuple(slice(None) for _ in got.shape)
        mask = np.zeros(got.shape, bool)
        mask[inner] = True
        # Written where the kernel writes (vs NumPy), untouched (still the NaN poison) elsewhere.
        correct = bool(np.allclose(got[inner], ref[inner], rtol=tol, atol=tol * 10)) and bool(np.isnan(got[~mask]).all())
        auto_out = got
        configs: list[dict[str, Any]] = [{"kind": "auto", "block": list(auto.block), "grid": list(auto.grid)}]
        for shp in w["shapes"][: args.max_shapes]:
            if w["gs"]:  # grid-stride sweep: 2 waves of 8 resident blocks-ish, like the 1-D benchmark
                grid = grid_for(w["extent"], shp)
                per_sm = max(1, 2048 // int(np.prod(shp)))
                cap = arch.sm_count * per_sm * 2
                g = list(grid)
                while int(np.prod(g)) > cap and g[-1] > 1:
                    g[-1] = max(1, cap // max(1, int(np.prod(g[:-1]))))
                grid = tuple(g)
            else:
                grid = grid_for(w["extent"], shp)
            if any(gd > lim for gd, lim in zip(grid, arch.max_grid_dim)):
                continue
            configs.append({"kind": "sweep", "block": list(shp), "grid": list(grid)})
        sweep_ok = True
        for cfg in configs[1:]:
            out.copy_to_device(np.full(out.shape, np.nan, dtype=out.dtype))
            k[tuple(cfg["grid"]), tuple(cfg["block"])](*kargs)
            if not np.array_equal(out.copy_to_host(), auto_out, equal_nan=True):
                sweep_ok = False
                cfg["wrong"] = True
        copy_src = cuda.device_array(w["bytes"] // 2, np.uint8)
        copy_dst = cuda.device_array(w["bytes"] // 2, np.uint8)
        configs.append({"kind": "copy", "via": "numba copy_to_device (cuMemcpyDtoD), same bytes moved"})
        if w["cupy"] is not None:
            configs.append({"kind": "cupy_expression"})

        def runner(cfg: dict[str, Any]) -> Callable[[], None]:
            if cfg["kind"] == "auto":
                return lambda: k(*kargs)
            if cfg["kind"] == "copy":
                return lambda: copy_dst.copy_to_device(copy_src)
            if cfg["kind"] == "cupy_expression":
                return w["cupy"]
            launch = k[tuple(cfg["grid"]), tuple(cfg["block"])]
            return lambda: launch(*kargs)

        timer = GpuTimer()  # one per workload: nothing carries over between them
        for cfg in configs:
            cfg["_go"] = runner(cfg)
            cfg["_go"]()  # warm outside the timer (CuPy compiles its kernels on first use)
            cuda.synchronize()
            timer.time_batch(cfg["_go"], args.batch)
            cfg["times_ms"] = []
        print(f"  {w['name']}: checked {len(configs)} configurations ({time.perf_counter() - t0:.1f} s)",
              file=sys.stderr, flush=True)
        for _ in range(args.rounds):
            order = configs[:]
            random.shuffle(order)
            for cfg in order:
                for _ in range(args.reps):
                    timer.synchronize()
                    cfg["times_ms"].append(timer.time_batch(cfg["_go"], args.batch))
        for cfg in configs:
            cfg.pop("_go")
            ci = Statistics.median_confidence_interval(cfg.pop("times_ms"), 0.95)
            cfg["median_ms"] = ci.estimate
            cfg["median_ms_ci95"] = [ci.low, ci.high]
            cfg["gbps"] = w["bytes"] / (ci.estimate * 1e-3) / 1e9
        sweep = [c for c in configs if c["kind"] == "sweep"]
        best = min(sweep, key=lambda c: c["median_ms"])
        worst = max(sweep, key=lambda c: c["median_ms"])
        auto_cfg = configs[0]
        copy_cfg = next(c for c in configs if c["kind"] == "copy")
        entry: dict[str, Any] = {
            "correct": correct and sweep_ok,
            "auto_fraction_of_best": best["median_ms"] / auto_cfg["median_ms"],
            "auto_fraction_of_copy": copy_cfg["median_ms"] / auto_cfg["median_ms"],
            "worst_fraction_of_best": best["median_ms"] / worst["median_ms"],
            "auto": {**auto_cfg, "explain": auto.explain()},
            "best": best,
            "worst": worst,
            "copy": copy_cfg,
            "shapes_swept": len(sweep),
            "extent_xyz": list(auto.extent or ()),
            "dtype": str(got.dtype),
            "bytes_per_launch": w["bytes"],
            "sweep": sweep,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        cp = next((c for c in configs if c["kind"] == "cupy_expression"), None)
        if cp is not None:
            entry["cupy_expression"] = cp
            entry["auto_speedup_vs_cupy_expression"] = cp["median_ms"] / auto_cfg["median_ms"]
        results[w["name"]] = entry
        all_correct = all_correct and entry["correct"]
        print(f"{w['name']:<15} correct={entry['correct']} auto {tuple(auto.block)} {auto_cfg['median_ms']:.4f} ms "
              f"({auto_cfg['gbps']:.0f} GB/s) best {tuple(best['block'])} {best['median_ms']:.4f} ms -> "
              f"auto/best {entry['auto_fraction_of_best']:.3f}, of copy {entry['auto_fraction_of_copy']:.3f}, "
              f"worst/best {entry['worst_fraction_of_best']:.3f}"
              + (f", vs CuPy expression {entry['auto_speedup_vs_cupy_expression']:.2f}x" if cp else ""),
              flush=True)  # fmt: skip
        del ref, got, auto_out

    result = {
        "benchmark": "launch_nd",
        "correct": all_correct,
        **results,
        "device": {"name": arch.name, "compute_capability": list(arch.compute_capability), "sm_count": arch.sm_count,
                   "l2_cache_bytes": arch.l2_cache_bytes, "driver": driver_version()},
        "versions": library_versions(),
        "host": platform.node(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/launch_nd.py " + " ".join(sys.argv[1:]),
        "timing": f"CUDA events around {args.batch} back-to-back launches (time/batch), median over "
        f"{args.rounds} rounds x {args.reps} samples, configurations interleaved in random order; "
        "auto_fraction_of_best = best sweep time / auto time",
    }  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all_correct else 1


def _cupy_stencil2d(cupy: Any, d_u: Any, d_o: Any) -> Callable[[], None]:
    u, o = cupy.asarray(d_u), cupy.asarray(d_o)  # zero-copy views of the numba arrays

    def go() -> None:
        o[1:-1, 1:-1] = u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4 * u[1:-1, 1:-1]

    return go


def _cupy_stencil3d(cupy: Any, d_u: Any, d_o: Any) -> Callable[[], None]:
    u, o = cupy.asarray(d_u), cupy.asarray(d_o)

    def go() -> None:
        o[1:-1, 1:-1, 1:-1] = (
            u[:-2, 1:-1, 1:-1] + u[2:, 1:-1, 1:-1] + u[1:-1, :-2, 1:-1] + u[1:-1, 2:, 1:-1]
            + u[1:-1, 1:-1, :-2] + u[1:-1, 1:-1, 2:] - 6 * u[1:-1, 1:-1, 1:-1]
        )  # fmt: skip

    return go


if __name__ == "__main__":
    sys.exit(main())
