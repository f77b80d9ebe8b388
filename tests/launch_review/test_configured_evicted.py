"""A ConfiguredLaunch dropped from kernel._configured (256-entry clear, or an unhashable stream)
keeps its memo: add_launch_hook and kernel.close() no longer reach it."""
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


def _evicted_launch(k, a):
    cl = k[4, 128]
    cl(a, a, a); cl(a, a, a)
    assert cl._memo
    for g in range(1, 300):          # other configurations: _configured is cleared at 256
        k[g, 64]
    assert all(v is not cl for v in k._configured.values())
    return cl


def test_hook_misses_evicted_configured_launch(rt):
    calls, _, _ = rt
    k = _add()
    a = FakeDeviceArray(100)
    cl = _evicted_launch(k, a)
    events = []
    h = add_launch_hook(events.append)
    try:
        n = len(calls)
        cl(a, a, a)
        assert len(calls) == n + 1
        print("launches", len(calls) - n, "hook events", len(events))
        assert len(events) == 1, "launch not reported to the hook"
    finally:
        remove_launch_hook(h)


def test_close_misses_evicted_configured_launch(rt):
    calls, _, _ = rt
    k = _add()
    a = FakeDeviceArray(100)
    cl = _evicted_launch(k, a)
    ck = next(iter(k._compiled.values()))
    k.close()
    assert ck.closed
    n = len(calls)
    try:
        cl(a, a, a)
    except Exception as e:
        print("raised", type(e).__name__)
    print("driver calls after close:", len(calls) - n, "function", hex(calls[-1]["f"]))
    assert len(calls) == n, "closed kernel's unloaded function handed to cuLaunchKernel"


class UnhashableStream:
    __hash__ = None
    def __init__(self, h): self.handle = h
    def __eq__(self, o): return isinstance(o, UnhashableStream) and o.handle == self.handle


def test_unhashable_stream_configured_launch_is_never_tracked(rt):
    calls, _, _ = rt
    k = _add()
    a = FakeDeviceArray(100)
    cl = k[4, 128, UnhashableStream(0x5151)]
    cl(a, a, a); cl(a, a, a)
    assert cl._memo and not k._configured
    ck = next(iter(k._compiled.values()))
    k.close()
    n = len(calls)
    try:
        cl(a, a, a)
    except Exception as e:
        print("raised", type(e).__name__)
    assert len(calls) == n, "closed kernel launched"
