"""Experiment (issue 13, 2026-11-29; output: benchmarks/results/profiling_cupti/cupti_probe.txt): does the CUPTI path work on the H200, and what does it cost a launch?"""
import time, traceback, sys
import numpy as np
import ringkernel
from ringkernel import gpu_kernel, GpuProfiler
from ringkernel.profiling.timing import GpuTiming
from numba import cuda

@gpu_kernel
def vadd(a, b, c):
    i = cuda.grid(1)
    if i < c.size:
        c[i] = a[i] + b[i]

@gpu_kernel
def scale(x, out, s):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = s * x[i]

def per_launch_us(launch, batches=40, batch=250):
    per = []
    for _ in range(batches):
        cuda.synchronize()
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            launch()
        per.append((time.perf_counter_ns() - t0) / batch / 1e3)
    cuda.synchronize()
    return float(np.median(per))

try:
    import cupti, cupti.cupti as c
    print("cupti-python", getattr(cupti, "__version__", "?"), [n for n in dir(c) if "version" in n.lower()], flush=True)
except Exception:
    traceback.print_exc(); sys.exit(0)
rng = np.random.default_rng()
a, b, out = (cuda.to_device(rng.standard_normal(1024).astype(np.float32)) for _ in range(3))
launch = lambda: vadd(a, b, out)
for _ in range(2000): launch()
res = {"disabled": per_launch_us(launch)}
for name, timing in (("events", GpuTiming.EVENTS), ("cupti", GpuTiming.CUPTI)):
    try:
        p = GpuProfiler(name, gpu_timing=timing)
        with p:
            per_launch_us(launch, batches=3)
            res[name] = per_launch_us(launch)
        print(name, "meta", p._timing_meta if hasattr(p, "_timing_meta") else None, flush=True)
        p.close()
    except Exception:
        traceback.print_exc()
res["disabled_after"] = per_launch_us(launch)
# CUPTI alone (no profiler): activity kinds enabled, buffers dropped
try:
    got = []
    c.activity_register_callbacks(lambda: (8 << 20, 0), lambda acts: got.append(len(acts)))
    for kind in (c.ActivityKind.CONCURRENT_KERNEL, c.ActivityKind.DRIVER):
        c.activity_enable(kind)
    per_launch_us(launch, batches=3)
    res["cupti_alone_kernel+driver"] = per_launch_us(launch)
    c.activity_disable(c.ActivityKind.DRIVER)
    res["cupti_alone_kernel"] = per_launch_us(launch)
    c.activity_flush_all(1)
    c.activity_disable(c.ActivityKind.CONCURRENT_KERNEL)
    print("records delivered", sum(got), flush=True)
except Exception:
    traceback.print_exc()
print("launch_us", {k: round(v, 2) for k, v in res.items()}, flush=True)
# accuracy: CUPTI durations of a 64 MiB scale kernel vs CUDA events
n = 1 << 24
x, y = cuda.to_device(rng.standard_normal(n).astype(np.float32)), cuda.device_array(n, np.float32)
for _ in range(5): scale(x, y, np.float32(2))
cuda.synchronize()
ev = []
for _ in range(50):
    s, e = cuda.event(), cuda.event()
    s.record(); scale(x, y, np.float32(2)); e.record(); e.synchronize(); ev.append(cuda.event_elapsed_time(s, e) * 1e3)
try:
    p = GpuProfiler("acc", gpu_timing=GpuTiming.CUPTI)
    with p:
        for _ in range(50):
            scale(x, y, np.float32(2))
        cuda.synchronize()
    summ = p.summary()
    ks = {k.name: (k.launches, k.timed, k.median_us) for k in summ.kernels}
    print("cupti summary", ks, "events median us", round(float(np.median(ev)), 2), "source", summ.timing_source, flush=True)
    p.export_chrome_tracing("/tmp/cupti_trace.json")
    p.close()
except Exception:
    traceback.print_exc()
