"""Issue 12 experiment (ninth session): host time per launch of the same vadd (1024 float32) by
ringkernel's launch path, CuPy's RawKernel and a compiled prototype (fastlaunch.c) that reads
the arrays and calls cuLaunchKernel in C; each for CuPy arrays (the same set every call, and a
new set every call), and PyTorch tensors where installed. Medians of 7 interleaved rounds of
20 batches of 500 launches. Output: benchmarks/results/fastlaunch_experiment.txt."""
import ctypes, sys, time
import numpy as np
import ringkernel
from ringkernel import gpu_kernel
from numba import cuda
import cupy
import fastlaunch

N, GRID, BLOCK = 1024, 4, 256
SRC = r'''extern "C" __global__ void vadd(const float* a, const float* b, float* c, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}'''

@gpu_kernel
def rk_vadd(a, b, c):
    i = cuda.grid(1)
    if i < c.size:
        c[i] = a[i] + b[i]

def per_launch(fn, batches=20, batch=500):
    per = []
    for _ in range(batches):
        cuda.synchronize()
        t0 = time.perf_counter_ns()
        for i in range(batch):
            fn(i)
        per.append((time.perf_counter_ns() - t0) / batch / 1e3)
    cuda.synchronize()
    return float(np.median(per))

rng = np.random.default_rng()
ca, cb = (cupy.asarray(rng.standard_normal(N).astype(np.float32)) for _ in range(2))
cc = cupy.zeros(N, cupy.float32)
rk_vadd(ca, cb, cc)
cuda.synchronize()
ck = next(iter(rk_vadd._compiled.values()))
handle = ck.launcher.handle
lib = ctypes.CDLL("libcuda.so.1")
fastlaunch.init(ctypes.cast(lib.cuLaunchKernel, ctypes.c_void_p).value, cupy.ndarray, np.dtype(np.float32))
raw = cupy.RawKernel(SRC, "vadd")
n64 = np.int64(N)
# correctness of the prototype, both readers
for kind in (0, 1):
    cc.fill(0)
    fastlaunch.launch_arrays(handle, GRID, BLOCK, 0, kind, ca, cb, cc)
    cuda.synchronize()
    assert cupy.allclose(cc, ca + cb), kind
try:
    fastlaunch.launch_arrays(handle, GRID, BLOCK, 0, 0, ca, cb, np.zeros(N, np.float32))
    raise SystemExit("a NumPy array was accepted")
except TypeError as e:
    print("refused:", e)
fresh = [tuple(cupy.empty(N, cupy.float32) for _ in range(3)) for _ in range(20 * 500 + 10)]
cases = {
    "cupy arrays, same set: ringkernel": lambda i: rk_vadd(ca, cb, cc),
    "cupy arrays, same set: CuPy RawKernel": lambda i: raw((GRID,), (BLOCK,), (ca, cb, cc, n64)),
    "cupy arrays, same set: compiled prototype (attributes)": lambda i: fastlaunch.launch_arrays(handle, GRID, BLOCK, 0, 0, ca, cb, cc),
    "cupy arrays, same set: compiled prototype (__cuda_array_interface__)": lambda i: fastlaunch.launch_arrays(handle, GRID, BLOCK, 0, 1, ca, cb, cc),
    "cupy arrays, new set each call: ringkernel": lambda i: rk_vadd(*fresh[i]),
    "cupy arrays, new set each call: CuPy RawKernel": lambda i: raw((GRID,), (BLOCK,), (*fresh[i], n64)),
    "cupy arrays, new set each call: compiled prototype (attributes)": lambda i: fastlaunch.launch_arrays(handle, GRID, BLOCK, 0, 0, *fresh[i]),
}
try:
    import torch
    ta, tb, tc = (torch.as_tensor(x, device="cuda") for x in (ca, cb, cc))
    cases["torch tensors: ringkernel"] = lambda i: rk_vadd(ta, tb, tc)
    cases["torch tensors: compiled prototype (__cuda_array_interface__)"] = lambda i: fastlaunch.launch_arrays(handle, GRID, BLOCK, 0, 1, ta, tb, tc)
except ImportError:
    pass
for f in cases.values():
    for i in range(200):
        f(i)
res = {k: [] for k in cases}
for r in range(7):
    for k, f in (cases.items() if r % 2 == 0 else reversed(cases.items())):
        res[k].append(per_launch(f))
print(f"{ringkernel.__version__ if hasattr(ringkernel, '__version__') else ''} cupy {cupy.__version__}, python {sys.version.split()[0]}")
for k, v in res.items():
    print(f"{k:70s} {np.median(v):6.2f} us  (rounds {min(v):.2f}-{max(v):.2f})")
