import numpy as np
import pytest
from ringkernel import GpuArchitecture, gpu_kernel, KernelArgumentError
from ringkernel.kernel.intrinsics import global_thread_id, grid_stride
from .fake import FakeDeviceArray, q, i32, f32


def _k(sig):
    def kk(s, x, out):
        for i in range(global_thread_id(), out.size, grid_stride()):
            out[i] = s * x[i]
    k = gpu_kernel(grid_stride=True, arch=GpuArchitecture.preset("H200"), signatures=sig)(kk)
    k._runtime = True
    return k


def test_type_changes(rt):
    calls, compiled, _ = rt
    k = _k(["void(float32, float32[::1], float32[::1])"])
    x, out = FakeDeviceArray(10), FakeDeviceArray(10)
    seq = [np.float32(1), np.float32(2), np.float32(3), np.float64(4.5), 5, 6.5, np.int64(7), np.float32(8), True if False else 9.0]
    for s in seq:
        k(s, x, out)
        c = calls[-1]
        assert f32(c, 0) == float(s), (s, f32(c, 0))
        assert (q(c, 5), q(c, 12)) == (x.ptr, out.ptr)
    with pytest.raises(KernelArgumentError):
        k(True, x, out)
    k(np.float32(10), x, out)
    assert f32(calls[-1], 0) == 10.0 and (q(calls[-1], 5), q(calls[-1], 12)) == (x.ptr, out.ptr)


def test_int_ranges(rt):
    calls, compiled, _ = rt
    k = _k(["void(int64, float32[::1], float32[::1])"])
    x, out = FakeDeviceArray(10), FakeDeviceArray(10)
    for s in (1, 2, 3, -5, 2**63 - 1):
        k(s, x, out)
        assert q(calls[-1], 0) == s
    for bad in (2**63, np.uint64(2**63)):
        with pytest.raises(KernelArgumentError):
            k(bad, x, out)
    k(np.int64(-1), x, out); k(np.int64(-2), x, out); k(np.int64(-3), x, out)
    assert q(calls[-1], 0) == -3
    k(np.int32(7), x, out)
    assert q(calls[-1], 0) == 7 and (q(calls[-1], 5), q(calls[-1], 12)) == (x.ptr, out.ptr)


def test_bool_int(rt):
    calls, compiled, _ = rt
    k = _k(["void(boolean, float32[::1], float32[::1])", "void(int32, float32[::1], float32[::1])"])
    x, out = FakeDeviceArray(10), FakeDeviceArray(10)
    for s in (True, False, True, 5, 6, np.bool_(False), 7, True, 2**31 - 1):
        k(s, x, out)
        raw = calls[-1]["raw"][0]
        if isinstance(s, (bool, np.bool_)):
            assert raw[0] == int(bool(s)), s
        else:
            assert i32(calls[-1], 0) == s, s
