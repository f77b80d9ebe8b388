"""Layout entries put aside per hook state (kernel/hooks.py): no stale pointer or size after
an entry comes back, no silent entry in the reporting state after a race, every path reports to
a second hook, no array kept alive (from a review of the change; fake driver)."""
from __future__ import annotations

import ctypes
import gc
import struct
import sys
import weakref


from tests.test_runtime_fake_driver import FakeDeviceArray, PROTO, _kernel, runtime  # noqa: F401
from ringkernel import add_launch_hook, remove_launch_hook
from ringkernel.compile import launcher as L
from ringkernel.kernel import runtime as R


def _sizes(monkeypatch, calls):
    """Wrap the fake driver so each call also records each array's nitems slot (k*7+2)."""
    orig = L._launch_fn
    side = {"fn": None}

    def launch(f, gx, gy, gz, bx, by, bz, shm, stream, params, extra):
        rc = orig(f, gx, gy, gz, bx, by, bz, shm, stream, params, extra)
        ptrs = ctypes.cast(params, ctypes.POINTER(ctypes.c_void_p))
        calls[-1]["n"] = [struct.unpack("<q", ctypes.string_at(ptrs[k * 7 + 2], 8))[0] for k in range(3)]
        if side["fn"] is not None:
            fn, side["fn"] = side["fn"], None
            fn()
        return rc

    cb = PROTO(launch)
    monkeypatch.setattr(L, "_launch_fn", cb)
    return side, cb


def test_1_restored_entry_never_launches_stale_pointer_or_size(runtime, monkeypatch):
    calls, _, _ = runtime
    side, _cb = _sizes(monkeypatch, calls)
    k = _kernel()
    a, b, c = FakeDeviceArray(10), FakeDeviceArray(10), FakeDeviceArray(10)
    k(a, b, c); k(a, b, c); k(a, b, c)          # layout entry whose `current` holds a,b,c's records
    assert k._layouts
    old_ids, old_ptrs = [id(a), id(b), id(c)], [a.ptr, b.ptr, c.ptr]
    h = add_launch_hook(lambda e: None)          # the silent entry goes aside
    wr = [weakref.ref(x) for x in (a, b, c)]
    del a, b, c
    gc.collect()
    assert all(r() is None for r in wr)
    # new arrays, same ids where CPython reuses them, same pointers, another shape
    keep, found = [], {}
    for _ in range(200000):
        x = FakeDeviceArray(20)
        if id(x) in old_ids:
            found[id(x)] = x
            if len(found) == 3:
                break
        else:
            keep.append(x)
    new = [found.get(i) or FakeDeviceArray(20) for i in old_ids]
    for x, ptr in zip(new, old_ptrs):
        x.ptr = ptr
    same_ids = [id(x) for x in new] == old_ids
    remove_launch_hook(h)                        # the silent entry comes back
    k(*new)
    assert calls[-1]["n"] == [20, 20, 20] and calls[-1]["data"] == old_ptrs, (same_ids, calls[-1])
    # same shape as the entry, new pointers, same ids again
    del new; gc.collect()
    new10 = [FakeDeviceArray(10) for _ in range(3)]
    k(*new10)
    assert calls[-1]["n"] == [10, 10, 10] and calls[-1]["data"] == [x.ptr for x in new10]
    print("ids reused:", same_ids)


def _two_layouts(k):
    k(*[FakeDeviceArray(10) for _ in range(3)])
    k(*[FakeDeviceArray(20) for _ in range(3)])
    assert len(k._layouts) == 2  # [E20, E10], silent


def test_2_hook_added_during_layout_launch_reorder(runtime, monkeypatch):
    """_layout_launch reads self._layouts, launches entry k (driver call, guards, a hook...),
    then assigns the reordered list with no hook-state check: a hook registered meanwhile
    (another thread) leaves the silent list live while hooked, and on leaving it is put
    aside as the *reporting* list, coming back in every later profiler session."""
    calls, _, _ = runtime
    side, _cb = _sizes(monkeypatch, calls)
    k = _kernel()
    _two_layouts(k)
    events, handles = [], []
    side["fn"] = lambda: handles.append(add_launch_hook(events.append))
    k(*[FakeDeviceArray(10) for _ in range(3)])  # E20 fails, E10 launches -> reorder
    assert handles
    try:
        n = len(events)
        k(*[FakeDeviceArray(10) for _ in range(3)])
        first_session = len(events) - n
    finally:
        remove_launch_hook(handles[0])
    h = add_launch_hook(events.append)            # a later, clean profiler session
    try:
        n = len(events)
        for _ in range(3):
            k(*[FakeDeviceArray(10) for _ in range(3)])
        later = len(events) - n
    finally:
        remove_launch_hook(h)
    print("unreported: first session", 1 - first_session, "later session", 3 - later)
    assert first_session == 1 and later == 3


def test_3_hook_added_and_removed_inside_add_layout_entry(runtime, monkeypatch):
    """_add_layout_entry: a hook added before `entries = self._layouts` and the last one
    removed between the assignment and the check: the check passes, the silent entry sits in
    the list put aside as the reporting one."""
    calls, _, _ = runtime
    k = _kernel()
    k(*[FakeDeviceArray(10) for _ in range(3)])
    h0 = add_launch_hook(lambda e: None); remove_launch_hook(h0)  # (a reporting list exists? no matter)
    handles = []
    orig = L.KernelLauncher.pack_constant  # (what both the Python and the compiled entries pack with)

    def racing(self, *a, **kw):
        if not handles:
            handles.append(add_launch_hook(lambda e: None))
        return orig(self, *a, **kw)

    src_line = [ln for ln, t in enumerate(open(R.__file__).read().splitlines(), 1)
                if "if bool(_hooks.HOOKS) != hooked or _current.active or self._closed or lau.closed:" in t]
    target = R.RuntimeLaunchMixin._add_layout_entry.__code__

    def tracer(frame, event, arg):
        if frame.f_code is not target:
            return None
        def local(fr, ev, a):
            if ev == "line" and fr.f_lineno in src_line and handles and HOOKS_LEN():
                remove_launch_hook(handles[0])
            return local
        return local

    from ringkernel.kernel import hooks as HK
    HOOKS_LEN = lambda: len(HK.HOOKS)
    monkeypatch.setattr(L.KernelLauncher, "pack_constant", racing)
    sys.settrace(tracer)
    try:
        k(*[FakeDeviceArray(20) for _ in range(3)])   # new layout: checked path -> entry
    finally:
        sys.settrace(None)
        monkeypatch.setattr(L.KernelLauncher, "pack_constant", orig)
        for hnd in handles:
            remove_launch_hook(hnd)  # (no-op when the race removed it, as it should)
    events = []
    h = add_launch_hook(events.append)
    try:
        for _ in range(3):
            k(*[FakeDeviceArray(20) for _ in range(3)])
    finally:
        remove_launch_hook(h)
    print("events", len(events), "of 3")
    assert len(events) == 3


def test_4_second_hook_sees_every_path(runtime):
    calls, _, _ = runtime
    k = _kernel()
    a, b, c = FakeDeviceArray(10), FakeDeviceArray(10), FakeDeviceArray(10)
    e1, e2 = [], []
    h1 = add_launch_hook(e1.append)
    for _ in range(3):
        k(a, b, c)                     # checked, memo (notifying)
        k[1, 32](a, b, c)              # configured + memo
        k(*[FakeDeviceArray(10) for _ in range(3)])  # layout entry (reporting)
    h2 = add_launch_hook(e2.append)
    n = len(calls)
    for _ in range(3):
        k(a, b, c); k[1, 32](a, b, c); k(*[FakeDeviceArray(10) for _ in range(3)])
    remove_launch_hook(h1)
    k(a, b, c); k[1, 32](a, b, c); k(*[FakeDeviceArray(10) for _ in range(3)])
    m = len(e1)
    remove_launch_hook(h2)
    assert len(e2) == len(calls) - n == 12 and len(e1) == m


def test_5_aside_entries_keep_no_array_alive(runtime):
    k = _kernel()
    arrs = [FakeDeviceArray(10) for _ in range(3)]
    for _ in range(3):
        k(*arrs)
    refs = [weakref.ref(x) for x in arrs]
    h = add_launch_hook(lambda e: None)
    assert k._layouts_aside[False]
    del arrs; gc.collect()
    assert all(r() is None for r in refs)
    remove_launch_hook(h)
