import sys, threading
import numpy as np
from ringkernel import GpuArchitecture, gpu_kernel
from ringkernel.kernel.intrinsics import global_thread_id, grid_stride
from .fake import FakeDeviceArray, q, f32

def test_threads(rt):
    calls, _, hook = rt
    def kk(s, x, out):
        for i in range(global_thread_id(), out.size, grid_stride()):
            out[i] = s * x[i]
    k = gpu_kernel(grid_stride=True, arch=GpuArchitecture.preset("H200"),
                   signatures=["void(float32, float32[::1], float32[::1])"])(kk)
    k._runtime = True
    x, out = FakeDeviceArray(100), FakeDeviceArray(100)
    arrs = [(FakeDeviceArray(100), FakeDeviceArray(100)) for _ in range(4)]
    expected = threading.local()
    bad = []
    def check(c):
        e = expected.v
        got = (f32(c, 0), q(c, 5), q(c, 12))
        if got != e:
            bad.append((got, e))
    hook["fn"] = check
    def work(t):
        xx, oo = arrs[t]
        for i in range(3000):
            pair = (x, out) if i % 3 else (xx, oo)
            v = float(t * 10000 + i)
            expected.v = (v, pair[0].ptr, pair[1].ptr)
            k(np.float32(v), *pair)
            if i % 5 == 0:
                expected.v = (v, pair[0].ptr, pair[1].ptr)
                k[2, 64](np.float32(v), *pair)
    old = sys.getswitchinterval(); sys.setswitchinterval(1e-6)
    ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    [t.start() for t in ts]; [t.join() for t in ts]
    sys.setswitchinterval(old)
    print("bad", len(bad), bad[:3])
    assert not bad
