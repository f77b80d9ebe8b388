"""launcher._DEPENDENTS grows without bound for a long-lived array used with short-lived ones
once memo.clear() (256 entries) has dropped entries without unregistering them; it also holds
every (memo, key) registered for that array, even entries long gone."""
from ringkernel import GpuArchitecture, gpu_kernel
from ringkernel.compile import launcher as L
from ringkernel.kernel.intrinsics import global_thread_id, grid_stride
from .fake import FakeDeviceArray


def test_dependents_of_long_lived_array_grow(rt):
    def add(a, b, c):
        for i in range(global_thread_id(), c.size, grid_stride()):
            c[i] = a[i] + b[i]

    k = gpu_kernel(grid_stride=True, arch=GpuArchitecture.preset("H200"),
                   signatures=["void(float32[::1], float32[::1], float32[::1])"])(add)
    k._runtime = True
    w, out = FakeDeviceArray(100), FakeDeviceArray(100)
    keep = [FakeDeviceArray(100) for _ in range(2000)]  # inputs that live on (a dataset of batches)
    for epoch in range(3):
        for t in keep:
            k(t, w, out); k(t, w, out)
    print("memo entries", len(k._memo), "dependents of w:", len(L._DEPENDENTS[id(w)]))
    assert len(L._DEPENDENTS[id(w)]) <= 2 * len(k._memo) + 10
