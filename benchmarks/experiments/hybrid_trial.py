"""Issue 15 (twelfth session): @elementwise / ADAPTIVE tried as a new user would, on cases not in
the issue: a float64 and an int32 body, odd sizes, NumPy, numba, CuPy and PyTorch arrays, sizes
alternating call by call, and careless input. Every call's result is checked against NumPy.
Output: benchmarks/results/hybrid_trial_session12.txt (GPU) or the simulator's run (small sizes).

    python benchmarks/experiments/hybrid_trial.py
"""

from __future__ import annotations

import collections
import sys
import time

import numpy as np

import ringkernel  # noqa: F401
from ringkernel.config import simulator_enabled
from ringkernel.errors import RingKernelError
from ringkernel.hybrid import elementwise


@elementwise
def clamp_scale(i, x, lo, s, out):  # type: ignore[no-untyped-def]
    v = x[i]
    out[i] = (v if v > lo else lo) * s


@elementwise
def mix_int(i, a, b, out):  # type: ignore[no-untyped-def]
    out[i] = (a[i] * 3 + b[i]) % 1000


def main() -> int:
    sim = simulator_enabled()
    rng = np.random.default_rng()
    sizes = [1, 7, 3001, 100_003] if sim else [1, 7, 3001, 100_003, (1 << 20) + 7, 5_000_011]
    libs = ["numpy", "numba"]
    if not sim:
        for name in ("cupy", "torch"):
            try:
                __import__(name)
                libs.append(name)
            except ImportError:
                print(f"{name}: not installed, skipped")
    from numba import cuda

    def to(lib, a):  # type: ignore[no-untyped-def]
        if lib == "numpy":
            return a
        if lib == "numba":
            return cuda.to_device(a)
        if lib == "cupy":
            import cupy

            return cupy.asarray(a)
        import torch

        return torch.from_numpy(a).cuda()

    def back(lib, a):  # type: ignore[no-untyped-def]
        if lib == "numpy":
            return a
        if lib == "numba":
            return a.copy_to_host()
        if lib == "cupy":
            import cupy

            return cupy.asnumpy(a)
        return a.cpu().numpy()

    sides: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    t0 = time.perf_counter()
    calls = 0
    for rnd in range(40 if not sim else 3):
        for lib in libs:
            for n in sizes if rnd % 2 == 0 else sizes[::-1]:  # sizes alternating call by call
                x = rng.standard_normal(n)  # float64
                want = np.maximum(x, -0.25) * 1.5
                xo, out = to(lib, x), to(lib, np.zeros(n))
                clamp_scale(xo, -0.25, 1.5, out)
                np.testing.assert_allclose(back(lib, out), want, rtol=1e-12)
                d = clamp_scale.last_decision
                sides[f"clamp_scale/{lib}/{n}"][("GPU" if d.use_gpu else "CPU")] += 1
                a = rng.integers(0, 1 << 20, n, dtype=np.int32)
                b = rng.integers(0, 1 << 20, n, dtype=np.int32)
                want_i = ((a.astype(np.int64) * 3 + b) % 1000).astype(np.int32)
                o = to(lib, np.zeros(n, np.int32))
                mix_int(to(lib, a), to(lib, b), o)
                np.testing.assert_array_equal(back(lib, o), want_i)
                calls += 2
    print(f"{calls} calls checked against NumPy in {time.perf_counter() - t0:.1f} s (float64 and int32; {', '.join(libs)})")
    for key, c in sides.items():
        print(f"  {key}: {dict(c)}")
    print(clamp_scale.explain(100_003, data_on_device=False))
    print(clamp_scale.explain(100_003, data_on_device=True))
    # careless input: each refused with what to do (or run right)
    x = np.ones(10)
    cases = {
        "lengths differ": lambda: clamp_scale(x, 0.0, 1.0, np.zeros(9)),
        "a list": lambda: clamp_scale([1.0, 2.0], 0.0, 1.0, np.zeros(2)),
        "None": lambda: clamp_scale(x, None, 1.0, np.zeros(10)),
        "read-only output": lambda: clamp_scale(x, 0.0, 1.0, _readonly(10)),
        "2-D array": lambda: clamp_scale(np.ones((2, 5)), 0.0, 1.0, np.zeros((2, 5))),
        "too few arguments": lambda: clamp_scale(x, 0.0),
        "by name": lambda: clamp_scale(x, 0.0, 1.0, out=np.zeros(10)),
        "output aliasing input view": lambda: clamp_scale(x[1:], 0.0, 1.0, x[:-1]),
    }
    for name, f in cases.items():
        try:
            f()
            print(f"careless: {name}: ran (no error)")
        except RingKernelError as exc:
            print(f"careless: {name}: {type(exc).__name__}: {str(exc).splitlines()[0][:150]}")
    return 0


def _readonly(n: int) -> np.ndarray:
    a = np.zeros(n)
    a.flags.writeable = False
    return a


if __name__ == "__main__":
    sys.exit(main())
