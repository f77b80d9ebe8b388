"""_memoize tests HOOKS, then builds and inserts the entry without any lock: an add_launch_hook
on another thread in between clears the memos first, then the entry is inserted and every later
launch from it skips the hook. Simulated deterministically by registering the hook from
constant_call (the point another thread could run at)."""
from ringkernel import GpuArchitecture, gpu_kernel, add_launch_hook, remove_launch_hook
from ringkernel.compile import launcher as L
from ringkernel.kernel.intrinsics import global_thread_id, grid_stride
from .fake import FakeDeviceArray


def test_hook_registered_during_memoize(rt, monkeypatch):
    calls, _, _ = rt

    def add(a, b, c):
        for i in range(global_thread_id(), c.size, grid_stride()):
            c[i] = a[i] + b[i]

    k = gpu_kernel(grid_stride=True, arch=GpuArchitecture.preset("H200"),
                   signatures=["void(float32[::1], float32[::1], float32[::1])"])(add)
    k._runtime = True
    a = FakeDeviceArray(100)
    events, handles = [], []
    orig = L.KernelLauncher.constant_call

    def racing(self, *args, **kw):
        if not handles:  # "another thread" registers a hook now, once
            handles.append(add_launch_hook(events.append))
        return orig(self, *args, **kw)

    monkeypatch.setattr(L.KernelLauncher, "constant_call", racing)
    k(a, a, a); k(a, a, a)           # entries are made; the hook arrives mid-way
    monkeypatch.setattr(L.KernelLauncher, "constant_call", orig)
    try:
        n, e = len(calls), len(events)
        for _ in range(3):
            k(a, a, a)
        print("launches", len(calls) - n, "events", len(events) - e, "memo", bool(k._memo))
        assert len(events) - e == 3  # every launch reported once: no silent entry survived
    finally:
        for h in handles:
            remove_launch_hook(h)
