"""Copies and synchronisations in the profile (simulator): numba's and ringkernel's arrays, every
direction, on streams, in the trace with flow arrows and in the summary; the wrappers exist
only while a profiler is active; a failing profiler never breaks a copy."""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import pytest
from numba import cuda

from ringkernel import GpuMemoryPool, GpuProfiler, ProfileCategory
from ringkernel.profiling import EventKind, capture, reset

from test_profiling import scale, validate_trace

pytestmark = pytest.mark.usefixtures("launch_reports")


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    reset()
    yield
    reset()
    assert capture.ACTIVE == [] and capture.installed() == []


def _copies(p: GpuProfiler) -> list[tuple[str, int, str | None]]:
    return [(e.name, e.nbytes or 0, e.stream) for e in p.events() if e.kind is EventKind.TRANSFER]


def test_numba_copies_in_every_direction_are_recorded(rng: np.random.Generator) -> None:
    n = int(rng.integers(100, 3000))
    a = rng.standard_normal(n).astype(np.float32)
    p = GpuProfiler("copies")
    with p:
        s = cuda.stream()
        p.name_stream(s, "transfer")
        da = cuda.to_device(a, stream=s)  # HtoD on s
        db = cuda.device_array_like(da)
        db.copy_to_device(da)  # DtoD, synchronous
        out = cuda.device_array_like(da)
        scale(db, out)
        host = out.copy_to_host(stream=s)  # DtoH on s
        s.synchronize()
    np.testing.assert_allclose(host, 3 * a, rtol=1e-6)
    assert _copies(p) == [("memcpy HtoD", 4 * n, "transfer"), ("memcpy DtoD", 4 * n, "default stream"),
                          ("memcpy DtoH", 4 * n, "transfer")]  # fmt: skip
    for e in p.events():
        if e.kind is EventKind.TRANSFER:
            assert e.category is ProfileCategory.MEMORY and e.gpu_start_ns is not None and e.gpu_end_ns is not None
            assert e.gpu_end_ns >= e.gpu_start_ns and e.args["bytes"] == 4 * n
    syncs = [e for e in p.events() if e.kind is EventKind.RANGE and e.category is ProfileCategory.SYNC]
    assert [(e.name, e.args.get("stream")) for e in syncs] == [("stream synchronize", "transfer")]


def test_copies_and_syncs_in_the_trace_and_summary(rng: np.random.Generator) -> None:
    p = GpuProfiler("trace")
    a = rng.standard_normal(777)
    with p:
        with p.range("step"):
            d = cuda.to_device(a)
            out = cuda.device_array_like(d)
            scale(d, out)
            out.copy_to_host()
            cuda.synchronize()
    trace = validate_trace(p.export_chrome_tracing())
    evs = trace["traceEvents"]
    gpu_copies = [e for e in evs if e.get("cat") == "memcpy"]
    host_copies = [e for e in evs if e.get("ph") == "X" and e["name"].startswith("memcpy") and e.get("cat") == "launch"]
    assert sorted(e["name"] for e in gpu_copies) == ["memcpy DtoH", "memcpy HtoD"]
    assert len(host_copies) == 2 and all(e["args"]["bytes"] == a.nbytes for e in gpu_copies)
    flows = {e["id"] for e in evs if e.get("ph") == "s"}
    assert {e["args"]["launch_id"] for e in gpu_copies} <= flows  # each copy joined to its call
    assert any(e.get("cat") == ProfileCategory.SYNC.name and e["name"] == "device synchronize" for e in evs)
    s = p.summary()
    assert [(t.name, t.count, t.bytes) for t in s.transfers] == [("memcpy DtoH", 1, a.nbytes), ("memcpy HtoD", 1, a.nbytes)]
    assert "memcpy HtoD" in s.table() and "device synchronize" in s.table()
    assert s.to_dict()["transfers"][0]["name"] == "memcpy DtoH"


def test_device_array_copies_of_a_pool(rng: np.random.Generator) -> None:
    pool = GpuMemoryPool()
    h = rng.standard_normal((13, 7))
    p = GpuProfiler("pool")
    with p:
        x = pool.device_array(h.shape, h.dtype)
        x.copy_to_device(h)
        y = x.copy()  # a device copy
        back = y.copy_to_host()
    np.testing.assert_array_equal(back, h)
    names = [n for n, _, _ in _copies(p)]
    assert names[0] == "memcpy HtoD" and names[-1] == "memcpy DtoH" and "memcpy DtoD" in names
    pool.close()


def test_wrappers_exist_only_while_a_profiler_is_active() -> None:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    original = FakeCUDAArray.copy_to_host
    outer, inner = GpuProfiler("outer"), GpuProfiler("inner")
    with outer:
        assert FakeCUDAArray.copy_to_host is not original and "FakeCUDAArray.copy_to_host" in capture.installed()
        with inner:  # both see the copy
            cuda.to_device(np.ones(5)).copy_to_host()
        assert capture.ACTIVE == [outer]
        cuda.to_device(np.ones(3)).copy_to_host()
    assert FakeCUDAArray.copy_to_host is original and capture.installed() == []
    assert len(_copies(inner)) == 2 and len(_copies(outer)) == 4
    cuda.to_device(np.ones(2)).copy_to_host()  # nobody listening: nothing recorded anywhere
    assert len(_copies(outer)) == 4


def test_a_failing_profiler_never_breaks_the_copy(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(capture, "_failed", set())  # (logged once per process: the other parameter's run logged it)
    p = GpuProfiler("broken")

    def boom(*a: object) -> None:
        raise RuntimeError("profiler bug")

    with p:
        monkeypatch.setattr(p, "_copy_end", boom)
        with caplog.at_level(logging.ERROR, logger="ringkernel.profiling.capture"):
            got = cuda.to_device(np.arange(6.0)).copy_to_host()
            cuda.to_device(np.arange(2.0)).copy_to_host()
    np.testing.assert_array_equal(got, np.arange(6.0))
    assert sum("profiler bug" in r.getMessage() or "failed" in r.getMessage() for r in caplog.records) == 1  # once


def test_disabled_filtered_and_full_profilers_record_no_copies() -> None:
    off = GpuProfiler("off", enabled=False)
    never = GpuProfiler("never", launch_filter=lambda: False)
    tiny = GpuProfiler("tiny", max_events=1)
    with off, never, tiny:
        for _ in range(3):
            cuda.to_device(np.ones(4))
    assert _copies(off) == [] and _copies(never) == []
    assert len(_copies(tiny)) == 1 and tiny.summary().dropped_events == 2


# -- regressions from a review ----------------------------------------------------------------------
def test_backend_copies_by_keyword_and_failed_copies() -> None:
    pool = GpuMemoryPool()
    x = pool.device_array(4, np.float64)
    x.copy_to_device(np.arange(4.0))
    h = np.empty(4)
    p = GpuProfiler("kw")
    with p:
        pool.backend.copy_to_host(host=h, src=x.ptr, nbytes=32)  # keywords: still a copy, still recorded
        with pytest.raises(ValueError):
            cuda.device_array(10, np.float32).copy_to_host(np.empty(5, np.float32))  # fails: not recorded
        cuda.device_array(0, np.float32).copy_to_host()  # nothing moved: not recorded
    np.testing.assert_array_equal(h, np.arange(4.0))
    assert _copies(p) == [("memcpy DtoH", 32, "default stream")]
    pool.close()


def test_simulator_to_device_records_what_the_gpu_would() -> None:
    a = np.arange(8.0)
    d = cuda.device_array(8)
    p = GpuProfiler("to_device")
    with p:
        cuda.to_device(a, to=d)  # one copy (through d.copy_to_device), not two
        cuda.to_device(ary=a)  # by keyword: its bytes
        cuda.to_device(d)  # already on the device: no copy
    assert _copies(p) == [("memcpy HtoD", 64, "default stream"), ("memcpy HtoD", 64, "default stream")]


def test_a_later_patch_is_not_clobbered(caplog: pytest.LogCaptureFixture) -> None:
    from unittest import mock

    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    original = FakeCUDAArray.copy_to_host
    p = GpuProfiler("mocked")
    p.__enter__()
    fake = mock.MagicMock()
    patch = mock.patch.object(FakeCUDAArray, "copy_to_host", fake)
    patch.start()
    with caplog.at_level(logging.WARNING, logger="ringkernel.profiling.capture"):
        p.__exit__(None, None, None)
    assert FakeCUDAArray.copy_to_host is fake and any("replaced" in r.getMessage() for r in caplog.records)
    patch.stop()
    assert FakeCUDAArray.copy_to_host is not fake
    with GpuProfiler("after"):  # the wrapper the mock put back still works
        cuda.to_device(np.ones(2)).copy_to_host()
    FakeCUDAArray.copy_to_host = original  # leave numba as it was for the other tests
    p.close()


def test_elementwise_calls_on_the_cpu_are_ranges_in_the_trace() -> None:
    """From a newcomer's trial: the CPU side of an @elementwise call was invisible to the profiler
    (its GPU side is a @gpu_kernel launch); now an ALGORITHM range "<name> (CPU)" on the caller's
    thread, inside the range open there, and nothing once the profiler has left."""
    import numpy as np

    from ringkernel import GpuProfiler
    from ringkernel.hybrid import HybridConfig, HybridDispatcher, ProcessingMode, elementwise
    from ringkernel.profiling import EventKind

    def triple(i, x, out):  # type: ignore[no-untyped-def]
        out[i] = 3 * x[i]

    k = elementwise(triple, dispatcher=HybridDispatcher(HybridConfig(ProcessingMode.CPU_ONLY, cpu_threads=2)))
    x = np.arange(100.0)
    out = np.empty_like(x)
    k(x, out)  # compiled outside the profile
    p = GpuProfiler("hybrid")
    with p:
        with p.range("step"):
            k(x, out)
    np.testing.assert_array_equal(out, 3 * x)
    spans = [e for e in p.events() if e.kind is EventKind.RANGE and e.name == "triple (CPU)"]
    step = [e for e in p.events() if e.name == "step"][0]
    assert len(spans) == 1 and spans[0].args["elements"] == 100 and spans[0].args["threads"] == 2
    assert spans[0].parent_id == step.id and step.start_ns <= spans[0].start_ns <= spans[0].end_ns <= step.end_ns
    k(x, out)  # after leaving: not recorded, nothing wrapped
    assert len([e for e in p.events() if e.name == "triple (CPU)"]) == 1
    p.close()


def test_elementwise_imported_while_a_profiler_is_active_is_captured_too() -> None:
    """`ringkernel.hybrid` imported inside `with profiler:` (rk.elementwise is loaded lazily):
    its CPU side is wrapped at import, for that profiler and a second one (from a review)."""
    import subprocess
    import sys

    code = (
        "import numpy as np, ringkernel as rk\n"
        "from ringkernel.profiling import capture\n"
        "p = rk.GpuProfiler('late')\n"
        "with p:\n"
        "    from ringkernel.hybrid import HybridConfig, HybridDispatcher, ProcessingMode, elementwise\n"
        "    def inc(i, x, out):\n"
        "        out[i] = x[i] + 1\n"
        "    k = elementwise(inc, dispatcher=HybridDispatcher(HybridConfig(ProcessingMode.CPU_ONLY)))\n"
        "    x = np.arange(10.0); out = np.empty_like(x)\n"
        "    k(x, out)\n"
        "    q = rk.GpuProfiler('second')\n"
        "    with q:\n"
        "        k(x, out)\n"
        "assert not capture.installed()\n"
        "print(sum(e.name == 'inc (CPU)' for e in p.events()), sum(e.name == 'inc (CPU)' for e in q.events()))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "RINGKERNEL_SIMULATOR": "1"})  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-2:] == ["2", "1"], r.stdout
