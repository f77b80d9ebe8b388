"""``LaunchCapture.CUPTI``: launches read from CUPTI's records alone (no launch hook), against a
fake ``cupti.cupti`` whose records carry the fields NVIDIA's bindings document (kernel: name,
grid, block, shared memory, stream id; driver call: thread id, start, end; a correlation id
shared by the two). tests/gpu/test_profiling_gpu.py runs the real thing on the H200."""

from __future__ import annotations

import sys
import threading
import time
import types
from typing import Iterator

import pytest

from ringkernel import config, driver
from ringkernel.compile.compiler import ENTRY_NAMES
from ringkernel.errors import ConfigurationError
from ringkernel.kernel import hooks
from ringkernel.profiling import EventKind, GpuProfiler, LaunchCapture, ProfileCategory, reset
from ringkernel.profiling.cupti_capture import readable_symbol

from tests.test_cupti_matching import OFFSET, _Record
from tests.test_cupti_matching import _FakeCupti as _MatchingFake
from tests.test_profiling import validate_trace

SAXPY = "_ZN6cudapy8__main__5saxpyB2v1B96cw51cXTLSUwv1sDUaKthoaNgqamjgOR3W3CwAkMXLaJtQYkOIgxJU0gCqOkEJoHkbttqdVhoqlspQGNFHSgJ5BnXagIAE5ArrayIfLi1E1C7mutable7alignedE"


class _Kernel(_Record):
    def __init__(self, kind: int, corr: int, start: int, end: int, name: str, stream_id: int) -> None:
        super().__init__(kind, start, end, corr)
        self.name = name
        self.grid_x, self.grid_y, self.grid_z = 40, 1, 1
        self.block_x, self.block_y, self.block_z = 256, 1, 1
        self.dynamic_shared_memory, self.static_shared_memory = 128, 16
        self.stream_id = stream_id


class _Call(_Record):
    def __init__(self, kind: int, corr: int, start: int, end: int, thread_id: int) -> None:
        super().__init__(kind, start, end, corr)
        self.thread_id = thread_id


class _FakeCupti(_MatchingFake):
    """The matching tests' fake CUPTI, with stream ids and launches whose records carry what
    kernel and driver-call records carry."""

    def __init__(self) -> None:
        super().__init__()
        self.corr = 0
        self.stream_free: dict[int, int] = {}

    def get_stream_id_ex(self, ctx: int, handle: int, per_thread: int) -> int:
        return {0: 7, 0xABC0: 9}[handle]  # other handles: KeyError, as CUPTI refuses a foreign one

    def launch(self, symbol: str, stream_id: int = 7, thread_id: int | None = None, kernel_us: int = 20) -> tuple[int, int]:
        """One launch call of 2 us now, on this thread (or thread_id); returns the kernel's span (host ns)."""
        self.corr += 1
        t0 = time.perf_counter_ns()
        t1 = t0 + 2_000
        k0 = max(t1 + 500, self.stream_free.get(stream_id, 0))  # a stream runs its kernels in order
        k1 = self.stream_free[stream_id] = k0 + kernel_us * 1_000
        tid = threading.get_ident() & 0xFFFFFFFF if thread_id is None else thread_id
        self.pending += [_Call(self.ActivityKind.DRIVER, self.corr, t0 - OFFSET, t1 - OFFSET, tid),
                         _Kernel(self.ActivityKind.CONCURRENT_KERNEL, self.corr, k0 - OFFSET, k1 - OFFSET, symbol,
                                 stream_id)]  # fmt: skip
        while time.perf_counter_ns() < t1 + 1_000:  # the call's time passes
            pass
        return k0, k1


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FakeCupti]:
    reset()
    c = _FakeCupti()
    pkg = types.ModuleType("cupti")
    pkg.cupti = c  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupti", pkg)
    monkeypatch.setitem(sys.modules, "cupti.cupti", c)
    monkeypatch.setattr(config, "require_backend", lambda: False)  # as on a GPU
    monkeypatch.setattr(driver, "ctx_current", lambda: 0x1234)
    monkeypatch.setitem(ENTRY_NAMES, SAXPY, "saxpy")
    yield c
    reset()


def test_launches_come_from_cupti_records_with_names_ranges_threads_and_streams(fake: _FakeCupti) -> None:
    prof = GpuProfiler("cupti capture", launches=LaunchCapture.CUPTI)
    prof.name_stream(0xABC0, "pipe")
    spans = {}
    keep = threading.Event()
    live = threading.Thread(target=keep.wait, name="live one")  # alive when the records are read
    live.start()
    try:
        with prof:
            assert prof.active and not hooks.HOOKS  # nothing runs per launch
            with prof.range("outer", ProfileCategory.ALGORITHM):
                spans["a"] = fake.launch(SAXPY)
                with prof.range("inner", ProfileCategory.ALGORITHM):
                    spans["b"] = fake.launch("_ZN4cupy6reduce3sumE", stream_id=9)
            spans["c"] = fake.launch("plain_c_kernel", stream_id=3)  # outside every range, a stream nobody named

            def worker() -> None:
                with prof.range("work", ProfileCategory.ALGORITHM):  # (a thread with ranges: known after it ends)
                    spans["d"] = fake.launch(SAXPY)

            t = threading.Thread(target=worker, name="worker")
            t.start()
            t.join()
            spans["e"] = fake.launch(SAXPY, thread_id=0xDEAD)  # a thread that started and ended unseen
            assert live.ident is not None
            spans["f"] = fake.launch(SAXPY, thread_id=live.ident & 0xFFFFFFFF)
    finally:
        keep.set()
        live.join()
    assert not hooks.HOOKS and fake.enabled == set()  # closed its CUPTI use on exit
    evs = prof.events()
    kernels = [e for e in evs if e.kind is EventKind.KERNEL]
    ranges = {e.name: e for e in evs if e.kind is EventKind.RANGE}
    assert [k.name for k in kernels] == ["saxpy", "cupy.reduce.sum", "plain_c_kernel", "saxpy", "saxpy", "saxpy"]
    a, b, c, d, e, f = kernels
    assert a.parent_id == ranges["outer"].id and b.parent_id == ranges["inner"].id and c.parent_id is None
    assert d.parent_id == ranges["work"].id and d.track == "worker" and a.track == threading.current_thread().name
    assert e.track == "thread 0xdead" and f.track == "live one"
    assert (a.stream, b.stream, c.stream) == ("default stream", "pipe", "CUDA stream 3 (CUPTI id)")
    for k, key in zip(kernels, "abcdef"):
        assert k.gpu_start_ns is not None and k.gpu_end_ns is not None
        assert abs(k.gpu_start_ns - spans[key][0]) < 50_000, key  # the clocks' offset, sampled
        assert k.gpu_end_ns - k.gpu_start_ns == spans[key][1] - spans[key][0], key  # exact: one clock
        assert k.args["grid"] == [40, 1, 1] and k.args["block"] == [256, 1, 1] and k.args["shared_mem"] == 144
        assert k.args["launch"] == "cupti" and "elements" not in k.args
        assert k.end_ns - k.start_ns == 2_000  # the launching call's own interval
    assert b.host_ns is not None and b.host_ns > 0  # host time between launches on one thread
    assert prof.metadata()["timing_source"] == "cupti activity records"
    trace = validate_trace(prof.export_chrome_tracing())
    assert sum(1 for ev in trace["traceEvents"] if ev["ph"] == "s") == 6  # a flow per launch
    s = prof.summary()
    assert {k.name: k.launches for k in s.kernels}["saxpy"] == 4
    prof.close()


def test_bytes_per_element_need_elements_and_bytes_per_launch_do_not(fake: _FakeCupti) -> None:
    prof = GpuProfiler("bytes", launches=LaunchCapture.CUPTI)
    prof.annotate_kernel("saxpy", bytes_per_element=12).end()
    prof.annotate_kernel("fixed", bytes_per_launch=4096).end()
    ENTRY_NAMES["fixed_sym"] = "fixed"
    try:
        with prof:
            fake.launch(SAXPY)
            fake.launch("fixed_sym")
        nb = {e.name: e.nbytes for e in prof.events() if e.kind is EventKind.KERNEL}
        assert nb == {"saxpy": None, "fixed": 4096}  # no element count from CUPTI: no guess
    finally:
        del ENTRY_NAMES["fixed_sym"]
        prof.close()


def test_what_cupti_capture_refuses(fake: _FakeCupti, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="cannot filter"):
        GpuProfiler("f", launches=LaunchCapture.CUPTI, launch_filter=lambda: True)
    with pytest.raises(ConfigurationError, match="LaunchCapture"):
        GpuProfiler("f", launches="cupti")  # type: ignore[arg-type]
    from ringkernel.profiling import GpuTiming

    with pytest.raises(ConfigurationError, match="EVENTS"):
        GpuProfiler("f", launches=LaunchCapture.CUPTI, gpu_timing=GpuTiming.EVENTS)
    monkeypatch.setattr(config, "require_backend", lambda: True)  # the simulator
    p = GpuProfiler("sim", launches=LaunchCapture.CUPTI)
    with pytest.raises(ConfigurationError, match="simulator") as info:
        p.__enter__()
    assert "LaunchCapture.HOOK" in str(info.value) and not p.active
    monkeypatch.setattr(config, "require_backend", lambda: False)
    monkeypatch.delitem(sys.modules, "cupti.cupti")
    monkeypatch.setitem(sys.modules, "cupti", None)  # not installed
    with pytest.raises(ConfigurationError, match="cupti-python"):
        with GpuProfiler("none", launches=LaunchCapture.CUPTI):
            pass


@pytest.mark.parametrize("symbol, want", [
    (SAXPY, "__main__.saxpy"),
    ("_ZN4cupy6reduce3sumE", "cupy.reduce.sum"),
    ("_ZN6cudapy3pkg3mod6kernelB2v3E5Array", "pkg.mod.kernel"),
    ("vector_add", "vector_add"),
    ("_Z9vectorAddPKfS0_Pfi", "vectorAdd"),
    ("_Z99x", "x"),  # a length past the end: what is there
    ("_ZN", "_ZN"),
    ("_ZN99short", "short"),  # a length past the end: what is there
])
def test_readable_symbol(symbol: str, want: str) -> None:
    assert readable_symbol(symbol) == want


def test_what_the_review_found_stays_fixed(fake: _FakeCupti) -> None:
    """Launches older than 10 s, ranges still open when events are read, launches while
    disabled, the graph's kernels sharing one correlation id, the max_events bound."""
    prof = GpuProfiler("review", launches=LaunchCapture.CUPTI)
    with prof:
        with prof.range("open while read", ProfileCategory.ALGORITHM):
            fake.launch(SAXPY)
            # a driver call 11 s of CUPTI's clock later: what waits is aged out, paired launches stay
            fake.pending.append(_Call(fake.ActivityKind.DRIVER, 10**6, 0, fake.get_timestamp() + 11 * 10**9, 1))
            fake.activity_flush_all(1)
            evs = prof.events()
            k = [e for e in evs if e.kind is EventKind.KERNEL]
            assert len(k) == 1 and k[0].parent_id is not None  # the range is still open: its parent
        prof.enabled = False
        for _ in range(5):
            fake.launch(SAXPY)
        prof.enabled = True
        # a graph launch: one call, two kernels with its correlation id
        fake.corr += 1
        t0 = time.perf_counter_ns()
        tid = threading.get_ident() & 0xFFFFFFFF
        fake.pending += [_Call(fake.ActivityKind.DRIVER, fake.corr, t0 - OFFSET, t0 + 1000 - OFFSET, tid)] + [
            _Kernel(fake.ActivityKind.CONCURRENT_KERNEL, fake.corr, t0 + 2000 * j - OFFSET, t0 + 2000 * j + 1500 - OFFSET,
                    f"graph_node_{j}", 7) for j in (1, 2)]  # fmt: skip
    names = [e.name for e in prof.events() if e.kind is EventKind.KERNEL]
    assert names == ["saxpy", "graph_node_1", "graph_node_2"], names  # not the 5 made while disabled
    prof.close()

    small = GpuProfiler("bounded", launches=LaunchCapture.CUPTI, max_events=3)
    with small:
        for _ in range(10):
            fake.launch(SAXPY)
    kept = [e for e in small.events() if e.kind is EventKind.KERNEL]
    assert len(kept) == 3 and small.summary().dropped_events == 7
    small.close()


def test_records_in_either_order_and_in_separate_buffers(fake: _FakeCupti) -> None:
    """A kernel's record may come before its call's, in another buffer, after a later call that
    launched nothing (a synchronisation 20 s on): still paired; what waits past the blocking
    resolve after next is let go, kernels without their call counted as unmatched."""
    prof = GpuProfiler("order", launches=LaunchCapture.CUPTI, max_events=100)
    with prof:
        fake.launch(SAXPY)
        call, kernel = fake.pending
        fake.pending = []
        late_sync = _Call(fake.ActivityKind.DRIVER, 10**6, call.start + 20 * 10**9, call.start + 20 * 10**9 + 10, 1)
        fake.completed([kernel])  # the kernel's buffer first
        fake.completed([late_sync])  # then a call 20 s later that launched nothing
        fake.completed([call])  # then the call
        fake.launch("_ZN4cupy6reduce3sumE")
        orphan = _Kernel(fake.ActivityKind.CONCURRENT_KERNEL, 10**7, 0, 10, "orphan", 7)
        fake.completed([orphan])  # a kernel whose call never comes
    names = [e.name for e in prof.events() if e.kind is EventKind.KERNEL]
    assert names == ["saxpy", "cupy.reduce.sum"]
    timer_meta = prof.metadata()
    assert timer_meta["unmatched_launches"] == 0  # the orphan waits one more blocking resolve
    prof.close()


def test_the_orphan_is_counted_after_two_blocking_resolves(fake: _FakeCupti) -> None:
    from ringkernel.profiling._cupti import CuptiTimer

    t = CuptiTimer(collect=True)
    try:
        fake.completed([_Kernel(fake.ActivityKind.CONCURRENT_KERNEL, 5, 0, 10, "orphan", 7)])
        fake.completed([_Call(fake.ActivityKind.DRIVER, 6, 0, 10, 1)])  # a call that launched nothing
        t._age()
        assert t.metadata()["unmatched_launches"] == 0 and 6 in t._call_info
        t._age()  # the resolve after next: let go
        assert t.metadata()["unmatched_launches"] == 1 and 6 not in t._call_info and not t._waiting
    finally:
        t.close()


def test_launches_while_disabled_do_not_use_up_max_events(fake: _FakeCupti) -> None:
    prof = GpuProfiler("limit", launches=LaunchCapture.CUPTI, max_events=10)
    with prof:
        prof.enabled = False
        for _ in range(20):
            fake.launch(SAXPY)
        prof.enabled = True
        for _ in range(3):
            fake.launch(SAXPY)
    assert len([e for e in prof.events() if e.kind is EventKind.KERNEL]) == 3
    assert prof.summary().dropped_events == 0
    prof.close()
