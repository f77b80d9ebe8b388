"""(Written against the scalar memo, now the layout entries.) _memoize_scalars replaced _smemo_arrays and _smemo_get one after the other while another
thread's _smemo_launch reads them one after the other: a getter of one position with a
positions tuple of two makes tuple(map(id, <array>)) -> TypeError out of kernel(...)."""
import sys, threading
import numpy as np
from ringkernel import GpuArchitecture, gpu_kernel
from ringkernel.kernel.intrinsics import global_thread_id, grid_stride
from .fake import FakeDeviceArray


def test_positions_race(rt):
    def kk(p, q, out):
        for i in range(global_thread_id(), out.size, grid_stride()):
            out[i] = p * q

    k = gpu_kernel(grid_stride=True, arch=GpuArchitecture.preset("H200"),
                   signatures=["void(float32, float32[::1], float32[::1])",
                               "void(float32, float32, float32[::1])"])(kk)
    k._runtime = True
    x, out, out2 = FakeDeviceArray(100), FakeDeviceArray(100), FakeDeviceArray(100)
    errors = []

    def t1():
        try:
            for i in range(20000):
                k(np.float32(i), x, out)       # arrays at (1, 2)
        except Exception as e:
            errors.append(repr(e))

    def t2():
        try:
            for i in range(20000):
                k(np.float32(i), np.float32(2), out2)   # arrays at (2,)
        except Exception as e:
            errors.append(repr(e))

    old = sys.getswitchinterval(); sys.setswitchinterval(1e-6)
    ts = [threading.Thread(target=t1), threading.Thread(target=t2)]
    [t.start() for t in ts]; [t.join() for t in ts]
    sys.setswitchinterval(old)
    print("errors:", errors[:2])
    assert not errors
