"""Lifetimes of the streams resources: use after close(), double close, `with`, finalizers.

Two backends: numba's simulator, and a stand-in CUDA driver (``FakeDriver``) behind the GPU
code paths, which records every driver call and flags any that is handed a destroyed
handle: on a real GPU such a call is what crashed the process (``StreamManager.sync_all()``
after ``close()`` ended in a segmentation fault on the H200). The GPU machine runs the same
checks for real in tests/gpu/test_lifetimes_gpu.py.

The use-after-close test is parametrised over the public methods each class has *now*: a
method added without a closed check, or without a line in the call tables below, fails it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import itertools
from typing import Any, Callable

import numpy as np
import pytest
from numba import cuda

from ringkernel import ConfigurationError, RingKernelError, ResourceClosedError, driver
from ringkernel.errors import DriverError
from ringkernel.streams import CapturedGraph, Event, StreamConfig, StreamId, StreamManager, StreamPool, run_pipeline
from ringkernel.streams import manager as manager_mod

SID = StreamId.compute(0)
ALWAYS_ALLOWED = {"close", "closed"}  # what a closed resource still answers
PROTOCOL = ("__enter__", "__await__")  # dunders that are uses of the resource


# -- a stand-in driver ---------------------------------------------------------------------------
def _out(ref: Any, ctype: Any, value: int) -> None:
    ctypes.cast(ref, ctypes.POINTER(ctype))[0] = value


class FakeDriver:
    """Answers the driver calls the streams package makes; remembers what was destroyed.

    Handles are unique across instances: a resource of an earlier test that is collected
    during a later one then destroys a handle this instance never made, not one it reused.
    """

    _ids = itertools.count(0x5000, 0x10)

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.destroyed: set[int] = set()
        self.violations: list[str] = []
        self.created_streams: list[int] = []
        self.query_result = 0  # cuEventQuery: 0 done, 600 not ready
        self.fail_stream_create_at: int | None = None

    def __getattr__(self, name: str) -> Callable[..., int]:
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*args: Any) -> int:
            handles = [a.value for a in args if isinstance(a, ctypes.c_void_p) and a.value]
            dead = [h for h in handles if h in self.destroyed]
            if dead:  # recorded as well as raised: cleanup code swallows exceptions
                self.violations.append(f"{name}({dead[0]:#x})")
                raise AssertionError(f"{name} was handed destroyed handle {dead[0]:#x}: a crash on a GPU")
            self.calls.append(name)
            if name == "cuStreamCreateWithPriority":
                if self.fail_stream_create_at == len(self.created_streams):
                    return 2  # CUDA_ERROR_OUT_OF_MEMORY
                h = next(self._ids)
                self.created_streams.append(h)
                _out(args[0], ctypes.c_void_p, h)
            elif name == "cuCtxGetStreamPriorityRange":
                _out(args[0], ctypes.c_int, 0)
                _out(args[1], ctypes.c_int, -5)
            elif name in ("cuStreamEndCapture", "cuGraphInstantiateWithFlags"):
                _out(args[1] if name == "cuStreamEndCapture" else args[0], ctypes.c_void_p, next(self._ids))
            elif name in ("cuStreamDestroy_v2", "cuGraphDestroy", "cuGraphExecDestroy"):
                self.destroyed.add(handles[0])
            elif name == "cuEventQuery":
                return self.query_result
            return 0

        return call


class FakeStream:
    """What ``numba.cuda.external_stream`` returns on a GPU, reduced to what is used here."""

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def synchronize(self) -> None:
        driver.stream_synchronize(self.handle)


class FakeNumbaEvent:
    _ids = itertools.count(0xE0000, 0x10)

    def __init__(self, timing: bool = True) -> None:
        self.handle = next(self._ids)

    def record(self, stream: Any) -> None:
        driver.lib().cuEventRecord(ctypes.c_void_p(self.handle), ctypes.c_void_p(driver.stream_handle(stream)))

    def wait(self, stream: Any) -> None:
        driver.lib().cuStreamWaitEvent(ctypes.c_void_p(driver.stream_handle(stream)), ctypes.c_void_p(self.handle), 0)


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The GPU code paths of the streams package against ``FakeDriver``."""
    import gc

    gc.collect()  # resources of earlier tests must not close through this test's fake driver
    lib = FakeDriver()
    monkeypatch.setattr(driver, "_lib", lib)
    monkeypatch.setattr(driver, "error_name", lambda rc: f"CUresult {rc}")
    monkeypatch.setattr(driver, "_error_string", lambda rc: "")
    monkeypatch.setattr(manager_mod, "_simulated", lambda: False)
    monkeypatch.setattr(cuda, "external_stream", FakeStream)
    monkeypatch.setattr(cuda, "event", FakeNumbaEvent)
    monkeypatch.setattr(cuda, "event_elapsed_time", lambda a, b: 1.5, raising=False)  # GPU-only API
    yield lib
    assert lib.violations == [], f"destroyed handles reached the driver: {lib.violations}"


@pytest.fixture(params=["simulator", "fake_gpu"])
def backend(request: pytest.FixtureRequest) -> FakeDriver | None:
    """None on the simulator; the stand-in driver otherwise."""
    return request.getfixturevalue("fake_gpu") if request.param == "fake_gpu" else None


# -- the closed resources and what to ask of them -------------------------------------------------
def _closed_manager(lib: FakeDriver | None) -> StreamManager:
    m = StreamManager(StreamConfig(num_compute_streams=2, enable_graph_capture=True))
    m.record_event("a", SID)
    m.close()
    return m


def _closed_event(lib: FakeDriver | None) -> Event:
    ev = Event(simulated=lib is None)
    ev.record(0)
    ev.close()
    return ev


def _closed_pool(lib: FakeDriver | None) -> StreamPool:
    pool = StreamPool(StreamManager(StreamConfig(num_compute_streams=2)))
    pool.track(SID)
    pool.close()
    return pool


def _pool_of_closed_manager(lib: FakeDriver | None) -> StreamPool:
    m = StreamManager(StreamConfig(num_compute_streams=2))
    pool = StreamPool(m)
    pool.track(SID)
    m.close()
    return pool


def _closed_graph(lib: FakeDriver | None) -> CapturedGraph:
    m = StreamManager(StreamConfig(num_compute_streams=1, enable_graph_capture=True))
    with m.capture(SID) as g:
        pass
    g.replay()
    g.close()
    return g


CALLS: dict[type, dict[str, Callable[[Any], Any]]] = {
    StreamManager: {
        "priority_range": lambda m: m.priority_range(),
        "stream": lambda m: m.stream(SID),
        "stream_handle": lambda m: m.stream_handle(SID),
        "stream_for_workload": lambda m: m.stream_for_workload(3),
        "stream_ids": lambda m: m.stream_ids,
        "sync_stream": lambda m: m.sync_stream(SID),
        "sync_all": lambda m: m.sync_all(),  # a segmentation fault on the H200 before
        "wait": lambda m: m.wait(SID),
        "capture": lambda m: m.capture(SID),
        "record_event": lambda m: m.record_event("a", SID),
        "event": lambda m: m.event("a"),
        "stream_wait_event": lambda m: m.stream_wait_event(SID, "a"),
        "event_elapsed_ms": lambda m: m.event_elapsed_ms("a", "a"),
        "async_memcpy_htod": lambda m: m.async_memcpy_htod(cuda.device_array(4), np.zeros(4), allow_sync=True),
        "async_memcpy_dtoh": lambda m: m.async_memcpy_dtoh(np.zeros(4), cuda.device_array(4), allow_sync=True),
        "__enter__": lambda m: m.__enter__(),
    },
    Event: {
        "record": lambda e: e.record(0),
        "query": lambda e: e.query(),
        "synchronize": lambda e: e.synchronize(),
        "wait_on": lambda e: e.wait_on(0),
        "elapsed_ms": lambda e: e.elapsed_ms(e),
        "__await__": lambda e: e.__await__(),
        "__enter__": lambda e: e.__enter__(),
    },
    StreamPool: {
        "assign_workload": lambda p: p.assign_workload(1, SID),
        "stream_for": lambda p: p.stream_for(1),
        "track": lambda p: p.track(SID),
        "least_utilized_stream": lambda p: p.least_utilized_stream(),
        "utilization_stats": lambda p: p.utilization_stats(),
        "__enter__": lambda p: p.__enter__(),
    },
    CapturedGraph: {
        "replay": lambda g: g.replay(),
        "__enter__": lambda g: g.__enter__(),  # a new capture
    },
}

# (class, how to get a closed one, the resource the error names, backends it exists on)
CASES = [
    (StreamManager, _closed_manager, "StreamManager", ("simulator", "fake_gpu")),
    (Event, _closed_event, "Event", ("simulator", "fake_gpu")),
    (StreamPool, _closed_pool, "StreamPool", ("simulator", "fake_gpu")),
    (StreamPool, _pool_of_closed_manager, "StreamManager", ("simulator", "fake_gpu")),
    (CapturedGraph, _closed_graph, "CapturedGraph", ("fake_gpu",)),  # the simulator has no graphs
]


def public_methods(cls: type) -> list[str]:
    """Every public callable or property of ``cls``, and the dunders that use the resource."""
    names = {n for n in dir(cls) if not n.startswith("_")} - ALWAYS_ALLOWED
    return sorted(names | {n for n in PROTOCOL if n in dir(cls)})


USE_AFTER_CLOSE = [
    pytest.param(cls, make, resource, name, b, id=f"{make.__name__}-{name}-{b}")
    for cls, make, resource, backends in CASES
    for name in public_methods(cls)
    for b in backends
]


@pytest.mark.parametrize("cls, make, resource, name, backend_name", USE_AFTER_CLOSE)
def test_every_public_method_refuses_use_after_close_before_any_driver_call(
    cls: type, make: Callable[[Any], Any], resource: str, name: str, backend_name: str, request: pytest.FixtureRequest
) -> None:
    lib = request.getfixturevalue("fake_gpu") if backend_name == "fake_gpu" else None
    call = CALLS[cls].get(name)
    if call is None:
        pytest.fail(f"{cls.__name__}.{name} is new: add it to CALLS here and give it a closed check")
    obj = make(lib)
    assert obj.closed
    driver_calls = list(lib.calls) if lib else []
    with pytest.raises(ResourceClosedError) as info:
        call(obj)
    assert info.value.resource == resource
    assert str(info.value).startswith(f"{resource} is closed")
    assert info.value.hint
    if lib:
        assert lib.calls == driver_calls, "a closed resource must refuse before calling the driver"


def test_the_call_tables_name_only_methods_that_exist() -> None:
    for cls, table in CALLS.items():
        assert set(table) <= set(public_methods(cls)), cls.__name__


# -- the crash that started this ----------------------------------------------------------------
def test_sync_all_after_close_raises_instead_of_reaching_the_driver(fake_gpu: FakeDriver) -> None:
    m = StreamManager(StreamConfig(num_compute_streams=2))
    handles = list(fake_gpu.created_streams)
    assert len(handles) == 3  # two compute streams and the transfer stream
    m.close()
    assert set(handles) <= fake_gpu.destroyed
    with pytest.raises(ResourceClosedError, match="StreamManager is closed: sync_all") as info:
        m.sync_all()
    assert isinstance(info.value, RingKernelError) and info.value.operation == "sync_all"
    assert "create a new one" in str(info.value)
    # what close() did: synchronise, then destroy each stream once (the default stream is numba's here)
    assert fake_gpu.calls.count("cuStreamSynchronize") == 3
    assert fake_gpu.calls.count("cuStreamDestroy_v2") == 3


# -- double close, `with`, finalizers --------------------------------------------------------------
def test_double_close_is_harmless(backend: FakeDriver | None) -> None:
    m = StreamManager(StreamConfig(num_compute_streams=2))
    pool = StreamPool(m)
    ev = m.record_event("e", SID)
    for r in (ev, pool, m):
        r.close()
        r.close()
        assert r.closed
    if backend:
        assert backend.calls.count("cuStreamDestroy_v2") == 3


def test_with_blocks_close_and_a_closed_resource_cannot_be_entered(backend: FakeDriver | None) -> None:
    with StreamManager(StreamConfig(num_compute_streams=1)) as m:
        with StreamPool(m) as pool:
            pool.track(pool.stream_for(0))
        assert pool.closed and not m.closed  # the pool does not own its manager
        with Event(simulated=m.simulated) as ev:
            ev.record(m.stream(SID))
        assert ev.closed
    assert m.closed
    for r in (m, pool, ev):
        with pytest.raises(ResourceClosedError):
            with r:  # type: ignore[attr-defined]
                pass


def test_with_block_closes_even_when_the_body_raises() -> None:
    with pytest.raises(ZeroDivisionError):
        with StreamManager() as m:
            1 / 0  # noqa: B018
    assert m.closed


def test_finalizers_release_on_garbage_collection(backend: FakeDriver | None) -> None:
    m = StreamManager(StreamConfig(num_compute_streams=2))
    pool, ev = StreamPool(m), Event(m.simulated)
    pool.track(SID)
    finalizers: list[Any] = [m._finalizer, pool._finalizer, ev._finalizer]
    handles = list(backend.created_streams) if backend else []
    del m, pool, ev
    gc.collect()
    assert not any(f.alive for f in finalizers)
    if backend:
        assert set(handles) <= backend.destroyed and backend.calls.count("cuStreamDestroy_v2") == 3


def test_graph_finalizer_destroys_graph_and_executable(fake_gpu: FakeDriver) -> None:
    m = StreamManager(StreamConfig(num_compute_streams=1, enable_graph_capture=True))
    with m.capture(SID) as g:
        pass
    fin = g._finalizer
    del g
    gc.collect()
    assert not fin.alive
    assert fake_gpu.calls[-2:] == ["cuGraphExecDestroy", "cuGraphDestroy"]
    m.close()


def test_graph_in_contextlib_closing(fake_gpu: FakeDriver) -> None:
    with StreamManager(StreamConfig(num_compute_streams=1, enable_graph_capture=True)) as m:
        with contextlib.closing(m.capture(SID)) as g:
            with g:
                pass
            g.replay()
        assert g.closed and fake_gpu.calls[-2:] == ["cuGraphExecDestroy", "cuGraphDestroy"]
        g.close()
        assert fake_gpu.calls.count("cuGraphDestroy") == 1


def test_streams_made_before_a_failed_construction_are_destroyed(fake_gpu: FakeDriver) -> None:
    fake_gpu.fail_stream_create_at = 2
    with pytest.raises(DriverError, match="cuStreamCreateWithPriority"):
        StreamManager(StreamConfig(num_compute_streams=4))
    gc.collect()
    assert len(fake_gpu.created_streams) == 2 and set(fake_gpu.created_streams) <= fake_gpu.destroyed


# -- what outlives a closed manager ---------------------------------------------------------------
def test_events_outlive_their_manager(backend: FakeDriver | None) -> None:
    m = StreamManager()
    start = m.record_event("start", SID)
    end = m.record_event("end", SID)
    m.close()
    with pytest.raises(ResourceClosedError):
        m.event("start")
    end.synchronize()
    assert end.query() and start.elapsed_ms(end) >= 0
    start.close()
    with pytest.raises(ResourceClosedError, match="Event is closed: elapsed_ms"):
        end.elapsed_ms(start)  # a closed end event is refused too


def test_recording_a_name_whose_event_was_closed_makes_a_new_one() -> None:
    with StreamManager() as m:
        first = m.record_event("x", SID)
        first.close()
        second = m.record_event("x", SID)
        assert second is not first and not second.closed and m.event("x") is second


def test_graph_outlives_its_manager_but_not_its_capture_stream(fake_gpu: FakeDriver) -> None:
    m = StreamManager(StreamConfig(num_compute_streams=1, enable_graph_capture=True))
    with m.capture(SID) as g:
        pass
    m.close()
    with pytest.raises(ResourceClosedError, match="StreamManager is closed") as info:
        g.replay()  # its stream is destroyed
    assert "graph.replay(stream)" in str(info.value)
    with StreamManager(StreamConfig(num_compute_streams=1)) as other:
        g.replay(other.stream(SID))
        g.replay(other.stream(SID))
    assert g.replays == 2 and fake_gpu.calls.count("cuGraphLaunch") == 2
    with pytest.raises(ResourceClosedError, match="StreamManager"):
        with g:  # a new capture on the destroyed stream
            pass
    g.close()
    assert fake_gpu.calls[-2:] == ["cuGraphExecDestroy", "cuGraphDestroy"]


def test_closing_the_manager_inside_a_capture_ends_and_discards_it_first(fake_gpu: FakeDriver) -> None:
    m = StreamManager(StreamConfig(num_compute_streams=1, enable_graph_capture=True))
    with pytest.raises(ResourceClosedError, match="StreamManager is closed: capture") as info:
        with m.capture(SID) as g:
            m.close()
    assert "discarded the capture" in str(info.value)
    calls = fake_gpu.calls
    end = calls.index("cuStreamEndCapture")
    assert calls[end + 1] == "cuGraphDestroy"  # the partial graph
    assert end < calls.index("cuStreamSynchronize") < calls.index("cuStreamDestroy_v2")
    assert "cuGraphInstantiateWithFlags" not in calls and not m._capturing
    with pytest.raises(ConfigurationError, match="nothing captured"):
        g.replay(0)
    g.close()


def test_closing_the_graph_inside_its_capture_discards_it(fake_gpu: FakeDriver) -> None:
    with StreamManager(StreamConfig(num_compute_streams=1, enable_graph_capture=True)) as m:
        with pytest.raises(ResourceClosedError, match="CapturedGraph is closed: capture"):
            with m.capture(SID) as g:
                g.close()
        with pytest.raises(ZeroDivisionError):  # an error inside the block is not masked
            with m.capture(SID) as g2:
                g2.close()
                1 / 0  # noqa: B018
        m.sync_all()  # the stream is no longer capturing
    assert fake_gpu.calls.count("cuStreamEndCapture") == 2 and fake_gpu.calls.count("cuGraphDestroy") == 2


def test_a_graph_captures_once(fake_gpu: FakeDriver) -> None:
    with StreamManager(StreamConfig(num_compute_streams=1, enable_graph_capture=True)) as m:
        with m.capture(SID) as g:
            pass
        with pytest.raises(ConfigurationError, match="already been captured"):
            with g:
                pass
        g.close()


def test_pool_follows_its_manager(backend: FakeDriver | None) -> None:
    m = StreamManager(StreamConfig(num_compute_streams=2))
    pool = StreamPool(m)
    ev = pool.track(SID)
    m.close()
    assert pool.closed
    with pytest.raises(ResourceClosedError, match="StreamManager is closed: track"):
        pool.track(SID)
    assert ev.query()  # what track() returned is the caller's event
    with pytest.raises(ResourceClosedError, match="StreamManager is closed"):
        StreamPool(m)


def test_pool_counts_a_closed_tracked_event_as_done() -> None:
    with StreamManager(StreamConfig(num_compute_streams=2)) as m, StreamPool(m) as pool:
        pool.track(SID).close()
        assert pool.utilization_stats().outstanding[SID] == 0


def test_run_pipeline_refuses_a_closed_manager() -> None:
    m = StreamManager()
    m.close()
    host = np.zeros(8)
    with pytest.raises(ResourceClosedError, match="StreamManager is closed: run_pipeline"):
        run_pipeline(host, host.copy(), lambda *a: None, chunks=2, manager=m)


def test_run_pipeline_leaves_a_given_manager_open_and_closes_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[StreamManager] = []
    original_init = StreamManager.__init__

    def init(self: StreamManager, config: StreamConfig | None = None) -> None:
        original_init(self, config)
        made.append(self)

    monkeypatch.setattr(StreamManager, "__init__", init)
    host = np.zeros(8)
    with StreamManager() as given:
        run_pipeline(host, host.copy(), lambda *a: None, chunks=2, manager=given)
        assert not given.closed
        run_pipeline(host, host.copy(), lambda *a: None, chunks=2)
        assert len(made) == 2 and made[1].closed


# -- async ----------------------------------------------------------------------------------------
def test_awaiting_a_closed_event_raises(backend: FakeDriver | None) -> None:
    ev = Event(simulated=backend is None)
    ev.close()

    async def task() -> None:
        await ev

    with pytest.raises(ResourceClosedError, match="Event is closed: await"):
        asyncio.run(task())


def test_closing_an_event_a_task_awaits_raises_in_that_task(fake_gpu: FakeDriver) -> None:
    fake_gpu.query_result = 600  # CUDA_ERROR_NOT_READY: the task keeps polling
    ev = Event(simulated=False)
    ev.record(0)

    async def main() -> None:
        waiter = asyncio.ensure_future(_await(ev))
        await asyncio.sleep(0.005)
        assert not waiter.done()
        ev.close()
        with pytest.raises(ResourceClosedError, match="Event is closed: query"):
            await waiter

    async def _await(e: Event) -> None:
        await e

    asyncio.run(main())


def test_wait_releases_its_event_and_is_refused_after_close(backend: FakeDriver | None) -> None:
    m = StreamManager(StreamConfig(num_compute_streams=1))
    asyncio.run(m.wait(SID))  # still a coroutine: asyncio.run accepts it
    if backend:
        assert backend.calls.count("cuEventRecord") == 1 and backend.calls.count("cuEventQuery") >= 1
    m.close()
    with pytest.raises(ResourceClosedError, match="wait"):
        m.wait(SID)  # type: ignore[unused-coroutine]  # refused at the call: no coroutine is left un-awaited


def test_priority_range_still_answers_on_the_class() -> None:
    m = StreamManager()
    m.close()
    assert StreamManager.priority_range() == (0, 0)
    with pytest.raises(ResourceClosedError, match="priority_range"):
        m.priority_range()


def test_resource_closed_error_fields() -> None:
    err = ResourceClosedError("StreamManager", operation="sync_all")
    assert isinstance(err, RingKernelError)
    assert err.resource == "StreamManager" and err.operation == "sync_all"
    assert err.details["resource"] == "StreamManager" and err.hint == "create a new one"
    assert str(ResourceClosedError("Event")).startswith("Event is closed\n  hint: create a new one")


def test_a_failed_copy_is_a_driver_error_with_its_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """numba's copy failing (here a stand-in raising numba's error type) reaches the caller as
    a DriverError naming the copy, its size and its stream."""
    from ringkernel import DriverError
    from ringkernel.streams import manager as M

    class FakeNumbaError(Exception):
        code = 700

    FakeNumbaError.__module__ = "numba.cuda.cudadrv.driver"
    monkeypatch.setattr(M.driver, "error_name", lambda rc: "CUDA_ERROR_ILLEGAL_ADDRESS")
    monkeypatch.setattr(M.driver, "_error_string", lambda rc: "")
    monkeypatch.setattr(M.driver, "mem_get_info", lambda: (1 << 30, 4 << 30))

    def fail() -> None:
        raise FakeNumbaError("boom")

    with pytest.raises(DriverError) as err:
        M._copy(fail, "memcpy HtoD", 4096, M.StreamId.compute(1))
    e = err.value
    assert e.result == 700 and e.result_name == "CUDA_ERROR_ILLEGAL_ADDRESS"
    assert "Operation: memcpy HtoD (4096 bytes)" in str(e) and "Stream: Compute(1)" in str(e)
    assert "Memory: 3.0 GB / 4.0 GB used (75%)" in str(e) and "Restart the process" in str(e)


def test_run_pipeline_refuses_an_output_that_is_its_input() -> None:
    """run_pipeline(h, h, ...) applied the kernel once per timing pass (an adversarial trial: a
    +1 kernel gave 3.0); interleaved halves that share nothing are fine."""
    from ringkernel import ConfigurationError, KernelArgumentError

    host = np.zeros((8, 4))
    with pytest.raises(KernelArgumentError, match="share memory"):
        run_pipeline(host, host, lambda *a: None, chunks=2)
    with pytest.raises(KernelArgumentError, match="share memory"):
        run_pipeline(host[0:6], host[2:8], lambda *a: None, chunks=2)
    with pytest.raises(ConfigurationError, match="no rows"):
        run_pipeline(np.zeros((0, 4)), np.zeros((0, 4)), lambda *a: None, chunks=1)


def test_async_copies_refuse_streams_the_manager_does_not_have() -> None:
    """An out-of-range compute stream went to the default stream silently (an adversarial
    trial); TRANSFER without a transfer stream still means the default one, as documented."""
    from numba import cuda

    from ringkernel import ConfigurationError

    host = np.arange(8.0)
    dev = cuda.device_array(8)
    with StreamManager(StreamConfig(num_compute_streams=2, use_transfer_stream=False)) as m:
        with pytest.raises(ConfigurationError, match="no stream Compute"):
            m.async_memcpy_htod(dev, host, StreamId.compute(7))
        with pytest.raises(ConfigurationError, match="no stream Compute"):
            m.async_memcpy_dtoh(host, dev, StreamId.compute(5))
        m.async_memcpy_htod(dev, host)  # TRANSFER: the default stream here
        m.sync_all()
        np.testing.assert_array_equal(dev.copy_to_host(), host)
    with pytest.raises(ConfigurationError, match="int"):
        StreamId.compute(1.5)  # type: ignore[arg-type]


def test_device_array_transpose_and_iteration_follow_numpy() -> None:
    from ringkernel import ConfigurationError
    from ringkernel.memory import GpuMemoryPool

    with GpuMemoryPool() as pool:
        a = pool.device_array((2, 3, 4), np.float32)
        assert a.transpose(-1, 0, 1).shape == (4, 2, 3)
        with pytest.raises(ConfigurationError, match="out of range"):
            a.transpose(3, 4, 5)
        assert [r.shape for r in a] == [(3, 4), (3, 4)]
        with pytest.raises(TypeError, match="0-d"):
            list(pool.device_array((), np.float32))


def test_run_pipeline_refuses_arrays_it_cannot_chunk() -> None:
    from ringkernel import KernelArgumentError

    host = np.zeros((8, 4))
    with pytest.raises(KernelArgumentError, match="C-contiguous"):
        run_pipeline(host, np.asfortranarray(np.zeros((8, 4))), lambda *a: None, chunks=2)
    with pytest.raises(KernelArgumentError, match="C-contiguous"):
        run_pipeline([[0.0]] * 8, host, lambda *a: None, chunks=2)  # type: ignore[arg-type]
