"""Issue 15 (ninth session, 2026-11-30): what a call costs by the side that ran before it (host
data), and ADAPTIVE's sides at three sizes near or past a crossover. Output: the end of
benchmarks/results/hybrid_cpu_wake_session9.txt."""
import sys, time, collections
sys.path.insert(0, "benchmarks")
import numpy as np
import hybrid as hb
from ringkernel.hybrid import HybridConfig, HybridDispatcher, ProcessingMode, elementwise

T = 15
def kernels(name):
    cpu = elementwise(hb.KERNELS[name], dispatcher=HybridDispatcher(HybridConfig(ProcessingMode.CPU_ONLY, cpu_threads=T)), name=name)
    gpu = cpu.with_dispatcher(HybridDispatcher(HybridConfig(ProcessingMode.GPU_ONLY, cpu_threads=T)))
    ad = cpu.with_dispatcher(HybridDispatcher(HybridConfig(ProcessingMode.ADAPTIVE, cpu_threads=T, seed=2026)))
    return cpu, gpu, ad
rng = np.random.default_rng(0)
for name, n in (("poly50", 1 << 21), ("trig", 1 << 16), ("saxpy", 1 << 24)):
    cpu, gpu, ad = kernels(name)
    x = rng.uniform(-2, 2, n).astype(np.float32); y = x.copy(); out = np.empty(n, np.float32)
    args = (np.float32(1.75), x, y, out) if name == "saxpy" else (x, out)
    def t(k):
        t0 = time.perf_counter(); k(*args); return (time.perf_counter() - t0) * 1e6
    for k in (cpu, gpu, cpu, gpu): [t(k) for _ in range(3)]
    res = collections.defaultdict(list)
    for r in range(12):
        seq = [t(cpu) for _ in range(4)]; res["cpu after cpu"] += seq[1:]
        res["gpu after cpu (1st)"].append(t(gpu)); seq = [t(gpu) for _ in range(3)]; res["gpu after gpu"] += seq
        res["cpu after gpu (1st)"].append(t(cpu)); res["cpu 2nd after gpu"].append(t(cpu))
        time.sleep(0.005)
        res["cpu after 5 ms idle"].append(t(cpu))
        time.sleep(0.005)
        res["gpu after 5 ms idle"].append(t(gpu))
    print(name, n, {k: round(float(np.median(v)), 1) for k, v in res.items()}, flush=True)
    # ADAPTIVE learning on this size and its neighbours, then 60 calls: sides and times
    for m in (n // 4, n // 2, n, n * 2, n * 4) * 8:
        xs = x[: min(m, n)]
        (ad(np.float32(1.75), xs, xs, out[: xs.size]) if name == "saxpy" else ad(xs, out[: xs.size]))
    sides, times = [], []
    for _ in range(60):
        times.append(t(ad)); sides.append((ad.last_decision.use_gpu, ad.last_decision.reason))
    print("   adaptive:", round(float(np.median(times)), 1), "us; sides", collections.Counter(sides), flush=True)
    print("   ", ad.explain(n, data_on_device=False), flush=True)
