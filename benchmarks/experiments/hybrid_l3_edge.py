"""Experiment (issue 15, 2026-11-29; output: benchmarks/results/hybrid_l3_edge.txt): is ADAPTIVE's CPU path slower at 2^24 saxpy/host because it is ADAPTIVE, or because of
its place in the rotation? Modes: cpu, cpu2 (another CPU_ONLY dispatcher, shared kernel), cpu3 (a
separate kernel), gpu, adaptive."""
import itertools, time, subprocess
import numpy as np
import ringkernel
from numba import cuda
from ringkernel.hybrid import HybridConfig, HybridDispatcher, ProcessingMode, elementwise

print(subprocess.run("lscpu | grep -Ei 'model name|L3|NUMA|^CPU\\(s\\)|Thread|Socket'", shell=True, capture_output=True, text=True).stdout, flush=True)

def saxpy(i, a, x, y, out):
    out[i] = a * x[i] + y[i]

T = 15
disp = {m: HybridDispatcher(HybridConfig(k, cpu_threads=T, seed=2026)) for m, k in
        (("cpu", ProcessingMode.CPU_ONLY), ("cpu2", ProcessingMode.CPU_ONLY), ("cpu3", ProcessingMode.CPU_ONLY),
         ("gpu", ProcessingMode.GPU_ONLY), ("adaptive", ProcessingMode.ADAPTIVE))}
base = elementwise(saxpy, dispatcher=disp["cpu"], name="saxpy")
kern = {m: base if m == "cpu" else base.with_dispatcher(disp[m]) for m in disp if m != "cpu3"}
kern["cpu3"] = elementwise(saxpy, dispatcher=disp["cpu3"], name="saxpy3")
rng = np.random.default_rng(1)
sizes = [1 << k for k in (22, 23, 24, 25)]
hx = rng.uniform(-2, 2, sizes[-1]).astype(np.float32); hy = hx.copy()
data = {n: (hx[:n].copy(), hy[:n].copy(), np.empty(n, np.float32)) for n in sizes}
a = np.float32(1.75)
def call(m, n):
    x, y, out = data[n]
    t0 = time.perf_counter(); kern[m](a, x, y, out); return time.perf_counter() - t0
for m in kern: call(m, sizes[0]); call(m, sizes[0])
for n in rng.choice(sizes, 32): call("adaptive", int(n))
modes = list(kern)
orders = [modes[i:] + modes[:i] for i in range(len(modes))]
orders += [o[::-1] for o in orders]
times = {m: {n: [] for n in sizes} for m in modes}
dec = {n: [] for n in sizes}
for r in range(len(orders)):
    for n in sizes:
        for m in orders[r]:
            call(m, n)
            b = [call(m, n) for _ in range(3)]
            times[m][n].append(np.median(b) * 1e6)
            if m == "adaptive": dec[n].append(kern[m].last_decision.reason)
for n in sizes:
    print(n, {m: round(float(np.median(times[m][n])), 1) for m in modes}, set(dec[n]), flush=True)
    print("   adaptive rounds", [round(t) for t in times["adaptive"][n]], " cpu2", [round(t) for t in times["cpu2"][n]], flush=True)
# the adaptive kernel alone, many calls in a row at 2^24, then CPU_ONLY alone
for m in ("adaptive", "cpu", "adaptive", "cpu2"):
    ts = [call(m, 1 << 24) for _ in range(30)]
    print("alone", m, round(float(np.median(ts[5:]) * 1e6), 1), flush=True)
