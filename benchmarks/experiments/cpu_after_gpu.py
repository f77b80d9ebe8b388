"""Issue 15 (ninth session): a small CPU call of @elementwise right after a 2^24 GPU call on host data, by thread count."""
import math, os, time, numpy as np
from ringkernel.hybrid import HybridConfig, HybridDispatcher, ProcessingMode, elementwise

def body(i, x, y, out):
    v = x[i]
    out[i] = math.sin(v) * math.exp(-v * v) + y[i]

rng = np.random.default_rng()
big = tuple(rng.uniform(-2, 2, 1 << 24) for _ in range(2)) + (np.zeros(1 << 24),)
tiny = tuple(rng.uniform(-2, 2, 256) for _ in range(2)) + (np.zeros(256),)
gk = elementwise(body, dispatcher=HybridDispatcher(HybridConfig(ProcessingMode.GPU_ONLY)))
for threads in (None, 15, 8, 1):
    ck = gk.with_dispatcher(HybridDispatcher(HybridConfig(ProcessingMode.CPU_ONLY, cpu_threads=threads)))
    ck(*tiny); gk(*big)
    after, alone, after_sleep = [], [], []
    for _ in range(9):
        gk(*big)
        t0 = time.perf_counter(); ck(*tiny); after.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); ck(*tiny); alone.append(time.perf_counter() - t0)
        gk(*big); time.sleep(0.02)
        t0 = time.perf_counter(); ck(*tiny); after_sleep.append(time.perf_counter() - t0)
    f = lambda v: f"median {np.median(v)*1e6:7.1f} max {max(v)*1e6:7.1f}"
    print(f"threads {threads}: CPU 256 right after a GPU 2^24 call: {f(after)}; the next CPU call: {f(alone)}; after the GPU call + 20 ms: {f(after_sleep)} us", flush=True)
