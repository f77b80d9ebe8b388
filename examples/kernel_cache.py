"""The kernel cache: compile once, load in every later process; what invalidates an entry.

    python examples/kernel_cache.py

On a GPU it runs the same kernel in two fresh processes sharing a temporary cache
directory: the first compiles through numba and stores PTX + cubin, the second loads the
cubin without running numba's compiler. Everywhere (the simulator too) it shows the
proposal's ``PtxCache`` API and that editing a called device function changes the key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from ringkernel import kernel_from_source
from ringkernel.compile import CachingCompiler, PtxCache

KERNEL_V1 = """
from numba import cuda

@cuda.jit(device=True)
def shape(v):
    return v * v

def kernel(x, out):
    for i in range(global_thread_id(), x.size, grid_stride()):
        out[i] = shape(x[i])
"""
KERNEL_V2 = KERNEL_V1.replace("v * v", "v * v + 1.0")  # an edit inside the device function


def child() -> None:
    """One fresh process: launch, then report where the kernel came from."""
    from numba import cuda

    from ringkernel.kernels import saxpy

    x = cuda.to_device(np.random.default_rng().standard_normal(1 << 20).astype(np.float32))
    out = cuda.device_array_like(x)
    cuda.synchronize()  # the context exists before the clock starts
    t = time.perf_counter()
    saxpy(np.float32(2.0), x, x, out)
    cuda.synchronize()
    first_ms = (time.perf_counter() - t) * 1e3
    ck = saxpy.compiled(np.float32(2.0), x, x, out)
    ok = bool(np.allclose(out.copy_to_host(), 3 * x.copy_to_host()))
    print(json.dumps({"from_cache": ck.from_cache, "first_launch_ms": first_ms, "load_ms": ck.load_ms, "correct": ok}))


def main() -> int:
    from ringkernel.config import simulator_enabled

    with tempfile.TemporaryDirectory(prefix="rk-example-") as tmp:
        # 1. the design proposal's PTX API
        cache = PtxCache.with_dir(tmp)
        key = PtxCache.hash_source("any text that determines the PTX")
        print(f"miss first: {cache.get(key, 'sm_90') is None}")
        cache.put(key, "sm_90", ".version 8.0\n.target sm_90\n")
        print(f"then a hit: {cache.get(key, 'sm_90') is not None}; {cache.stats()}")

        # 2. the key follows the code, including the device functions a kernel calls
        compiler = CachingCompiler(PtxCache.with_dir(tmp), compute_cap="sm_90")
        from numba.core import types

        arr = types.Array(types.float32, 1, "C")
        k1 = compiler.cache_key(kernel_from_source(KERNEL_V1).py_func, (arr, arr), {})
        k2 = compiler.cache_key(kernel_from_source(KERNEL_V2).py_func, (arr, arr), {})
        print(f"editing the device function changes the key: {k1[:12]} -> {k2[:12]} ({k1 != k2})")
        if k1 == k2:
            return 1

        # 3. two fresh processes on a GPU: compile and store, then load
        if simulator_enabled():
            print("simulator: kernels run in Python, nothing is compiled, so the cache is not used")
            return 0
        env = dict(os.environ, RINGKERNEL_CACHE_DIR=os.path.join(tmp, "kernels"))
        runs = []
        for label in ("first process", "second process"):
            r = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True)
            runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
            got = runs[-1]
            print(f"{label}: from cache={got['from_cache']}, first launch {got['first_launch_ms']:.1f} ms "
                  f"(of which compile or load {got['load_ms']:.2f} ms), correct={got['correct']}")  # fmt: skip
        return 0 if all(r["correct"] for r in runs) and runs[1]["from_cache"] else 1


if __name__ == "__main__":
    if "--child" in sys.argv:
        child()
        sys.exit(0)
    sys.exit(main())
