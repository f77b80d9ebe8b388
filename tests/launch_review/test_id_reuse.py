import gc
import numpy as np
from ringkernel import GpuArchitecture, gpu_kernel
from ringkernel.kernel.intrinsics import global_thread_id, grid_stride
from .fake import FakeDeviceArray, q, f32


def _k():
    def kk(s, x, out):
        for i in range(global_thread_id(), out.size, grid_stride()):
            out[i] = s * x[i]
    k = gpu_kernel(grid_stride=True, arch=GpuArchitecture.preset("H200"),
                   signatures=["void(float32, float32[::1], float32[::1])", "void(float32, float32[:, ::1], float32[:, ::1])"])(kk)
    k._runtime = True
    return k


def test_reuse(rt):
    calls, _, _ = rt
    k = _k()
    cl = k[3, 64]
    reused = 0
    for it in range(300):
        n = 10 + (it * 37) % 5000
        x, out = FakeDeviceArray(n), FakeDeviceArray(n)
        ids = (id(x), id(out))
        for j in range(3):
            k(np.float32(j), x, out)
            c = calls[-1]
            assert (q(c, 5), q(c, 6), q(c, 12), q(c, 13), f32(c, 0)) == (x.ptr, n, out.ptr, n, j)
            k(x if False else np.float32(j), x, out)
            cl(np.float32(j), x, out)
            c = calls[-1]
            assert (q(c, 5), q(c, 6), q(c, 12), q(c, 13)) == (x.ptr, n, out.ptr, n)
            k(np.float32(1), out, x)   # swapped positions
            c = calls[-1]
            assert (q(c, 5), q(c, 12)) == (out.ptr, x.ptr)
        del x, out
        if it % 7 == 0:
            gc.collect()
        y, z = FakeDeviceArray(n + 1), FakeDeviceArray(n + 1)
        reused += (id(y), id(z)) == ids or id(y) in ids or id(z) in ids
        k(np.float32(2), y, z)
        c = calls[-1]
        assert (q(c, 5), q(c, 6), q(c, 12), q(c, 13)) == (y.ptr, n + 1, z.ptr, n + 1)
        del y, z
    print("id reuses", reused)
