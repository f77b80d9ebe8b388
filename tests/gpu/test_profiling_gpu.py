"""GpuProfiler on a real GPU: kernel durations against CUDA-event timings, a 3-stream pipeline's
trace, and the host cost of a launch with the profiler active, never entered, and left."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _event_timed_ms(fn, reps: int, batch: int = 10) -> list[float]:  # type: ignore[no-untyped-def]
    """Milliseconds per call: CUDA events around ``batch`` back-to-back calls (so the host's
    launch time overlaps the previous kernel instead of being timed), ``reps`` samples."""
    from numba import cuda

    out = []
    for _ in range(reps):
        start, end = cuda.event(timing=True), cuda.event(timing=True)
        start.record()
        for _ in range(batch):
            fn()
        end.record()
        end.synchronize()
        out.append(cuda.event_elapsed_time(start, end) / batch)
    return out


def test_kernel_gpu_durations_agree_with_cuda_events() -> None:
    from numba import cuda

    from ringkernel import GpuProfiler
    from ringkernel.kernels import vector_add
    from ringkernel.profiling import EventKind, GpuTiming

    n = 1 << 26  # ~0.8 GB moved: a few hundred microseconds on an H200
    a = cuda.to_device(np.ones(n, np.float32))
    b = cuda.to_device(np.ones(n, np.float32))
    c = cuda.device_array(n, np.float32)
    launch = lambda: vector_add(a, b, c)  # noqa: E731
    _event_timed_ms(launch, 5)  # compile and warm up
    reference, profiled = [], []
    for _ in range(3):  # interleaved rounds: clock changes affect both alike
        reference += _event_timed_ms(launch, 20)
        with GpuProfiler("agreement", gpu_timing=GpuTiming.EVENTS) as p:
            for _ in range(21):
                launch()  # back to back: the stream stays busy, spans are exact
        kernels = [e for e in p.events() if e.kind is EventKind.KERNEL]
        assert len(kernels) == 21 and all(e.gpu_duration_ns for e in kernels)
        assert p.timing_source.startswith("cuda events")
        profiled += [e.gpu_duration_ns / 1e6 for e in kernels[1:]]  # type: ignore[operator]
        p.close()
    ref_med, prof_med = float(np.median(reference)), float(np.median(profiled))
    print(f"median kernel time: CUDA events {ref_med * 1e3:.1f} us, profiler {prof_med * 1e3:.1f} us")
    assert abs(prof_med - ref_med) <= 0.05 * ref_med


def test_three_stream_pipeline_has_a_track_per_stream(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from numba import cuda

    from ringkernel import GpuMemoryPool, GpuProfiler, ProfileCategory
    from ringkernel.kernels import saxpy
    from ringkernel.streams import StreamConfig, StreamId, StreamManager
    from tests.test_profiling import validate_trace

    chunk, chunks = 1 << 22, 12
    pool = GpuMemoryPool()
    host_in = cuda.pinned_array(chunk * chunks, np.float32)
    host_in[:] = np.random.default_rng().standard_normal(chunk * chunks, dtype=np.float32)
    host_out = cuda.pinned_array(chunk * chunks, np.float32)
    with StreamManager(StreamConfig(num_compute_streams=3, use_transfer_stream=False)) as m:
        streams = [m.stream(StreamId.compute(i)) for i in range(3)]
        d_in = [cuda.device_array(chunk, np.float32) for _ in range(3)]
        d_out = [cuda.device_array(chunk, np.float32) for _ in range(3)]
        saxpy(np.float32(2.0), d_in[0], d_in[0], d_out[0])  # compile outside the profile
        cuda.synchronize()
        p = GpuProfiler("pipeline")
        p.name_stream(m, "pipe")
        p.track_pool(pool, "pool")
        p.annotate_kernel("saxpy", bytes_per_element=12).end()
        with p:
            for i in range(chunks):
                k, s = i % 3, streams[i % 3]
                with p.range(f"chunk {i}", ProfileCategory.ALGORITHM):
                    lo = i * chunk
                    d_in[k].copy_to_device(host_in[lo:lo + chunk], stream=s)
                    saxpy(np.float32(2.0), d_in[k], d_in[k], d_out[k], stream=s)
                    d_out[k].copy_to_host(host_out[lo:lo + chunk], stream=s)
            m.sync_all()
    np.testing.assert_allclose(host_out, 3 * host_in, rtol=1e-6)
    path = tmp_path / "pipeline.json"
    trace = validate_trace(p.export_chrome_tracing(path))
    assert json.loads(path.read_text()) == trace
    gpu = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["pid"] >= 100]
    kernels = [e for e in gpu if e["cat"] == "kernel"]
    copies = [e for e in gpu if e["cat"] == "memcpy"]
    assert len(kernels) == chunks and len({e["tid"] for e in kernels}) == 3
    assert sorted(e["name"] for e in copies) == ["memcpy DtoH"] * chunks + ["memcpy HtoD"] * chunks
    for tid in {e["tid"] for e in gpu}:  # on each stream: HtoD, kernel, DtoH, one after another
        track = sorted((e for e in gpu if e["tid"] == tid), key=lambda e: e["ts"])
        assert [e["cat"] for e in track] == ["memcpy", "kernel", "memcpy"] * (chunks // 3)
        for x, y in zip(track, track[1:]):
            assert x["ts"] + x["dur"] <= y["ts"] + 0.5  # us: spans of one stream do not overlap
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name" and e["pid"] >= 100}
    assert names == {"pipe Compute(0)", "pipe Compute(1)", "pipe Compute(2)"}
    assert not trace["metadata"]["device"]["simulated"]
    s = p.summary()
    print(s)
    k = s.kernel("saxpy")
    assert k.launches == chunks and k.timed == chunks and k.fraction_of_copy is not None
    assert len(s.streams) == 3
    htod = {t.name: t for t in s.transfers}["memcpy HtoD"]
    assert htod.count == htod.timed == chunks and htod.bytes == 4 * chunk * chunks
    assert htod.gbps is not None and 5 < htod.gbps < 100, htod  # PCIe / C2C: tens of GB/s
    p.close()


def test_copy_gpu_durations_agree_with_cuda_events() -> None:
    """A pinned host-to-device copy timed by the profiler and by CUDA events around it."""
    from numba import cuda

    from ringkernel import GpuProfiler
    from ringkernel.profiling import EventKind, GpuTiming

    n = 1 << 24  # 64 MiB: a few milliseconds over the host link
    host = cuda.pinned_array(n, np.float32)
    host[:] = 1.0
    dev = cuda.device_array(n, np.float32)
    s = cuda.stream()
    copy = lambda: dev.copy_to_device(host, stream=s)  # noqa: E731
    reference, profiled = [], []
    copy()
    s.synchronize()
    for _ in range(3):
        for _ in range(3):  # back to back between two events: the first copy's submission latency
            start, end = cuda.event(timing=True), cuda.event(timing=True)  # is then spread over 5
            start.record(s)
            for _ in range(5):
                copy()
            end.record(s)
            end.synchronize()
            reference.append(cuda.event_elapsed_time(start, end) / 5)
        with GpuProfiler("copies", gpu_timing=GpuTiming.EVENTS) as p:
            for _ in range(5):
                copy()
            s.synchronize()
        spans = [e.gpu_duration_ns / 1e6 for e in p.events() if e.kind is EventKind.TRANSFER]  # type: ignore[operator]
        assert len(spans) == 5
        profiled += spans[1:]  # the first one waits for the profiler's set-up
        p.close()
    ref_med, prof_med = float(np.median(reference)), float(np.median(profiled))
    print(f"median HtoD copy of {4 * n >> 20} MiB: CUDA events {ref_med:.3f} ms, profiler {prof_med:.3f} ms")
    assert abs(prof_med - ref_med) <= 0.05 * ref_med


def _per_launch_us(launch, batches: int = 30, batch: int = 200) -> float:  # type: ignore[no-untyped-def]
    from numba import cuda

    per = []
    for _ in range(batches):
        cuda.synchronize()
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            launch()
        per.append((time.perf_counter_ns() - t0) / batch / 1e3)
    return float(np.median(per))


@pytest.mark.parametrize("timing", ["cupti_capture", "cupti", "events"])
def test_host_cost_of_a_launch_with_and_without_the_profiler(timing: str) -> None:
    """What a profiler costs a launch, in 5 rounds alternating no profiler and a profiler entered
    afresh (the host's speed changes within a run: a plain launch measured 4.55 and 7.0 us
    minutes apart on one machine), the median of the rounds' differences. The bounds catch a
    regression, not the issue's figure (benchmarks/profiling.py measures that): the default
    (the compiled hook, CUPTI timing) measured +1.4 to +3.4 us on eight hosts (CUPTI's own
    recording +0.9 to +2.8 of it), the Python hook +3.4 to +6.0; LaunchCapture.CUPTI +0.1 to
    +2.3; CUDA events +2.0 to +6.7."""
    from numba import cuda

    from ringkernel import GpuProfiler, launch_hooks
    from ringkernel.kernels import vector_add
    from ringkernel.profiling import GpuTiming, LaunchCapture

    if timing.startswith("cupti"):
        pytest.importorskip("cupti.cupti", reason="the cupti extra (cupti-python) is not installed")

    a = cuda.to_device(np.ones(1024, np.float32))
    c = cuda.device_array_like(a)
    launch = lambda: vector_add(a, a, c)  # noqa: E731
    launch()
    cuda.synchronize()
    assert launch_hooks() == []
    nevers, enableds, lefts = [], [], []
    for r in range(5):
        if timing == "cupti_capture":
            p = GpuProfiler("cost", launches=LaunchCapture.CUPTI)
        else:
            p = GpuProfiler("cost", gpu_timing=GpuTiming.CUPTI if timing == "cupti" else GpuTiming.EVENTS)
        if r % 2:
            nevers.append(_per_launch_us(launch, batches=10))
        with p:
            _per_launch_us(launch, batches=2)  # warm the profiler's event pool
            enableds.append(_per_launch_us(launch, batches=10))
        assert p._timer is None and launch_hooks() == []  # leaving undid the capture: nothing left per launch
        lefts.append(_per_launch_us(launch, batches=10))
        if not r % 2:
            nevers.append(_per_launch_us(launch, batches=10))
        p.close()
    over = float(np.median(np.subtract(enableds, nevers)))
    left_over = float(np.median(np.subtract(lefts, nevers)))
    print(f"launch_us: never {np.median(nevers):.2f}, enabled {np.median(enableds):.2f} (+{over:.2f}), "
          f"after leaving {np.median(lefts):.2f} (+{left_over:.2f})")
    assert launch_hooks() == []
    assert left_over <= 0.3 * float(np.median(nevers)), "leaving the profiler removes every cost"
    # relative to the plain launch: every figure scales with the host's speed (on a host whose
    # plain launch took 5.6 us: the default +3.36, the Python hook +5.97, CUDA events +6.68)
    never_us = float(np.median(nevers))
    if timing == "cupti_capture":
        assert over <= 0.75 * never_us, f"LaunchCapture.CUPTI: +{over:.2f} us a launch over {never_us:.2f}"
    elif timing == "cupti":  # the compiled hook: the Python hook costs about one plain launch more
        assert over <= 0.75 * never_us, f"the default (compiled hook, CUPTI timing): +{over:.2f} us over {never_us:.2f}"
    else:  # the compiled timer: with the timer's Python, 2.2-3x a plain launch
        assert over <= 2.0 * never_us, f"CUDA events: +{over:.2f} us a launch over {never_us:.2f}"


@pytest.mark.parametrize("capture", ["hook", "cupti"])
def test_profiling_example_on_the_gpu(tmp_path, capture: str) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_profiling import validate_trace

    if capture == "cupti":
        pytest.importorskip("cupti.cupti", reason="the cupti extra (cupti-python) is not installed")
    root = Path(__file__).resolve().parents[2]
    trace = tmp_path / "example.json"
    extra = ["--cupti"] if capture == "cupti" else []
    r = subprocess.run([sys.executable, str(root / "examples" / "profiling.py"), str(trace), *extra], capture_output=True,
                       text=True, timeout=240, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "results match NumPy: True" in r.stdout and "simulator" not in r.stdout, r.stdout
    print(r.stdout)
    validate_trace(trace.read_text())


def test_cupti_capture_sees_every_kernel_with_its_range_thread_and_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``LaunchCapture.CUPTI`` on the H200: every @gpu_kernel launch found (by its Python name),
    from two threads, inside the right ranges; a CuPy kernel too; durations within 5% of CUDA
    events; the trace valid."""
    pytest.importorskip("cupti.cupti", reason="the cupti extra (cupti-python) is not installed")
    import threading

    from numba import cuda

    from ringkernel import GpuProfiler, ProfileCategory
    from ringkernel.kernels import vector_add
    from ringkernel.profiling import EventKind, LaunchCapture
    from tests.test_profiling import validate_trace

    n = 1 << 26
    a = cuda.to_device(np.ones(n, np.float32))
    b = cuda.to_device(np.ones(n, np.float32))
    c = cuda.device_array(n, np.float32)
    launch = lambda: vector_add(a, b, c)  # noqa: E731
    reference = _event_timed_ms(launch, 20)
    small = cuda.device_array(4096, np.float32)
    p = GpuProfiler("cupti capture", launches=LaunchCapture.CUPTI)
    with p:
        for step in range(5):
            with p.range(f"step {step}", ProfileCategory.ALGORITHM):
                for _ in range(4):
                    launch()

        def worker() -> None:
            with p.range("worker range", ProfileCategory.ALGORITHM):
                for _ in range(7):
                    vector_add(small, small, small)
            cuda.synchronize()

        t = threading.Thread(target=worker, name="launcher thread")
        t.start()
        t.join()
        try:
            import cupy

            x = cupy.arange(1 << 20, dtype=cupy.float32)
            float((x * 2).sum())
            saw_cupy = True
        except ImportError:
            saw_cupy = False
        cuda.synchronize()
    events = p.events()
    ranges = {e.id: e for e in events if e.kind is EventKind.RANGE}
    kernels = [e for e in events if e.kind is EventKind.KERNEL]
    ours = [e for e in kernels if e.name == "vector_add"]
    big = [e for e in ours if e.track != "launcher thread"]
    mine = [e for e in ours if e.track == "launcher thread"]
    assert len(big) == 20 and len(mine) == 7, [(e.name, e.track) for e in kernels][:40]
    assert [ranges[e.parent_id].name for e in big] == [f"step {s}" for s in range(5) for _ in range(4)]  # type: ignore[index]
    assert all(ranges[e.parent_id].name == "worker range" for e in mine)  # type: ignore[index]
    assert all(e.gpu_start_ns is not None and e.args["grid"][0] > 0 for e in ours)
    if saw_cupy:
        assert any(e.name not in ("vector_add",) for e in kernels), "CuPy's kernels are seen too"
    prof_med = float(np.median([e.gpu_duration_ns / 1e6 for e in big[1:]]))  # type: ignore[operator]
    ref_med = float(np.median(reference))
    print(f"CUPTI capture: {len(kernels)} kernels ({sorted({e.name for e in kernels})}); median vector_add "
          f"{prof_med * 1e3:.1f} us vs CUDA events {ref_med * 1e3:.1f} us")
    assert abs(prof_med - ref_med) <= 0.05 * ref_med
    validate_trace(p.export_chrome_tracing(tmp_path / "cupti_capture.json"))
    print(p.summary())
    p.close()


@pytest.mark.parametrize("timing", ["cupti", "events"])
def test_the_compiled_launch_hook_on_the_gpu(timing: str) -> None:
    """The profiler's launch hook is the compiled Recorder on a GPU: the usual launch is
    recorded in C, every launch gets its GPU times from the timer (CUPTI's records matched to
    the calls the Recorder appended, or the events EventTimer recorded), with the same
    events, parents and streams as the Python hook gives the same launches."""
    from numba import cuda

    from ringkernel import GpuProfiler, ProfileCategory, native
    from ringkernel.kernel import hooks
    from ringkernel.kernels import vector_add
    from ringkernel.profiling import EventKind, GpuTiming

    if timing == "cupti":
        pytest.importorskip("cupti.cupti", reason="the cupti extra (cupti-python) is not installed")
    a = cuda.to_device(np.ones(4097, np.float32))
    c = cuda.device_array_like(a)
    s = cuda.stream()
    vector_add(a, a, c)
    cuda.synchronize()

    def session(compiled: bool) -> tuple[list[tuple[object, ...]], object]:
        native.HOOKS = compiled
        mod = native.load()
        assert mod is not None, native.status()
        hooks.use_native(mod) if compiled else hooks.use_python()
        try:
            with GpuProfiler("compiled hook", gpu_timing=GpuTiming.CUPTI if timing == "cupti" else GpuTiming.EVENTS) as p:
                assert (p._recorder is not None) == compiled
                for _ in range(20):
                    vector_add(a, a, c)
                with p.range("step", ProfileCategory.ALGORITHM):
                    for _ in range(20):
                        vector_add(a, a, c, stream=s)
                counts = (p._recorder.fast, p._recorder.slow) if compiled else None
            kernels = [e for e in p.events() if e.kind is EventKind.KERNEL]
            assert len(kernels) == 40
            assert all(e.gpu_start_ns and e.gpu_end_ns and e.gpu_end_ns > e.gpu_start_ns for e in kernels), \
                [e for e in kernels if not e.gpu_duration_ns][:3]
            p.close()
            return [(e.name, e.parent_id is None, e.stream_id, e.track_id) for e in kernels], counts
        finally:
            native.HOOKS = True
            hooks.use_native(native.load())

    py, _ = session(False)
    nat, counts = session(True)
    assert nat == py
    assert counts is not None and counts[0] >= 36, counts  # the first launch on each stream goes to Python
    np.testing.assert_array_equal(c.copy_to_host(), 2 * np.ones(4097, np.float32))


@pytest.mark.parametrize("library", ["cupy", "torch"])
@pytest.mark.parametrize("timing", ["cupti", "events"])
def test_other_libraries_arrays_under_the_compiled_hook(library: str, timing: str) -> None:
    """CuPy arrays and PyTorch tensors launched under a profiler with the compiled hook: their
    launch entries report through the same Notifier as numba's; every launch is recorded with
    GPU times, on its stream, and the results are right (the compiled entries took them)."""
    from ringkernel import GpuProfiler, native
    from ringkernel.kernels import vector_add
    from ringkernel.profiling import EventKind, GpuTiming

    if timing == "cupti":
        pytest.importorskip("cupti.cupti", reason="the cupti extra (cupti-python) is not installed")
    lib = pytest.importorskip(library)
    rng = np.random.default_rng()
    host = rng.random(3001).astype(np.float32)
    if library == "cupy":
        a, c = lib.asarray(host), lib.empty(3001, dtype=lib.float32)
        back = lib.asnumpy
    else:
        a, c = lib.from_numpy(host).cuda(), lib.empty(3001, dtype=lib.float32, device="cuda")
        back = lambda t: t.cpu().numpy()  # noqa: E731
    vector_add(a, a, c)  # (first launch: compiled and its entry made outside the profiler)
    assert native.loaded()
    with GpuProfiler(f"{library} arrays", gpu_timing=GpuTiming.CUPTI if timing == "cupti" else GpuTiming.EVENTS) as p:
        assert p._recorder is not None
        for _ in range(30):
            vector_add(a, a, c)
        fast = p._recorder.fast
    kernels = [e for e in p.events() if e.kind is EventKind.KERNEL]
    assert len(kernels) == 30
    assert all(e.gpu_end_ns and e.gpu_start_ns and e.gpu_end_ns > e.gpu_start_ns for e in kernels)
    assert fast >= 29, fast  # the usual launch recorded in C
    np.testing.assert_allclose(back(c), 2 * host, rtol=1e-6)
    p.close()
