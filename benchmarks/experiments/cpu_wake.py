"""Issue 15 (ninth session, 2026-11-30): the host's CPUs as numba sees them, and a parallel loop's
cost back to back and after 10 ms idle (OpenMP threads asleep), by thread count. Output:
benchmarks/results/hybrid_cpu_wake_session9.txt."""
import os, time, numpy as np, numba
print("os.cpu_count", os.cpu_count(), "affinity", len(os.sched_getaffinity(0)), "numba threads", numba.config.NUMBA_NUM_THREADS)
for p in ("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us", "/proc/loadavg"):
    try: print(p, open(p).read().strip())
    except OSError: print(p, "-")
@numba.njit(parallel=True)
def f(x, out, t):
    old = numba.get_num_threads()
    if t > 0: numba.set_num_threads(t)
    for i in numba.prange(x.size):
        out[i] = np.sin(x[i]) * np.cos(x[i])
    numba.set_num_threads(old)
for n in (256, 65536, 1 << 20):
    x = np.random.rand(n); out = np.empty(n)
    f(x, out, 0)
    print("threading layer", numba.threading_layer()) if n == 256 else None
    for t in (0, 1, 4, 8, 15):
        ts = []
        for _ in range(50):
            t0 = time.perf_counter(); f(x, out, t); ts.append(time.perf_counter() - t0)
        ts2 = []
        for _ in range(10):
            time.sleep(0.01)
            t0 = time.perf_counter(); f(x, out, t); ts2.append(time.perf_counter() - t0)
        print(f"n={n} threads={t or 'all'}: back-to-back median {np.median(ts)*1e6:.1f} us, after 10 ms idle median {np.median(ts2)*1e6:.1f} us max {max(ts2)*1e6:.0f}", flush=True)
