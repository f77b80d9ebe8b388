"""Issue 13 (ninth session, 2026-11-30): what CUPTI's own recording costs a launch, by activity
configuration, with no profiler (records counted by kind and driver call). Output:
benchmarks/results/profiling_session9/cupti_kinds.txt. Needs cupti-python."""
import time, collections
import numpy as np
from ringkernel import gpu_kernel
from numba import cuda
import cupti.cupti as c

@gpu_kernel
def vadd(a, b, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i] + b[i]

def per_launch_us(launch, batches=10, batch=250):
    per = []
    for _ in range(batches):
        cuda.synchronize()
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            launch()
        per.append((time.perf_counter_ns() - t0) / batch / 1e3)
    cuda.synchronize()
    return float(np.median(per))

rng = np.random.default_rng()
a, b, out = (cuda.to_device(rng.standard_normal(1024).astype(np.float32)) for _ in range(3))
launch = lambda: vadd(a, b, out)
for _ in range(3000): launch()

counts = collections.Counter()
def req(): return 8 << 20, 0
def done(acts):
    for x in acts:
        k = int(x.kind)
        if k == int(c.ActivityKind.DRIVER):
            counts[("driver", int(x.cbid))] += 1
        else:
            counts[k] += 1
c.activity_register_callbacks(req, done)
K, D = c.ActivityKind.CONCURRENT_KERNEL, c.ActivityKind.DRIVER
LK = int(c.Driver_api_trace_cbid.cuLaunchKernel)

def cfg_none():
    return lambda: None
def cfg_kernel():
    c.activity_enable(K)
    return lambda: c.activity_disable(K)
def cfg_both():
    c.activity_enable(K); c.activity_enable(D)
    return lambda: (c.activity_disable(D), c.activity_disable(K))
def cfg_kernel_driverapi():
    c.activity_enable(K); c.activity_enable_driver_api(LK, 1)
    return lambda: (c.activity_enable_driver_api(LK, 0), c.activity_disable(K))
def cfg_kernel_runtime_off():
    c.activity_enable(K); c.activity_enable(D)
    return lambda: (c.activity_disable(D), c.activity_disable(K))

cfgs = {"none": cfg_none, "kernel": cfg_kernel, "kernel+driver": cfg_both, "kernel+driver_api(cuLaunchKernel)": cfg_kernel_driverapi}
res = collections.defaultdict(list)
recs = {}
for r in range(5):
    for name, f in cfgs.items():
        try:
            undo = f()
        except Exception as e:
            print(name, "failed:", repr(e)); res[name].append(float("nan")); continue
        per_launch_us(launch, batches=2)
        res[name].append(per_launch_us(launch))
        c.activity_flush_all(1)
        undo()
        c.activity_flush_all(1)
        if r == 0:
            named = {}
            for k, v in counts.items():
                if isinstance(k, tuple):
                    try: nm = c.get_callback_name(1, k[1])
                    except Exception: nm = k[1]
                    named[f"driver:{nm}"] = v
                else:
                    named[str(c.ActivityKind(k).name)] = v
            recs[name] = named
            print(name, "records in", 12 * 250, "launches:", named, flush=True)
        counts.clear()
for name, v in res.items():
    print(f"{name:40s} median {np.median(v):.2f} us  rounds {[round(x,2) for x in v]}", flush=True)
