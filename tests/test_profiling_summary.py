"""ProfilingSummary on events built by hand (plain arithmetic, checked against NumPy), and the
CUDA-event timer's span rules with the driver replaced by a model of one GPU."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from numba import cuda

from ringkernel import gpu_kernel
from ringkernel.profiling import EventKind, ProfileCategory, ProfileEvent, ProfilingSummary, timing
from ringkernel.profiling.timing import EventTimer

pytestmark = pytest.mark.usefixtures("launch_reports")


def kernel(name: str, start_us: float, dur_us: float, *, stream: str = "s0", host_us: float | None = 5.0,
           nbytes: int | None = None, estimated: bool = False) -> ProfileEvent:  # fmt: skip
    s = round(start_us * 1e3)
    return ProfileEvent(EventKind.KERNEL, name, ProfileCategory.KERNEL, s, s + 1000, stream=stream, stream_id=1,
                        gpu_start_ns=s, gpu_end_ns=s + round(dur_us * 1e3), gpu_start_estimated=estimated,
                        host_ns=None if host_us is None else int(host_us * 1e3), nbytes=nbytes)  # fmt: skip


def test_kernel_statistics_match_numpy(rng: np.random.Generator) -> None:
    durs = rng.integers(5_000, 500_000, size=200) / 1e3  # whole nanoseconds, as the clocks give
    hosts = rng.integers(1_000, 20_000, size=200) / 1e3
    evs, t = [], 0
    for d, h in zip(durs, hosts):
        evs.append(kernel("saxpy", t / 1e3, float(d), host_us=float(h), nbytes=12_000))
        t += round(d * 1e3)  # back to back: no gaps
    evs.append(ProfileEvent(EventKind.KERNEL, "saxpy", ProfileCategory.KERNEL, 0, 1))  # untimed (graph capture)
    s = ProfilingSummary.from_events(evs, session="t", timing_source="test", copy_ceiling_gbps=4000.0)
    k = s.kernel("saxpy")
    assert k.launches == 201 and k.timed == 200
    assert k.total_us == pytest.approx(durs.sum(), rel=1e-6)
    assert k.mean_us == pytest.approx(durs.mean(), rel=1e-6)
    assert k.median_us == pytest.approx(np.median(durs), rel=1e-6)
    assert k.p99_us == pytest.approx(np.percentile(durs, 99), rel=1e-6)
    assert k.host_median_us == pytest.approx(np.median(hosts), rel=1e-6)
    assert k.bytes == 200 * 12_000
    assert k.gbps == pytest.approx(200 * 12_000 / (durs.sum() * 1e3), rel=1e-5)
    assert k.fraction_of_copy == pytest.approx(k.gbps / 4000.0)
    (st,) = s.streams
    assert st.kernels == 200 and st.gaps == 0 and st.idle_us == pytest.approx(0, abs=1e-3)
    assert st.utilisation == pytest.approx(1.0, abs=1e-6)
    assert "saxpy" in s.table() and "4000 GB/s" in str(s)


def test_stream_idle_gaps() -> None:
    evs = [kernel("a", 0, 10), kernel("b", 10, 10), kernel("a", 50, 10), kernel("b", 100, 5),
           kernel("a", 0, 7, stream="s1"), kernel("a", 7, 3, stream="s1")]  # fmt: skip
    s = ProfilingSummary.from_events(evs)
    st = {x.stream: x for x in s.streams}
    assert st["s0"].gaps == 2 and st["s0"].idle_us == pytest.approx(30 + 40)
    assert st["s0"].largest_gap_us == pytest.approx(40) and st["s0"].busy_us == pytest.approx(35)
    assert st["s0"].window_us == pytest.approx(105) and st["s0"].utilisation == pytest.approx(35 / 105)
    assert st["s1"].gaps == 0 and st["s1"].busy_us == pytest.approx(10)
    assert [k.name for k in s.kernels] == ["a", "b"], "sorted by total GPU time"
    d = s.to_dict()
    assert d["streams"][0]["utilisation"] == pytest.approx(35 / 105)


def test_ranges_and_bandwidth_of_annotated_ranges() -> None:
    def rng_ev(name: str, dur_us: float, nbytes: int | None = None) -> ProfileEvent:
        return ProfileEvent(EventKind.RANGE, name, ProfileCategory.MEMORY, 0, int(dur_us * 1e3), nbytes=nbytes)

    s = ProfilingSummary.from_events([rng_ev("copy", 100, 1_000_000), rng_ev("copy", 300, 3_000_000), rng_ev("step", 5)])
    r = {x.name: x for x in s.ranges}
    assert r["copy"].count == 2 and r["copy"].total_us == pytest.approx(400) and r["copy"].mean_us == pytest.approx(200)
    assert r["copy"].gbps == pytest.approx(4_000_000 / 400e3) and r["step"].gbps is None
    assert ProfilingSummary.from_events([]).table().endswith("(nothing recorded)")
    with pytest.raises(KeyError, match="no kernel"):
        s.kernel("missing")


# -- the event timer's rules, against a model GPU -------------------------------------------------
class ModelGpu:
    """Events complete at times the test decides; elapsed time is their difference."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.done_at: dict[int, int] = {}
        self.next_times: list[int] = []
        self.recorded: list[tuple[int, int]] = []
        self.capturing: set[int] = set()
        self.capture_queries: list[int] = []
        self.destroyed: list[int] = []

    def event_create(self) -> int:
        return next(self.ids)

    def event_record(self, ev: int, stream: int) -> None:
        self.recorded.append((ev, stream))
        self.done_at[ev] = self.next_times.pop(0) if self.next_times else 0

    def event_synchronize(self, ev: int) -> None:
        pass

    def event_elapsed_ms(self, a: int, b: int) -> float | None:
        return (self.done_at[b] - self.done_at[a]) / 1e6

    def stream_create(self, priority: int, *, non_blocking: bool = True) -> int:
        return 999

    def stream_is_capturing(self, stream: int) -> bool:
        self.capture_queries.append(stream)
        return stream in self.capturing

    def event_destroy(self, ev: int) -> None:
        self.destroyed.append(ev)

    def stream_destroy(self, stream: int) -> None:
        self.destroyed.append(-stream)


def _c_functions(model: ModelGpu) -> tuple[int, int, int, Any]:
    """The model as the three driver functions the compiled EventStamps calls (C stand-ins)."""
    import ctypes

    rec_t = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
    cap_t = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int))
    ela_t = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_void_p)

    def record(ev: Any, stream: Any) -> int:
        model.event_record(ev or 0, stream or 0)
        return 0

    def capturing(stream: Any, status: Any) -> int:
        status[0] = int(model.stream_is_capturing(stream or 0))
        return 0

    def elapsed(ms: Any, a: Any, b: Any) -> int:
        got = model.event_elapsed_ms(a or 0, b or 0)
        if got is None:
            return 600  # CUDA_ERROR_NOT_READY
        ms[0] = got
        return 0

    fns = (rec_t(record), cap_t(capturing), ela_t(elapsed))
    addr = [ctypes.cast(f, ctypes.c_void_p).value for f in fns]
    return addr[0], addr[1], addr[2], fns  # type: ignore[return-value]


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch, launch_reports: str) -> ModelGpu:
    """A model GPU under the event timer: its Python stamps (driver calls through ctypes) or
    the compiled ones (``launch_reports``: the driver's functions as C stand-ins)."""
    model = ModelGpu()
    for name in ("event_create", "event_synchronize", "event_elapsed_ms", "stream_create", "event_destroy",
                 "stream_destroy", "event_record"):  # fmt: skip
        monkeypatch.setattr(timing.driver, name, getattr(model, name))
    monkeypatch.setattr(timing.driver, "event_recorder", lambda: model.event_record)
    monkeypatch.setattr(timing.driver, "capture_checker", lambda: model.stream_is_capturing)
    monkeypatch.setattr(timing.driver, "event_functions", lambda: _c_functions(model))
    return model


def test_event_timer_spans_from_consecutive_events(gpu: ModelGpu, launch_reports: str) -> None:
    gpu.next_times = [10_000] * 5  # the calibration events
    t = EventTimer()
    assert type(t._stamps).__name__ == ("EventStamps" if launch_reports == "native" else "_PyStamps")
    ref_ns = t._ref_ns
    base = gpu.done_at[t._ref]

    def at(gpu_ns: int) -> int:  # a GPU event time relative to the reference event
        return base + gpu_ns

    # Busy stream: launches reported at host +1..+3 us, the GPU ends them at +100, +250, +300 us.
    gpu.next_times = [at(100_000), at(250_000), at(300_000)]
    for i in (1, 2, 3):
        t.launched(i, ref_ns + 1000 * i, None, 7)
    # Idle stream: reported at host +1000 us, ends at +1020 us.
    gpu.next_times = [at(1_020_000)]
    t.launched(4, ref_ns + 1_000_000, None, 7)
    # Another stream's first launch: its start comes from the host clock.
    gpu.next_times = [at(400_000)]
    t.launched(5, ref_ns + 350_000, None, 8)
    t.resolve(block=True)
    spans = [(t.times[i][0] - ref_ns, t.times[i][1] - ref_ns, t.times[i][2]) for i in range(1, 6)]  # type: ignore[operator]
    assert spans == [
        (1000, 100_000, True),  # first on its stream: the host time it was reported
        (100_000, 250_000, False),  # waited behind the previous kernel: starts at its end
        (250_000, 300_000, False),
        (1_000_000, 1_020_000, True),  # the stream was idle: starts when it arrived
        (350_000, 400_000, True),
    ]
    assert [s for _, s in gpu.recorded[5:]] == [7, 7, 7, 7, 8], "each event on its launch's stream"
    assert t.metadata()["timing_source"].startswith("cuda events")
    t.close()
    assert -999 in gpu.destroyed and len(gpu.destroyed) >= 6


def test_event_timer_skips_captures_and_recycles_events(gpu: ModelGpu) -> None:
    t = EventTimer()
    gpu.capturing.add(7)
    t.launched(1, t._ref_ns + 10, None, 7)
    start, end, _, note = t.times[1]
    assert start is None and end is None and "graph capture" in (note or "")
    gpu.capturing.clear()
    created = next(gpu.ids)
    for i in range(2000):  # resolved as they go: a few hundred events serve them all
        gpu.next_times = [gpu.done_at[t._ref] + 1000 * (i + 1)]
        t.launched(10 + i, t._ref_ns, None, 7)
    t.resolve(block=True)
    assert all(t.times[10 + i][1] is not None for i in range(2000))
    assert next(gpu.ids) - created < 600
    assert t.metadata()["untimed_launches"] == 1
    t.close()


def test_cupti_is_refused_clearly_when_missing(monkeypatch: pytest.MonkeyPatch, gpu: ModelGpu) -> None:
    from ringkernel.errors import ConfigurationError
    from ringkernel.profiling import _cupti

    monkeypatch.setattr(_cupti, "importlib", _NoCupti())  # as without the extra, wherever this runs
    with pytest.raises(ConfigurationError, match="cupti-python"):
        timing.make_timer(timing.GpuTiming.CUPTI, simulated=False)
    assert isinstance(timing.make_timer(timing.GpuTiming.AUTO, simulated=False), EventTimer)
    assert isinstance(timing.make_timer(timing.GpuTiming.EVENTS, simulated=False), EventTimer)


class _NoCupti:
    @staticmethod
    def import_module(name: str) -> Any:
        raise ImportError(f"No module named {name!r}")


def test_event_timer_gives_up_the_launches_of_a_failed_stream(gpu: ModelGpu, monkeypatch: pytest.MonkeyPatch) -> None:
    t = EventTimer()
    base = gpu.done_at[t._ref]
    gpu.next_times = [base + 1000, base + 2000, base + 3000]
    for i in (1, 2):
        t.launched(i, t._ref_ns, None, 7)
    t.launched(3, t._ref_ns, None, 8)

    def sync(ev: int) -> None:
        if ev == gpu.recorded[-2][0]:  # stream 7's newest event: its kernel faulted
            raise RuntimeError("an illegal address was encountered")

    monkeypatch.setattr(timing.driver, "event_synchronize", sync)
    t.resolve(block=True)
    assert [t.times[i][3] for i in (1, 2)] == ["the GPU work before its event failed: an illegal address was "
                                               "encountered"] * 2  # fmt: skip
    assert t.times[3][1] == t._ref_ns + 3000 and t.times[3][3] is None  # the other stream is timed
    assert t.metadata()["untimed_launches"] == 2 and t._stamps.queued == 0
    t.close()


def test_the_compiled_launch_hook_records_the_event_itself(gpu: ModelGpu, launch_reports: str) -> None:
    """A profiler timing with events: its compiled Recorder records each launch's event through
    the timer's EventStamps without the timer's Python, with the same spans."""
    from ringkernel import GpuProfiler
    from ringkernel.kernel.hooks import LaunchEvent, add_launch_hook, remove_launch_hook

    if launch_reports != "native":
        pytest.skip("the compiled module's path")

    from ringkernel import native

    mod = native.loaded()
    x = cuda.to_device(np.zeros(7, np.float32))
    p = GpuProfiler("events")
    with p:
        t = EventTimer()
        p._timer = t
        remove_launch_hook(p._hook)  # type: ignore[arg-type]
        rec = mod.Recorder(p.__dict__, p._on_launch, t, p._ctx, p._ids, LaunchEvent, t._stamps)
        p._recorder = rec
        p._hook = add_launch_hook(rec)
        calls: list[int] = []
        python_launched = t.launched
        t.__class__ = type("Counting", (EventTimer,), {"launched": lambda self, *a: (calls.append(a[0]), python_launched(*a))})
        base = gpu.done_at[t._ref]
        gpu.next_times = [base + 10_000 * k for k in range(1, 40)]
        for _ in range(12):
            inc(x)
        assert rec.fast >= 10 and len(calls) == rec.slow, (rec.fast, rec.slow, calls)
        assert t._stamps.queued == 12
    kernels = [e for e in p.events() if e.kind is EventKind.KERNEL]
    assert len(kernels) == 12 and all(e.gpu_end_ns for e in kernels)
    ends = sorted(e.gpu_end_ns for e in kernels)  # type: ignore[type-var]
    assert [b - a for a, b in zip(ends, ends[1:])] == [10_000] * 11
    np.testing.assert_array_equal(x.copy_to_host(), np.full(7, 12, np.float32))


@gpu_kernel
def inc(x):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < x.size:
        x[i] += 1


def test_the_legacy_default_stream_is_never_asked_whether_it_captures(gpu: ModelGpu) -> None:
    """CUDA cannot capture the legacy default stream: no cuStreamIsCapturing (~1 us) for it."""
    t = EventTimer()
    base = gpu.done_at[t._ref]
    gpu.next_times = [base + 1000 * k for k in range(1, 6)]
    for i in range(3):
        t.launched(i, t._ref_ns, None, 0)
    t.launched(3, t._ref_ns, None, 5)
    assert gpu.capture_queries == [5]
    t.resolve(block=True)
    assert all(t.times[i][1] for i in range(4))
    t.close()


def test_a_poll_due_inside_a_resolve_on_the_same_thread_does_not_wait_for_itself(gpu: ModelGpu,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A collection inside a resolve may run a finalizer that launches on the resolving thread; a
    launch whose record makes a poll due then asks resolve(block=False), which must not wait for
    the lock its own thread holds, and a stream added meanwhile is not lost (found by the second
    review of the compiled hook)."""
    t = EventTimer()
    base = gpu.done_at[t._ref]
    gpu.next_times = [base + 1000 * k for k in range(1, 20)]
    t.launched(1, t._ref_ns, None, 4)
    inner: list[int] = []
    model_elapsed = gpu.event_elapsed_ms

    def elapsed(a: int, b: int) -> float | None:
        if not inner:  # the first span read: a launch from inside the poll, on a new stream, a poll due
            inner.append(1)
            t._stamps.next_resolve = 0
            t.launched(2, t._ref_ns, None, 9)
        return model_elapsed(a, b)

    monkeypatch.setattr(gpu, "event_elapsed_ms", elapsed)  # (the C stand-in calls the model's method)
    monkeypatch.setattr(timing.driver, "event_elapsed_ms", elapsed)  # (the Python stamps call the driver's)
    import threading

    done = threading.Thread(target=t.resolve, args=(True,), daemon=True)  # (a regression hangs: fail instead)
    done.start()
    done.join(timeout=30)
    assert not done.is_alive(), "resolve waited for its own thread's lock"
    assert inner and t.times[1][1] is not None
    t.resolve(block=True)
    assert t.times[2][1] is not None and t._stamps.queued == 0
    t.close()
