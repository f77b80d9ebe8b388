"""Fast-table and memo decisions carry the stream / element count of the launch that made them."""
from ringkernel import GpuArchitecture, gpu_kernel, add_launch_hook, remove_launch_hook
from ringkernel.kernel.intrinsics import global_thread_id, grid_stride
from .fake import FakeDeviceArray


def _add():
    def add(a, b, c):
        for i in range(global_thread_id(), c.size, grid_stride()):
            c[i] = a[i] + b[i]

    k = gpu_kernel(grid_stride=True, arch=GpuArchitecture.preset("H200"),
                   signatures=["void(float32[::1], float32[::1], float32[::1])"])(add)
    k._runtime = True
    return k


def test_last_config_stream_is_stale(rt):
    calls, _, _ = rt
    k = _add()
    a, b = FakeDeviceArray(100), FakeDeviceArray(100)
    k(a, a, a, stream=0x77)      # checked: fast table stores a decision with stream 0x77
    k(b, b, b)                   # fast table, default stream
    print("driver stream", calls[-1]["stream"], "last_config.stream", k.last_config.config.stream)
    assert calls[-1]["stream"] is None
    assert k.last_config.config.stream is None, "last_config reports another launch's stream"


def test_explicit_fast_path_reports_stale_elements(rt):
    calls, _, _ = rt
    k = _add()
    small, big = FakeDeviceArray(100), FakeDeviceArray(50_000)
    k[4, 128](small, small, small)
    events = []
    h = add_launch_hook(events.append)
    try:
        k[4, 128](big, big, big)     # fast table: decision of the 100-element launch
    finally:
        remove_launch_hook(h)
    print("event.elements", events[-1].elements, "last_config.elements", k.last_config.elements)
    assert events[-1].elements == 50_000
