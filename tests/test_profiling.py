"""GpuProfiler on the simulator: ranges across threads and tasks, NVTX calls, automatic capture,
the Chrome trace checked against the trace-event format's rules, errors, the disabled cost."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from numba import cuda

from ringkernel import GpuMemoryPool, GpuProfiler, ProfileCategory, ResourceClosedError, gpu_kernel, launch_hooks
from ringkernel.errors import ConfigurationError, ProfilerError
from ringkernel.profiling import EventKind, GpuTiming, TransferDirection, markers, reset

pytestmark = pytest.mark.usefixtures("launch_reports")


@gpu_kernel
def scale(a, out):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < out.size:
        out[i] = 3 * a[i]


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    reset()
    yield
    reset()


# -- the trace-event format's rules (also used by tests/gpu/test_profiling_gpu.py) ----------------
REQUIRED = {"X": {"name", "ts", "dur", "pid", "tid"}, "B": {"name", "ts", "pid", "tid"}, "E": {"ts", "pid", "tid"},
            "i": {"name", "ts", "pid", "tid", "s"}, "C": {"name", "ts", "pid", "args"},
            "s": {"name", "cat", "id", "ts", "pid", "tid"}, "f": {"name", "cat", "id", "ts", "pid", "tid"},
            "M": {"name", "pid", "args"}}  # fmt: skip


def validate_trace(text: str) -> dict[str, Any]:
    """Check a trace against the JSON trace-event format; returns it parsed."""
    trace = json.loads(text)
    events = trace["traceEvents"]
    assert isinstance(events, list) and events
    meta = trace["metadata"]
    assert {"timing_source", "versions", "session"} <= set(meta), meta
    last_ts: dict[tuple[int, int], float] = {}
    slices: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    open_b: dict[tuple[int, int], list[str]] = defaultdict(list)
    flows: dict[Any, dict[str, dict[str, Any]]] = defaultdict(dict)
    named_procs, named_threads, used = set(), set(), set()
    for ev in events:
        ph = ev["ph"]
        assert ph in REQUIRED, f"unknown phase {ph!r}: {ev}"
        missing = REQUIRED[ph] - set(ev)
        assert not missing, f"{ph} event without {missing}: {ev}"
        if ph == "M":
            assert ev["name"] in {"process_name", "thread_name", "process_sort_index", "thread_sort_index"}
            if ev["name"] == "process_name":
                named_procs.add(ev["pid"])
            if ev["name"] == "thread_name":
                named_threads.add((ev["pid"], ev["tid"]))
            continue
        track = (ev["pid"], ev.get("tid", 0))
        assert isinstance(ev["ts"], (int, float)) and ev["ts"] >= 0
        assert ev["ts"] >= last_ts.get(track, 0.0), f"timestamps go back on track {track}: {ev}"
        last_ts[track] = ev["ts"]
        if ph == "X":
            assert ev["dur"] >= 0
            slices[track].append((ev["ts"], ev["ts"] + ev["dur"]))
            used.add(track)
        elif ph == "B":
            open_b[track].append(ev["name"])
        elif ph == "E":
            assert open_b[track], f"E without B on {track}"
            open_b[track].pop()
        elif ph == "i":
            assert ev["s"] in ("g", "p", "t")
        elif ph == "C":
            assert ev["args"] and all(isinstance(v, (int, float)) for v in ev["args"].values())
        elif ph in ("s", "f"):
            assert ph not in flows[(ev["cat"], ev["id"])], f"flow id {ev['id']} has two {ph} events"
            flows[(ev["cat"], ev["id"])][ph] = ev
    assert not any(open_b.values()), f"B events never ended: {dict(open_b)}"
    for fid, ends in flows.items():
        assert set(ends) == {"s", "f"}, f"flow {fid} is bound on one end only: {ends}"
        for ev in ends.values():  # both ends inside a slice of their track
            track = (ev["pid"], ev["tid"])
            assert any(a <= ev["ts"] <= b for a, b in slices[track]), f"flow end outside any slice: {ev}"
    for track, spans in slices.items():  # X events on one track nest: no partial overlap
        stack: list[float] = []
        for a, b in sorted(spans, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1] <= a + 1e-6:
                stack.pop()
            assert not stack or b <= stack[-1] + 1e-3, f"slices overlap without nesting on {track}: {a}-{b}"
            stack.append(b)
    assert {pid for pid, _ in used} <= named_procs, "every process is named"
    assert used <= named_threads, "every track with slices is named"
    return trace  # type: ignore[no-any-return]


# -- ranges ---------------------------------------------------------------------------------------
def test_ranges_nest_and_export(tmp_path: Path) -> None:
    p = GpuProfiler("unit")
    with p.range("outer", ProfileCategory.ALGORITHM) as outer:
        inner = p.begin_range("inner", ProfileCategory.IO)
        p.mark("halfway", ProfileCategory.SYNC)
        p.end_range(inner)
        with p.annotate_transfer(TransferDirection.HOST_TO_DEVICE, 4096):
            pass
    evs = {e.name: e for e in p.events()}
    assert evs["inner"].parent_id == outer.id and evs["halfway"].parent_id == evs["inner"].id
    assert evs["transfer HtoD"].nbytes == 4096 and evs["transfer HtoD"].args["direction"] == "HtoD"
    assert evs["outer"].start_ns <= evs["inner"].start_ns <= evs["inner"].end_ns <= evs["outer"].end_ns
    assert inner.ended and outer.ended
    path = tmp_path / "sub" / "trace.json"
    text = p.export_chrome_tracing(path)
    assert path.read_text() == text
    trace = validate_trace(text)
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {e["name"] for e in xs} == {"outer", "inner", "transfer HtoD"}
    assert {e["cat"] for e in xs} == {"algorithm", "io", "memory"}


def test_ranges_nest_per_thread_each_thread_its_track() -> None:
    p = GpuProfiler("threads")
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            with p.range(f"t{k}"):
                barrier.wait()  # all four open at once: each must nest in its own thread only
                for j in range(3):
                    with p.range(f"t{k}.{j}"):
                        p.mark(f"m{k}.{j}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,), name=f"worker-{k}") for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    evs = p.events()
    by_name = {e.name: e for e in evs}
    for k in range(4):
        outer = by_name[f"t{k}"]
        assert outer.track == f"worker-{k}"
        for j in range(3):
            assert by_name[f"t{k}.{j}"].parent_id == outer.id
            assert by_name[f"t{k}.{j}"].track_id == outer.track_id
    assert len({by_name[f"t{k}"].track_id for k in range(4)}) == 4
    validate_trace(p.export_chrome_tracing())


def test_ranges_nest_per_asyncio_task() -> None:
    p = GpuProfiler("tasks")

    async def task(k: int) -> None:
        with p.range(f"task{k}"):
            for j in range(3):
                with p.range(f"task{k}.{j}"):
                    await asyncio.sleep(0)  # the other task runs here, opening its own ranges

    async def main() -> None:
        with p.range("main"):
            await asyncio.gather(task(0), task(1))

    asyncio.run(main())
    by_name = {e.name: e for e in p.events()}
    for k in range(2):
        assert by_name[f"task{k}"].parent_id == by_name["main"].id  # a task inherits the range it was made in
        assert all(by_name[f"task{k}.{j}"].parent_id == by_name[f"task{k}"].id for j in range(3))
    assert len({by_name["main"].track_id, by_name["task0"].track_id, by_name["task1"].track_id}) == 3
    validate_trace(p.export_chrome_tracing())


def test_profiled_decorator_sync_and_async() -> None:
    p = GpuProfiler("decorated")

    @p.profiled
    def add(a: int, b: int) -> int:
        return a + b

    @p.profiled(name="load", category=ProfileCategory.IO)
    async def load(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    @p.profiled
    def fails() -> None:
        raise KeyError("boom")

    assert add(2, 3) == 5 and add.__name__ == "add"
    assert asyncio.run(load(4)) == 8
    with pytest.raises(KeyError):
        fails()
    names = [(e.name, e.category) for e in p.events()]
    qual = "test_profiled_decorator_sync_and_async.<locals>."
    assert names == [(qual + "add", ProfileCategory.ALGORITHM), ("load", ProfileCategory.IO),
                     (qual + "fails", ProfileCategory.ALGORITHM)]  # fmt: skip
    p.begin_range("still fine").end()  # the failing call ended its range


# -- NVTX -----------------------------------------------------------------------------------------
class FakeDomain:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.next_id = 100

    def get_category_id(self, name: str) -> int:
        self.calls.append(("category", name))
        return len([c for c in self.calls if c[0] == "category"])

    def get_event_attributes(self, message: str, color: int, category: int, payload: Any = None) -> Any:
        return {"message": message, "color": color, "category": category, "payload": payload}

    def start_range(self, attributes: Any) -> int:
        self.next_id += 1
        self.calls.append(("start", attributes["message"], attributes["color"], attributes["category"],
                           attributes["payload"], self.next_id))  # fmt: skip
        return self.next_id

    def end_range(self, range_id: int) -> None:
        self.calls.append(("end", range_id))

    def mark(self, attributes: Any) -> None:
        self.calls.append(("mark", attributes["message"], attributes["category"]))


def test_nvtx_calls_go_to_the_ringkernel_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    assert markers.domain() is not None and markers.DOMAIN_NAME == "ringkernel"
    fake = FakeDomain()
    monkeypatch.setattr(markers, "_domain", fake)
    custom = ProfileCategory.custom("io-prefetch", color=0x123456)
    p = GpuProfiler("nvtx")
    with p.range("step", ProfileCategory.KERNEL):
        with p.annotate_memory("staging", 1024):
            p.mark("tick", custom)
    with p.range("step", ProfileCategory.KERNEL):
        pass
    cats = [c[1] for c in fake.calls if c[0] == "category"]
    assert cats == ["kernel", "memory", "io-prefetch"], "one NVTX category per profile category, named alike"
    starts = [c for c in fake.calls if c[0] == "start"]
    assert [s[1] for s in starts] == ["step", "staging", "step"]
    assert starts[0][2] == 0xFF000000 | ProfileCategory.KERNEL.color and starts[0][3] == 1
    assert starts[1][4] == 1024, "annotate_memory passes its bytes as the NVTX payload"
    ends = [c[1] for c in fake.calls if c[0] == "end"]
    assert ends == [starts[1][5], starts[0][5], starts[2][5]], "each range ends its own NVTX range"
    assert ("mark", "tick", 3) in fake.calls


def test_disabled_profiler_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDomain()
    monkeypatch.setattr(markers, "_domain", fake)
    p = GpuProfiler("off", enabled=False)
    with p:
        assert not p.active and launch_hooks() == []
        h = p.begin_range("x")
        p.mark("m")
        p.end_range(h)
        p.end_range(h)  # a disabled handle: ending is a no-op, twice too
    assert fake.calls == [] and p.events() == []


# -- errors ---------------------------------------------------------------------------------------
def test_range_misuse_is_a_clear_error() -> None:
    p = GpuProfiler("errors")
    h = p.begin_range("a")
    p.end_range(h)
    with pytest.raises(ProfilerError, match="'a' .*already ended") as exc:
        p.end_range(h)
    assert exc.value.range_name == "a" and exc.value.range_id == h.id
    outer, inner = p.begin_range("outer"), p.begin_range("inner")
    with pytest.raises(ProfilerError, match="still open: 'inner'"):
        p.end_range(outer)
    p.end_range(inner)
    p.end_range(outer)
    with pytest.raises(ProfilerError, match="another profiler"):
        p.end_range(GpuProfiler("other").begin_range("x"))
    with pytest.raises(ProfilerError, match="RangeHandle"):
        p.end_range(42)  # type: ignore[arg-type]
    elsewhere: list[Any] = []
    t = threading.Thread(target=lambda: elsewhere.append(p.begin_range("in a thread")))
    t.start()
    t.join()
    with pytest.raises(ProfilerError, match="another thread or asyncio task"):
        p.end_range(elsewhere[0])


@pytest.mark.parametrize("call", [
    lambda p: p.annotate_memory("alloc", -1),
    lambda p: p.annotate_memory("alloc", True),
    lambda p: p.annotate_memory("alloc", 1.5),
    lambda p: p.annotate_transfer("sideways", 10),
    lambda p: p.annotate_transfer(TransferDirection.DEVICE_TO_HOST, -5),
    lambda p: p.annotate_kernel("k", bytes_per_element=-4),
    lambda p: p.begin_range("", ProfileCategory.IO),
    lambda p: p.begin_range("x", "io"),
    lambda p: p.mark("x", 3),
    lambda p: p.track_pool(object()),
], ids=["negative", "bool", "float", "direction", "negative-transfer", "kernel-bytes", "empty-name",
        "string-category", "mark-category", "pool"])  # fmt: skip
def test_bad_input_is_refused(call: Any) -> None:
    p = GpuProfiler("bad")
    with pytest.raises(ConfigurationError):
        call(p)
    assert p.events() == []


def test_bad_options() -> None:
    with pytest.raises(ConfigurationError, match="GpuTiming"):
        GpuProfiler("x", gpu_timing="events")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_events"):
        GpuProfiler("x", max_events=0)
    with pytest.raises(ConfigurationError, match="session_name"):
        GpuProfiler("")


def test_use_after_close_is_refused() -> None:
    p = GpuProfiler("closing")
    h = p.begin_range("open")
    p.close()
    p.close()  # idempotent
    assert p.closed
    for call in (lambda: p.begin_range("x"), lambda: p.end_range(h), lambda: p.mark("x"), p.events, p.summary,
                 p.export_chrome_tracing, lambda: p.annotate_memory("a", 1), lambda: p.annotate_kernel("k"),
                 lambda: p.track_pool(GpuMemoryPool()), lambda: p.name_stream(None, "s"), p.__enter__):  # fmt: skip
        with pytest.raises(ResourceClosedError, match="GpuProfiler is closed"):
            call()


def test_categories() -> None:
    c = ProfileCategory.custom("io-prefetch", color=0x8E44AD)
    assert ProfileCategory.custom("io-prefetch", color=0x8E44AD) is c
    assert c.argb == 0xFF8E44AD and c.hex == "#8e44ad"
    with pytest.raises(ConfigurationError, match="already exists"):
        ProfileCategory.custom("io-prefetch", color=0x000001)
    with pytest.raises(ConfigurationError, match="built-in"):
        ProfileCategory.custom("kernel")
    for bad in (-1, 0x1000000, "red", True):
        with pytest.raises(ConfigurationError, match="colour"):
            ProfileCategory.custom("x", color=bad)  # type: ignore[arg-type]
    colors = [c.color for c in (ProfileCategory.KERNEL, ProfileCategory.MEMORY, ProfileCategory.ALGORITHM,
                                ProfileCategory.IO, ProfileCategory.SYNC)]  # fmt: skip
    assert len(set(colors)) == 5
    assert TransferDirection.parse("dtoh") is TransferDirection.DEVICE_TO_HOST


# -- automatic capture ----------------------------------------------------------------------------
def test_no_hook_unless_entered_and_none_after(rng: np.random.Generator) -> None:
    p = GpuProfiler("hooks")
    a = cuda.to_device(rng.random(100))
    out = cuda.device_array(100)
    assert launch_hooks() == []
    scale(a, out)  # not entered: not seen
    with p:
        assert len(launch_hooks()) == 1 and p.active
        with p:  # re-entering keeps the one hook
            assert len(launch_hooks()) == 1
        assert p.active
    assert launch_hooks() == [] and not p.active
    scale(a, out)
    assert [e for e in p.events() if e.kind is EventKind.KERNEL] == []


def test_launches_are_captured_with_streams_flows_and_ranges(rng: np.random.Generator) -> None:
    p = GpuProfiler("capture")
    x = rng.random(500).astype(np.float32)
    a, out = cuda.to_device(x), cuda.device_array(500, np.float32)
    s1, s2 = cuda.stream(), cuda.stream()
    p.name_stream(s1, "compute A")
    pool = GpuMemoryPool()
    p.track_pool(pool, "scratch")
    with p:
        with p.range("step") as step:
            scale(a, out, stream=s1)
            buf = pool.device_array(256, np.float32)
            scale(a, out, stream=s2)
        p.annotate_kernel("scale", bytes_per_element=8).end()
        for _ in range(3):
            scale(a, out)
        scale[2, 256](a, out)
        del buf
    np.testing.assert_allclose(out.copy_to_host(), 3 * x, rtol=1e-6)
    kernels = [e for e in p.events() if e.kind is EventKind.KERNEL]
    assert [e.stream for e in kernels] == ["compute A", "stream 2", *["default stream"] * 4]
    assert kernels[0].parent_id == step.id and kernels[1].parent_id == step.id and kernels[2].parent_id is None
    assert [e.args["launch"] for e in kernels] == ["auto"] * 5 + ["explicit"]
    assert kernels[0].args["elements"] == 500 and kernels[-1].args["grid"] == [2, 1, 1]
    assert [e.nbytes for e in kernels] == [4000] * 6, "an annotation covers the kernel's launches, earlier ones too"
    for e in kernels:
        assert e.gpu_start_ns is not None and e.gpu_end_ns is not None and e.gpu_start_ns <= e.gpu_end_ns <= e.start_ns
        assert e.host_ns is not None and e.host_ns >= 0
    assert p.timing_source == "host (simulator)"
    trace = validate_trace(p.export_chrome_tracing())
    assert trace["metadata"]["timing_source"] == "host (simulator)"
    assert trace["metadata"]["device"]["simulated"] is True and "numba-cuda" in trace["metadata"]["versions"]
    ev = trace["traceEvents"]
    gpu = [e for e in ev if e["ph"] == "X" and e["pid"] >= 100]
    assert len(gpu) == 6 and len({e["tid"] for e in gpu}) == 3 and {e["pid"] for e in gpu} == {100}
    streams = {e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name" and e["pid"] == 100}
    assert streams == {"compute A", "stream 2", "default stream"}
    assert sum(1 for e in ev if e["ph"] == "s") == 6 == sum(1 for e in ev if e["ph"] == "f")
    counters = [e for e in ev if e["ph"] == "C"]
    assert counters and all(e["name"] == "scratch bytes" for e in counters)
    assert max(e["args"]["in use"] for e in counters) >= 1024  # the 256-float block, seen at the range end
    s = p.summary()
    k = s.kernel("scale")
    assert k.launches == 6 and k.timed == 6 and k.bytes == 6 * 4000 and k.gbps is not None
    assert k.fraction_of_copy is None, "no copy ceiling on the simulator"
    assert {st.stream for st in s.streams} == {"compute A", "stream 2", "default stream"}
    assert "scale" in str(s) and "compute A" in s.table()


def test_launches_from_threads_land_on_their_tracks(rng: np.random.Generator) -> None:
    p = GpuProfiler("threads")
    a = cuda.to_device(rng.random(64))
    outs = [cuda.device_array(64) for _ in range(2)]
    one_at_a_time = threading.Lock()  # the simulator swaps numba.cuda's globals while a kernel runs

    def work(i: int) -> None:
        with p.range("worker"), one_at_a_time:
            scale(a, outs[i])

    with p:
        ts = [threading.Thread(target=work, args=(i,), name=f"launcher-{i}") for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    evs = p.events()
    ranges = {e.track: e for e in evs if e.kind is EventKind.RANGE}
    kernels = [e for e in evs if e.kind is EventKind.KERNEL]
    assert set(ranges) == {"launcher-0", "launcher-1"} and len(kernels) == 2
    for k in kernels:
        assert k.parent_id == ranges[k.track].id and k.track_id == ranges[k.track].track_id
    validate_trace(p.export_chrome_tracing())


def test_max_events_drops_and_counts() -> None:
    p = GpuProfiler("small", max_events=3)
    for i in range(5):
        p.mark(f"m{i}")
    assert len(p.events()) == 3 and p.summary().dropped_events == 2


def test_gpu_timing_choice_is_validated() -> None:
    from ringkernel.profiling.timing import HostTimer, make_timer

    assert isinstance(make_timer(GpuTiming.CUPTI, simulated=True), HostTimer)
    with pytest.raises(ConfigurationError):
        make_timer("cupti", simulated=True)  # type: ignore[arg-type]


def test_an_error_in_the_block_still_removes_the_hook(rng: np.random.Generator) -> None:
    p = GpuProfiler("failing")
    a, out = cuda.to_device(rng.random(32)), cuda.device_array(32)
    with pytest.raises(KeyError):
        with p:
            scale(a, out)
            raise KeyError("the block failed")
    assert launch_hooks() == [] and not p.active
    assert [e.name for e in p.events() if e.kind is EventKind.KERNEL] == ["scale"]


def test_disabling_while_active_stops_capture(rng: np.random.Generator) -> None:
    p = GpuProfiler("toggle")
    a, out = cuda.to_device(rng.random(32)), cuda.device_array(32)
    with p:
        scale(a, out)
        p.enabled = False
        scale(a, out)
        assert p.begin_range("ignored").id == 0
        p.enabled = True
        scale(a, out)
    assert len([e for e in p.events() if e.kind is EventKind.KERNEL]) == 2


def test_what_a_newcomer_tried() -> None:
    """Enabling a profiler made disabled, inside its `with`, captures from then on; methods used
    after close() name themselves; a copy ceiling must be positive."""
    p = GpuProfiler("late", enabled=False)
    a = cuda.to_device(np.arange(8, dtype=np.float32))
    out = cuda.device_array(8, np.float32)
    with p:
        scale(a, out)  # disabled: not captured
        p.enabled = True
        assert p.active
        scale(a, out)
    assert [e.name for e in p.events() if e.kind is EventKind.KERNEL] == ["scale"]
    with pytest.raises(ConfigurationError, match="positive"):
        p.summary(copy_ceiling_gbps=-3)
    p.close()
    for name, call in (("summary", p.summary), ("chrome_trace", p.chrome_trace),
                       ("export_chrome_tracing", p.export_chrome_tracing)):  # fmt: skip
        with pytest.raises(ResourceClosedError, match=name):
            call()


def test_a_profiled_function_runs_after_close_and_folders_are_refused_as_trace_paths(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """From a newcomer's trial: a module-level profiler closed at the end must not break the
    functions it decorated; a folder given as the trace path is refused before anything runs."""
    import asyncio

    from ringkernel import ConfigurationError, GpuProfiler

    p = GpuProfiler("closed")

    @p.profiled
    def work(x: int) -> int:
        return x + 1

    @p.profiled
    async def awork(x: int) -> int:
        return x * 2

    assert work(1) == 2 and asyncio.run(awork(2)) == 4
    with pytest.raises(ConfigurationError, match="folder"):
        p.export_chrome_tracing(tmp_path)
    p.close()
    assert work(2) == 3 and asyncio.run(awork(3)) == 6  # unprofiled now
    from ringkernel import ResourceClosedError

    with pytest.raises(ResourceClosedError):
        p.events()
    from ringkernel.cli import main

    script = tmp_path / "s.py"
    script.write_text("raise SystemExit('must not run')\n")
    assert main(["profile", str(script), "--trace", str(tmp_path)]) == 2  # an error of its own (docs/index.md)
    err = capsys.readouterr()
    assert "is a folder" in err.err + err.out and "must not run" not in err.err + err.out


def test_enabled_must_be_a_bool_and_generators_are_refused() -> None:
    from ringkernel import ConfigurationError, GpuProfiler

    with pytest.raises(ConfigurationError, match="enabled"):
        GpuProfiler("x", enabled="no")  # type: ignore[arg-type]
    p = GpuProfiler("x", enabled=np.bool_(False))
    with pytest.raises(ConfigurationError, match="enabled"):
        p.enabled = None  # type: ignore[assignment]
    with pytest.raises(ConfigurationError, match="generator"):

        @p.profiled
        def gen():  # type: ignore[no-untyped-def]
            yield 1

    p.close()


# -- an adversarial trial's findings (each was a wrong trace or a masked error) ---------------------
def test_a_thread_or_task_reusing_an_id_gets_its_own_track() -> None:
    """Python reuses a finished thread's id and a collected task's id(): the new one inherited the
    old one's track, name and last time (its first launch showed the idle time between them as
    host cost)."""
    import time

    a, out = cuda.to_device(np.ones(64)), cuda.device_array(64)
    scale(a, out)  # compiled before: a launch's host time is then the call's, not a compile's
    p = GpuProfiler("reuse")

    def work(k: int) -> None:
        with p.range(f"work {k}"):
            scale(a, out)

    with p:
        for k in range(3):  # one after another: the ids are reused
            t = threading.Thread(target=work, args=(k,), name=f"worker-{k}")
            t.start()
            t.join()
            time.sleep(0.05)
    evs = p.events()
    ranges = {e.name: e for e in evs if e.kind is EventKind.RANGE}
    assert [ranges[f"work {k}"].track for k in range(3)] == [f"worker-{k}" for k in range(3)]
    assert len({ranges[f"work {k}"].track_id for k in range(3)}) == 3
    kernels = [e for e in evs if e.kind is EventKind.KERNEL]
    assert all(k.host_ns is None or k.host_ns < 40_000_000 for k in kernels), [k.host_ns for k in kernels]
    validate_trace(p.export_chrome_tracing())

    q = GpuProfiler("tasks")

    async def job() -> None:
        with q.range(f"range of {asyncio.current_task().get_name()}"):  # type: ignore[union-attr]
            await asyncio.sleep(0)

    async def main() -> None:
        for k in range(5):
            await asyncio.create_task(job(), name=f"job-{k}")

    asyncio.run(main())
    tracks = {e.name: e.track for e in q.events()}
    assert tracks == {f"range of job-{k}": f"MainThread / job-{k}" for k in range(5)}


def test_a_child_task_neither_ends_nor_inherits_an_ended_range() -> None:
    """Tasks copied their creator's stack of open ranges: a child could end its parent's range
    (the parent's own end then failed), and a child's launch after the parent had ended that range
    was still placed inside it."""
    p = GpuProfiler("children")

    async def child(h: Any) -> None:
        with pytest.raises(ProfilerError, match="another thread or asyncio task"):
            h.end()

    async def main() -> None:
        h = p.begin_range("parent range")
        await asyncio.create_task(child(h))
        h.end()  # still the parent's to end
        with p.range("later"):
            pass

    asyncio.run(main())
    by = {e.name: e for e in p.events()}
    assert by["later"].parent_id is None and by["parent range"].end_ns > by["parent range"].start_ns

    a, out = cuda.to_device(np.ones(32)), cuda.device_array(32)
    p2 = GpuProfiler("late child")

    async def child2(go: asyncio.Event) -> None:
        await go.wait()
        scale(a, out)  # after "phase 1" ended

    async def main2() -> None:
        go = asyncio.Event()
        with p2.range("phase 1"):
            t = asyncio.create_task(child2(go))
        with p2.range("phase 2"):
            go.set()
            await t

    with p2:
        asyncio.run(main2())
    by = {e.name: e for e in p2.events()}
    assert by["scale"].parent_id != by["phase 1"].id


def test_range_args_are_checked_and_the_programs_exception_wins() -> None:
    p = GpuProfiler("args")
    for bad in ({"x": float("nan")}, {"x": float("inf")}, {"x": object()}, {1: 2}, [("x", 1)]):
        with pytest.raises(ConfigurationError):
            p.begin_range("r", args=bad)  # type: ignore[arg-type]
    p.begin_range("numpy", args={"n": np.int64(3), "f": np.float32(0.5), "s": "x", "none": None}).end()
    text = p.export_chrome_tracing()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the trace"))  # strict JSON
    assert {"n": 3, "f": 0.5, "s": "x", "none": None}.items() <= next(e for e in p.events() if e.name == "numpy").args.items()

    # an exception leaving `with range` while an inner range is open: the program's error
    # propagates (it was replaced by a ProfilerError about the inner range), both ranges end
    with pytest.raises(ValueError, match="the program's error"):
        with p.range("outer"):
            p.begin_range("inner")
            raise ValueError("the program's error")
    by = {e.name: e for e in p.events()}
    assert by["inner"].args.get("unwound") is True and by["inner"].parent_id == by["outer"].id
    with p.range("after"):
        pass
    assert {e.name: e for e in p.events()}["after"].parent_id is None

    # a decorated main() that closes its profiler at its end returns normally
    q = GpuProfiler("closing")

    @q.profiled
    def main() -> int:
        q.close()
        return 42

    assert main() == 42


_EXIT_WITH_A_BUSY_DAEMON = r'''
import os, threading, time
os.environ["RINGKERNEL_SIMULATOR"] = "1"
from ringkernel import GpuProfiler, gpu_kernel
import numpy as np
from numba import cuda

@gpu_kernel
def scale(a, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = 3 * a[i]

prof = GpuProfiler("x")
a = cuda.to_device(np.ones(1, np.float32)); o = cuda.device_array(1, np.float32)
with prof:
    for _ in range(1500):
        scale[1, 1](a, o)

def worker():
    prof.begin_range("w").end()
    while True:
        prof.events()  # holds the profiler's lock most of the time

threading.Thread(target=worker, daemon=True).start()
time.sleep(0.5)
print("main exiting", flush=True)
'''


def test_the_process_exits_while_a_daemon_thread_holds_the_profiler() -> None:
    """A review: at exit, the daemon's thread-local sentinel retired its track from the main
    thread, waiting for the lock the stopped daemon held: the process hung (4 of 4 runs)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _EXIT_WITH_A_BUSY_DAEMON], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "main exiting" in r.stdout, r.stderr[-2000:]
