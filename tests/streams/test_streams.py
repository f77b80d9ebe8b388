"""Streams on the simulator: the API, events, pools, pipelines and async/await (no real overlap here)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from numba import cuda

from ringkernel import ConfigurationError, KernelArgumentError, gpu_kernel, global_thread_id, grid_stride
from ringkernel.streams import StreamConfig, StreamId, StreamKind, StreamManager, StreamPool, run_pipeline


@gpu_kernel(grid_stride=True)
def scale_add(x, out):  # type: ignore[no-untyped-def]
    for i in range(global_thread_id(), x.size, grid_stride()):
        out[i] = 2.0 * x[i] + 1.0


def test_ids_and_config() -> None:
    assert str(StreamId.compute(3)) == "Compute(3)" and str(StreamId.TRANSFER) == "Transfer"
    assert StreamId.compute(1) == StreamId(StreamKind.COMPUTE, 1)
    for bad in (lambda: StreamId(StreamKind.TRANSFER, 2), lambda: StreamId.compute(-1), lambda: StreamId("x")):  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            bad()
    with pytest.raises(ConfigurationError):
        StreamConfig(num_compute_streams=0)
    with pytest.raises(ConfigurationError, match="graph capture is off"):
        StreamManager().capture(StreamId.compute(0))
    with pytest.raises(ConfigurationError, match="simulator has no CUDA graphs"):
        StreamManager(StreamConfig(enable_graph_capture=True)).capture(StreamId.compute(0))


def test_manager_streams_and_round_robin(rng: np.random.Generator) -> None:
    with StreamManager(StreamConfig(num_compute_streams=3)) as m:
        assert len([s for s in m.stream_ids if s.kind is StreamKind.COMPUTE]) == 3
        assert [m.stream_for_workload(i).index for i in range(5)] == [0, 1, 2, 0, 1]
        assert m.stream_handle(StreamId.compute(0)) == 0  # no raw handles on the simulator
        with pytest.raises(ConfigurationError, match="no stream"):
            m.stream(StreamId.compute(7))
        x = rng.standard_normal(300)
        out = cuda.device_array(300)
        scale_add(cuda.to_device(x), out, stream=m.stream(StreamId.compute(1)))
        m.sync_stream(StreamId.compute(1))
        np.testing.assert_allclose(out.copy_to_host(), 2 * x + 1)


def test_events(rng: np.random.Generator) -> None:
    m = StreamManager()
    m.record_event("start", StreamId.compute(0))
    scale_add(cuda.to_device(rng.standard_normal(64)), cuda.device_array(64), stream=m.stream(StreamId.compute(0)))
    m.record_event("end", StreamId.compute(0))
    m.stream_wait_event(StreamId.TRANSFER, "end")
    assert m.event_elapsed_ms("start", "end") >= 0
    with pytest.raises(ConfigurationError, match="no event named"):
        m.event_elapsed_ms("start", "missing")
    m.close()
    m.close()


def test_async_copies(rng: np.random.Generator) -> None:
    m = StreamManager()
    host = cuda.pinned_array(100, dtype=np.float64)
    host[:] = rng.standard_normal(100)
    dev = cuda.device_array(100)
    m.async_memcpy_htod(dev, host)
    back = cuda.pinned_array(100, dtype=np.float64)
    m.async_memcpy_dtoh(back, dev)
    m.sync_stream(StreamId.TRANSFER)
    np.testing.assert_array_equal(back, host)
    with pytest.raises(KernelArgumentError, match="NumPy host array"):
        m.async_memcpy_htod(dev, [1.0, 2.0])  # type: ignore[arg-type]


def test_asyncio_gather_two_kernels(rng: np.random.Generator) -> None:
    m = StreamManager(StreamConfig(num_compute_streams=2))
    x1, x2 = rng.standard_normal(200), rng.standard_normal(300)
    o1, o2 = cuda.device_array(200), cuda.device_array(300)

    async def run(x, out, sid):  # type: ignore[no-untyped-def]
        scale_add(cuda.to_device(x), out, stream=m.stream(sid))
        await m.wait(sid)
        return out.copy_to_host()

    async def both():  # type: ignore[no-untyped-def]
        return await asyncio.gather(run(x1, o1, StreamId.compute(0)), run(x2, o2, StreamId.compute(1)))

    r1, r2 = asyncio.run(both())
    np.testing.assert_allclose(r1, 2 * x1 + 1)
    np.testing.assert_allclose(r2, 2 * x2 + 1)

    async def failing():  # type: ignore[no-untyped-def]
        scale_add(np.zeros(4), cuda.device_array(4), stream=m.stream(StreamId.compute(0)))  # host array
        await m.wait(StreamId.compute(0))

    with pytest.raises(KernelArgumentError, match="host memory"):
        asyncio.run(failing())


def test_stream_pool() -> None:
    m = StreamManager(StreamConfig(num_compute_streams=3))
    pool = StreamPool(m)
    seen = []
    for w in range(6):
        sid = pool.stream_for(w)
        pool.track(sid)
        seen.append(sid.index)
    assert sorted(seen) == [0, 0, 1, 1, 2, 2]  # balanced by submitted work
    assert pool.stream_for(4) == StreamId.compute(seen[4])  # sticky assignment
    pool.assign_workload(99, StreamId.compute(2))
    stats = pool.utilization_stats()
    assert stats.workloads[99] == StreamId.compute(2)
    assert sum(stats.submitted.values()) == 6 and all(v == 0 for v in stats.outstanding.values())
    with pytest.raises(ConfigurationError):
        pool.assign_workload(1, StreamId.compute(9))


def test_pipeline_results_and_report(rng: np.random.Generator) -> None:
    n = 2000
    host_in = cuda.pinned_array(n, dtype=np.float64)
    host_in[:] = rng.standard_normal(n)
    host_out = cuda.pinned_array(n, dtype=np.float64)
    rep = run_pipeline(host_in, host_out, lambda d_in, d_out, s: scale_add(d_in, d_out, stream=s), chunks=4)
    np.testing.assert_allclose(host_out, 2 * host_in + 1)
    assert rep.chunks == 4 and rep.pipelined_ms > 0 and rep.ideal_ms == max(rep.h2d_ms, rep.kernel_ms, rep.d2h_ms)
    assert rep.overlap_efficiency > 0 and rep.speedup_vs_one_stream > 0
    assert rep.copies_together_ms > 0 and rep.bound_ms == max(rep.kernel_ms, rep.copies_together_ms)
    assert rep.efficiency_vs_bound == pytest.approx(rep.bound_ms / rep.pipelined_ms)
    with pytest.raises(KernelArgumentError):
        run_pipeline(host_in, host_out[:10], lambda *a: None)
    with pytest.raises(ConfigurationError):
        run_pipeline(host_in, host_out, lambda *a: None, chunks=0)


def test_gpu_failure_seen_by_an_event_raises_device_error_in_the_awaiting_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events are polled with cuEventQuery (a stand-in driver here): NOT_READY keeps the
    task waiting, success ends it, and a failure of the work before the event reaches the
    awaiting task as DeviceError with what to do. The GPU test makes a real fault."""
    from ringkernel import DeviceError
    from ringkernel import driver
    from ringkernel.streams.manager import Event

    answers = [600, 600, 0, 600, 700]  # not ready, not ready, done; then not ready, illegal address
    queried: list[int] = []

    class Driver:
        def cuEventQuery(self, handle: object) -> int:
            queried.append(handle.value)  # type: ignore[attr-defined]
            return answers.pop(0)

    class NumbaEvent:
        handle = 0x1234

    monkeypatch.setattr(driver, "lib", lambda: Driver())
    monkeypatch.setattr(driver, "error_name", lambda rc: "CUDA_ERROR_ILLEGAL_ADDRESS")
    monkeypatch.setattr(driver, "_error_string", lambda rc: "an illegal memory access")
    ev = Event.__new__(Event)  # a GPU event without a GPU
    ev.simulated, ev._t, ev._ev = False, None, NumbaEvent()

    async def task() -> None:
        await ev

    asyncio.run(task())  # two NOT_READY answers, then done
    assert queried == [0x1234] * 3
    with pytest.raises(DeviceError, match="ILLEGAL_ADDRESS") as info:
        asyncio.run(task())
    assert "restart the process" in str(info.value)


def test_pipeline_report_arithmetic() -> None:
    from ringkernel.streams import PipelineReport

    r = PipelineReport(32, 4, h2d_ms=78.0, kernel_ms=80.0, d2h_ms=78.0, pipelined_ms=90.0, one_stream_ms=236.0,
                       copies_together_ms=87.6)  # fmt: skip
    assert r.ideal_ms == 80.0 and r.overlap_efficiency == pytest.approx(80 / 90)
    assert r.bound_ms == 87.6 and r.efficiency_vs_bound == pytest.approx(87.6 / 90)
    unmeasured = PipelineReport(8, 2, 10.0, 5.0, 12.0, 20.0, 27.0)
    assert unmeasured.bound_ms == 12.0  # without the copies-together figure: the longest copy


def test_pipeline_repeats_validated() -> None:
    host = np.zeros(8, np.float32)
    with pytest.raises(ConfigurationError, match="repeats"):
        run_pipeline(host, host.copy(), lambda *a: None, chunks=2, repeats=0)


# -- an adversarial trial's findings ----------------------------------------------------------------
def test_allow_sync_copies_run_on_the_stream_asked_for_and_wait_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pageable copy with allow_sync=True ran on the legacy default stream, which the manager's
    (non-blocking) streams do not wait for: unordered after a kernel queued on the stream asked for."""
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    m = StreamManager(StreamConfig(num_compute_streams=2))
    monkeypatch.setattr(m, "_is_pinned", lambda arr: not isinstance(arr, np.ndarray))  # as a GPU answers for np.empty
    seen: list[tuple[str, object]] = []
    to_host, to_device = FakeCUDAArray.copy_to_host, FakeCUDAArray.copy_to_device
    monkeypatch.setattr(FakeCUDAArray, "copy_to_host", lambda self, ary=None, stream=0: (seen.append(("dtoh", stream)), to_host(self, ary, stream))[1])
    monkeypatch.setattr(FakeCUDAArray, "copy_to_device", lambda self, ary, stream=0: (seen.append(("htod", stream)), to_device(self, ary, stream))[1])
    sid = StreamId.compute(1)
    d = cuda.to_device(np.arange(8.0))
    host = np.empty(8)
    m.async_memcpy_dtoh(host, d, sid, allow_sync=True)
    m.async_memcpy_htod(d, np.zeros(8), sid, allow_sync=True)
    assert [s for _, s in seen[-2:]] == [m.stream(sid), m.stream(sid)]
    np.testing.assert_array_equal(host, np.arange(8.0))
    m.close()


def test_a_workload_gets_one_stream_when_threads_ask_at_once() -> None:
    import threading

    m = StreamManager(StreamConfig(num_compute_streams=4))
    pool = StreamPool(m)
    for w in range(50):
        got: list[StreamId] = []
        barrier = threading.Barrier(6)

        def ask() -> None:
            barrier.wait()
            got.append(pool.stream_for(w))

        threads = [threading.Thread(target=ask) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(got)) == 1, (w, got)
    m.close()
