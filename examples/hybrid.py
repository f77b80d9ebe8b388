"""One element-wise body, run on the CPU or the GPU as the dispatcher learns is faster.

    python examples/hybrid.py

Calls a transcendental-heavy body at sizes from 2^8 to 2^22 with host arrays, lets the ADAPTIVE
dispatcher learn both sides, checks every result against NumPy, and prints which side each
size went to and why (on the simulator the "GPU" is numba's simulator: slow, so the CPU wins).
"""

from __future__ import annotations

import math
import sys

import numpy as np

from ringkernel import config
from ringkernel.hybrid import HybridConfig, HybridDispatcher, ProcessingMode, elementwise

dispatcher = HybridDispatcher(HybridConfig(ProcessingMode.ADAPTIVE, seed=1))


@elementwise(dispatcher=dispatcher)
def damped(i, x, out):  # type: ignore[no-untyped-def]
    v = x[i]
    out[i] = math.sin(v) * math.exp(-v * v) + math.log1p(v * v)


def main() -> int:
    gpu = not config.simulator_enabled()
    sizes = [1 << k for k in range(8, 23 if gpu else 13, 2)]
    rng = np.random.default_rng(0)
    data = {n: rng.uniform(-2, 2, n) for n in sizes}
    for _ in range(8):  # learning: each size a few times (every result checked)
        for n, x in data.items():
            out = np.empty(n)
            damped(x, out)
            want = np.sin(x) * np.exp(-x * x) + np.log1p(x * x)
            if not np.allclose(out, want, rtol=1e-12, atol=1e-14):
                print(f"WRONG result at n={n}")
                return 1
    for n in sizes:
        print(dispatcher.explain(n, kernel="damped"))
    s = dispatcher.stats()
    print(f"{s.cpu_executions} calls on the CPU, {s.gpu_executions} on the GPU ({s.probes} to learn); "
          f"crossover {dispatcher.crossover(kernel='damped')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
