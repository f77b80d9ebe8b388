"""A failed pack in KernelLauncher.launch leaves the thread buffer half-overwritten while
st.last still names the scalar-memo entry's infos: the next scalar-memo launch skips packing."""
import pytest
from ringkernel import GpuArchitecture, gpu_kernel, KernelArgumentError
from ringkernel.kernel.intrinsics import global_thread_id, grid_stride
from .fake import FakeDeviceArray, q, i32, f32


def _scale():
    def scale(x, out, n):
        for i in range(global_thread_id(), out.size, grid_stride()):
            out[i] = x[i] * n

    k = gpu_kernel(grid_stride=True, arch=GpuArchitecture.preset("H200"),
                   signatures=["void(float32[::1], float32[::1], int32)"])(scale)
    k._runtime = True
    return k


def test_failed_pack_poisons_scalar_memo(rt):
    calls, _, _ = rt
    k = _scale()
    x, out = FakeDeviceArray(1000), FakeDeviceArray(1000)
    for n in (1, 2, 3):
        k(x, out, n)
    assert k._layouts
    assert (q(calls[-1], 4), q(calls[-1], 11), i32(calls[-1], 14)) == (x.ptr, out.ptr, 3)
    x2, out2 = FakeDeviceArray(1000), FakeDeviceArray(1000)
    with pytest.raises(KernelArgumentError):
        k(x2, out2, 2**40)   # does not fit int32: refused (correctly) ...
    k(x, out, 4)              # ... but this launch now goes out with x2/out2's pointers
    c = calls[-1]
    print("data ptrs", hex(q(c, 4)), hex(q(c, 11)), "n", i32(c, 14))
    assert (q(c, 4), q(c, 11), i32(c, 14)) == (x.ptr, out.ptr, 4), "STALE parameter block"


def test_failed_float_pack_poisons_scalar_memo(rt):
    calls, _, _ = rt

    def axpy(a, x, out):
        for i in range(global_thread_id(), out.size, grid_stride()):
            out[i] = a * x[i]

    k = gpu_kernel(grid_stride=True, arch=GpuArchitecture.preset("H200"),
                   signatures=["void(float32, float32[::1], float32[::1])"])(axpy)
    k._runtime = True
    x, out = FakeDeviceArray(1000), FakeDeviceArray(1000)
    for a in (1.0, 2.0, 3.0):
        k(a, x, out)
    x2, out2 = FakeDeviceArray(1000), FakeDeviceArray(1000)
    with pytest.raises(Exception) as ei:
        k(1e300, x2, out2)   # a Python float too large for float32
    print("raised:", type(ei.value).__name__, ei.value)
    k(5.0, x, out)
    c = calls[-1]
    print("a", f32(c, 0), "ptrs", hex(q(c, 1 + 4)), hex(q(c, 8 + 4)), "out size", q(c, 8 + 5))
    assert (q(c, 5), q(c, 12), q(c, 13)) == (x.ptr, out.ptr, 1000), "STALE/zeroed parameter block"
