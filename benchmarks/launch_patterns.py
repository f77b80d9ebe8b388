"""Host time per launch for the call patterns real programs use (issue 12's launch figures).

Six patterns, each with ringkernel, CuPy ``RawKernel`` (launching its own arrays, scalars as
NumPy scalars) and numba's dispatcher where they apply, in one process; ``ringkernel_python``
is ringkernel's pure-Python launch path (what runs where the compiled module cannot be built:
``RINGKERNEL_NATIVE=0``), the same kernels as a ``GpuKernel`` subclass that keeps it:

  same_numba      the same three numba arrays every call
  rotating_8      eight array sets in rotation
  scalar_changes  saxpy with ``alpha`` a new NumPy float32 every call
  cupy_arrays     CuPy arrays passed to the kernel
  new_arrays      a new array set every call, never launched before (allocated before the
                  timed round: allocation excluded; CuPy: new CuPy arrays)
  torch_tensors   PyTorch CUDA tensors passed to the kernel

Each timed call is one launch on host clocks; the queue is drained (untimed) every 256 calls
so that every path is measured by its host cost, not by the GPU's launch rate. In a round the
paths take turns in slices of 256 calls (``time_round``), so every path sees the same
stretch of the host's time. Median per round; ``--rounds`` rounds with the path order
rotated; reported: the median of the rounds.

    python benchmarks/launch_patterns.py --out benchmarks/results/launch_patterns.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import ringkernel  # noqa: F401 - before numba.cuda: ringkernel picks the backend
from ringkernel import GpuKernel, gpu_kernel
from numba import cuda


class PythonPathKernel(GpuKernel):
    """A kernel on the pure-Python launch path even where the compiled module is loaded."""

    __call__ = GpuKernel._slow_call
    _native_entries = False

N = 1024
GRID, BLOCK = 4, 256

CUPY_SRC = r"""
extern "C" __global__ void vadd(const float* a, const float* b, float* c, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}
extern "C" __global__ void saxpy(float alpha, const float* x, const float* y, float* out, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) out[i] = alpha * x[i] + y[i];
}
"""


@gpu_kernel
def rk_vadd(a, b, c):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < c.size:
        c[i] = a[i] + b[i]


@gpu_kernel
def rk_saxpy(alpha, x, y, out):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < out.size:
        out[i] = alpha * x[i] + y[i]


@cuda.jit
def nb_vadd(a, b, c):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < c.size:
        c[i] = a[i] + b[i]


@cuda.jit
def nb_saxpy(alpha, x, y, out):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < out.size:
        out[i] = alpha * x[i] + y[i]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--launches", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--profile", type=Path, default=None,
                   help="also write cProfile tables of ringkernel's path for each pattern to this file")
    args = p.parse_args()
    from ringkernel.config import simulator_enabled

    if simulator_enabled():
        print("needs a CUDA GPU (host launch costs mean nothing on the simulator)", file=sys.stderr)
        return 2
    import warnings

    warnings.simplefilter("ignore")  # numba's low-occupancy warning for the small grid
    rng = np.random.default_rng()
    launches = args.launches

    def dev() -> Any:
        return cuda.to_device(rng.standard_normal(N).astype(np.float32))

    a, b, c = dev(), dev(), cuda.device_array(N, np.float32)
    sets = [(dev(), dev(), cuda.device_array(N, np.float32)) for _ in range(8)]
    # new_arrays: every call gets arrays no launch has seen, made before the timed round
    # (allocation excluded) and dropped after it: one set per launch, nothing reused
    fresh: dict[str, list[Any]] = {"ringkernel": [], "ringkernel_python": [], "numba": []}  # one set per path

    def new_numba_sets_for(path: str) -> Callable[[], None]:
        def make() -> None:
            fresh[path][:] = [tuple(cuda.device_array(N, np.float32) for _ in range(3)) for _ in range(launches + 300)]

        return make

    py_vadd = PythonPathKernel(rk_vadd.py_func)
    py_saxpy = PythonPathKernel(rk_saxpy.py_func)
    alphas = [np.float32(v) for v in rng.standard_normal(launches)]
    patterns: dict[str, dict[str, Callable[[int], None]]] = {
        "same_numba": {
            "ringkernel": lambda i: rk_vadd(a, b, c),
            "ringkernel_python": lambda i: py_vadd(a, b, c),
            "numba": lambda i: nb_vadd[GRID, BLOCK](a, b, c),
        },
        "rotating_8": {
            "ringkernel": lambda i: rk_vadd(*sets[i & 7]),
            "ringkernel_python": lambda i: py_vadd(*sets[i & 7]),
            "numba": lambda i: nb_vadd[GRID, BLOCK](*sets[i & 7]),
        },
        "scalar_changes": {
            "ringkernel": lambda i: rk_saxpy(alphas[i], a, b, c),
            "ringkernel_python": lambda i: py_saxpy(alphas[i], a, b, c),
            "numba": lambda i: nb_saxpy[GRID, BLOCK](alphas[i], a, b, c),
        },
        "new_arrays": {
            "ringkernel": lambda i: rk_vadd(*fresh["ringkernel"][i]),
            "ringkernel_python": lambda i: py_vadd(*fresh["ringkernel_python"][i]),
            "numba": lambda i: nb_vadd[GRID, BLOCK](*fresh["numba"][i]),
        },
    }
    prepare: dict[tuple[str, str], Callable[[], None]] = {
        ("new_arrays", name): new_numba_sets_for(name) for name in ("ringkernel", "ringkernel_python", "numba")
    }  # fmt: skip
    versions_extra: dict[str, str] = {}
    try:
        import cupy

        ca, cb, cc = cupy.asarray(a), cupy.asarray(b), cupy.empty(N, dtype=cupy.float32)
        csets = [tuple(cupy.asarray(x) for x in s) for s in sets]
        cfresh: list[Any] = []

        def new_cupy_sets() -> None:
            cfresh[:] = [tuple(cupy.empty(N, dtype=cupy.float32) for _ in range(3)) for _ in range(launches + 300)]

        prepare[("new_arrays", "cupy")] = new_cupy_sets
        mod = cupy.RawModule(code=CUPY_SRC)
        kv, ks = mod.get_function("vadd"), mod.get_function("saxpy")
        n64 = np.int64(N)
        patterns["same_numba"]["cupy"] = lambda i: kv((GRID,), (BLOCK,), (ca, cb, cc, n64))
        patterns["rotating_8"]["cupy"] = lambda i: kv((GRID,), (BLOCK,), (*csets[i & 7], n64))
        patterns["scalar_changes"]["cupy"] = lambda i: ks((GRID,), (BLOCK,), (alphas[i], ca, cb, cc, n64))
        patterns["new_arrays"]["cupy"] = lambda i: kv((GRID,), (BLOCK,), (*cfresh[i], n64))
        patterns["cupy_arrays"] = {
            "ringkernel": lambda i: rk_vadd(ca, cb, cc),
            "ringkernel_python": lambda i: py_vadd(ca, cb, cc),
            "cupy": lambda i: kv((GRID,), (BLOCK,), (ca, cb, cc, n64)),
            "numba": lambda i: nb_vadd[GRID, BLOCK](ca, cb, cc),
        }
        versions_extra["cupy"] = cupy.__version__
    except Exception as exc:  # noqa: BLE001 - CuPy missing: report without it
        print(f"cupy unavailable: {exc}", file=sys.stderr)
    try:
        import torch

        ta, tb, tc = (torch.as_tensor(x.copy_to_host(), device="cuda") for x in (a, b, c))
        patterns["torch_tensors"] = {
            "ringkernel": lambda i: rk_vadd(ta, tb, tc),
            "ringkernel_python": lambda i: py_vadd(ta, tb, tc),
            "numba": lambda i: nb_vadd[GRID, BLOCK](ta, tb, tc),
        }
        if "cupy" in versions_extra:
            patterns["torch_tensors"]["cupy"] = lambda i: kv((GRID,), (BLOCK,), (ta.data_ptr(), tb.data_ptr(), tc.data_ptr(), n64))
        versions_extra["torch"] = torch.__version__
    except Exception as exc:  # noqa: BLE001
        print(f"torch unavailable: {exc}", file=sys.stderr)

    for pattern, paths in patterns.items():  # warm every path (compiles, caches)
        for name, fn in paths.items():
            if (pattern, name) in prepare:
                prepare[pattern, name]()
            for i in range(300):
                fn(i)
    cuda.synchronize()
    clock = time.perf_counter_ns
    out: dict[str, dict[str, float]] = {}
    per_round: dict[str, dict[str, list[float]]] = {}
    for pattern, paths in patterns.items():
        names = list(paths)
        per_round[pattern] = {k: [] for k in names}
        for r in range(args.rounds):
            for name in names:
                if (pattern, name) in prepare:
                    prepare[pattern, name]()  # untimed
            got = time_round(paths, launches, r, cuda.synchronize, clock)
            for v in fresh.values():
                v.clear()
            if "cupy" in versions_extra:
                cfresh.clear()
            for name, us in got.items():
                per_round[pattern][name].append(us)
        out[pattern] = {k: float(np.median(v)) for k, v in per_round[pattern].items()}
        print(pattern, {k: round(v, 2) for k, v in out[pattern].items()}, flush=True)
    if args.profile:
        write_profiles(args.profile, patterns, launches, prepare)
    # every ringkernel path computes the right thing (checked after timing, on fresh outputs):
    # bit for bit what numba's dispatcher computes from the same Python (the same compiled code),
    # and NumPy's answer within float32 rounding (the GPU contracts alpha*x+y into one FMA)
    host_a, host_b = a.copy_to_host(), b.copy_to_host()
    checks = (
        (lambda o: rk_vadd(a, b, o), lambda o: nb_vadd[GRID, BLOCK](a, b, o), host_a + host_b),
        (lambda o: rk_saxpy(alphas[0], a, b, o), lambda o: nb_saxpy[GRID, BLOCK](alphas[0], a, b, o),
         alphas[0] * host_a + host_b),
    )  # fmt: skip
    for rk_call, nb_call, want in checks:
        o, o_nb = cuda.device_array(N, np.float32), cuda.device_array(N, np.float32)
        rk_call(o)
        nb_call(o_nb)
        got = o.copy_to_host()
        assert np.array_equal(got, o_nb.copy_to_host()), "ringkernel and numba launches of one kernel differ"
        assert np.allclose(got, want, rtol=1e-5, atol=1e-5), "ringkernel launch gave a wrong result"
    for rk_call, nb_call, want in checks[:1]:  # the Python path too
        o = cuda.device_array(N, np.float32)
        py_vadd(a, b, o)
        assert np.allclose(o.copy_to_host(), want, rtol=1e-5, atol=1e-5), "ringkernel's Python path gave a wrong result"
    from ringkernel import GpuArchitecture
    from ringkernel._versions import driver_version, library_versions
    from ringkernel import native
    from ringkernel.kernel import core

    path = native.status()
    compiled_call = type(core.GpuKernel.__dict__["__call__"]).__name__ == "KernelCall"
    print(f"launch path: {'compiled' if path.in_use and compiled_call else 'Python'} ({path.detail})", flush=True)

    arch = GpuArchitecture.current()
    result = {
        "benchmark": "launch_patterns",
        "launch_us": out,
        "launch_us_per_round": per_round,
        "ringkernel_le_cupy": {k: v["ringkernel"] <= v["cupy"] for k, v in out.items() if "cupy" in v},
        "launch_path": {"compiled": bool(path.in_use and compiled_call), "detail": path.detail},
        "python_over_compiled": {k: v["ringkernel_python"] / v["ringkernel"] for k, v in out.items()},
        "new_arrays_over_numba": out["new_arrays"]["ringkernel"] / out["new_arrays"]["numba"],
        "elements": N,
        "launches_per_round": launches,
        "rounds": args.rounds,
        "device": {"name": arch.name, "compute_capability": list(arch.compute_capability), "driver": driver_version()},
        "versions": {**library_versions(), **versions_extra},
        "host": platform.node(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/launch_patterns.py " + " ".join(sys.argv[1:]),
        "timing": "host clock around each launch; queue drained untimed every 256 launches; in a round the paths "
        "take turns in slices of 256 launches (the order rotating per slice and round); median per round, "
        "median of rounds",
    }  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def time_round(paths: dict[str, Callable[[int], None]], launches: int, r: int, sync: Callable[[], None],
               clock: Callable[[], int], chunk: int = 256) -> dict[str, float]:  # fmt: skip
    """One round of a pattern: every path makes ``launches`` timed calls ``fn(i)``, in slices of
    ``chunk`` taken in turn (the order rotating by round and slice), the queue drained untimed
    before each slice (so it never fills). Paths timed one after another could fall on
    different speed levels of a host whose speed changes in steps (seen on the H200 hosts: all
    paths' times jump ~2x for seconds at a time); in slices each sees the same stretch of time.
    Returns each path's median per call, microseconds."""
    names = list(paths)
    samples = {k: np.empty(launches, dtype=np.int64) for k in names}
    for c, start in enumerate(range(0, launches, chunk)):
        k = (r + c) % len(names)
        for name in names[k:] + names[:k]:
            fn, out = paths[name], samples[name]
            sync()  # untimed
            for i in range(start, min(start + chunk, launches)):
                t = clock()
                fn(i)
                out[i] = clock() - t
    sync()
    return {k: float(np.median(v)) / 1e3 for k, v in samples.items()}


def write_profiles(
    path: Path, patterns: dict[str, dict[str, Callable[[int], None]]], launches: int,
    prepare: dict[tuple[str, str], Callable[[], None]],
) -> None:  # fmt: skip
    """cProfile of ringkernel's path per pattern (where the host time goes), top 30 by own time."""
    import cProfile
    import io
    import pstats

    out = io.StringIO()
    for pattern, paths in patterns.items():
        fn = paths["ringkernel"]
        if (pattern, "ringkernel") in prepare:
            prepare[pattern, "ringkernel"]()
        prof = cProfile.Profile()
        prof.enable()
        for i in range(launches):
            if i % 256 == 0:
                cuda.synchronize()
            fn(i)
        prof.disable()
        cuda.synchronize()
        out.write(f"===== {pattern} ({launches} launches)\n")
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(30)
    path.write_text(out.getvalue())


if __name__ == "__main__":
    sys.exit(main())
