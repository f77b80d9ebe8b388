"""OpenTelemetry metrics (ringkernel.profiling.telemetry) after real launches on the simulator:
an in-memory reader, and the OTLP/HTTP exporter against a local receiver."""

from __future__ import annotations

import builtins
import gzip
import http.server
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from numba import cuda

from ringkernel import ConfigurationError, GpuContext, ResourceClosedError, gpu_kernel, launch_hooks
from ringkernel.config import simulator_enabled
from ringkernel.memory import GpuMemoryPool
from ringkernel.profiling.telemetry import _BUCKETS, INSTALL_HINT, GpuTelemetry

pytestmark = pytest.mark.usefixtures("launch_reports")


@gpu_kernel
def scale(a, out):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < out.size:
        out[i] = 3 * a[i]


def _sdk() -> Any:
    pytest.importorskip("opentelemetry.sdk.metrics", reason='needs the telemetry extra: pip install -e ".[telemetry]"')
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader]), reader


def _points(reader: Any) -> dict[str, list[Any]]:
    """Metric name -> its data points, from one collection."""
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def _by(points: list[Any], key: str) -> dict[Any, Any]:
    return {p.attributes[key]: p for p in points}


def test_metrics_after_launches(rng: np.random.Generator) -> None:
    provider, reader = _sdk()
    n1, n2 = int(rng.integers(100, 2000)), int(rng.integers(100, 2000))
    a1, a2 = cuda.to_device(rng.random(n1)), cuda.to_device(rng.random(n2))
    o1, o2 = cuda.device_array(n1), cuda.device_array(n2)
    pool = GpuMemoryPool()
    blocks = [pool.device_array(int(k), np.float32) for k in rng.integers(10, 5000, size=3)]
    stream = cuda.stream()
    tel = GpuTelemetry(meter_provider=provider, pool=pool)
    try:
        t0 = time.perf_counter()
        scale(a1, o1)
        scale(a2, o2, stream=stream)
        scale[4, 128](a1, o1)
        cuda.synchronize()  # on a GPU: every launch ended, so the collection times them all
        seconds = time.perf_counter() - t0
        m = _points(reader)
    finally:
        tel.close()
        provider.shutdown()
    np.testing.assert_allclose(o2.copy_to_host(), 3 * a2.copy_to_host())

    durations = m["gpu.kernel.duration"]
    assert sum(p.count for p in durations) == 3
    assert {p.attributes["kernel"] for p in durations} == {"scale"}
    streams = {p.attributes["stream"]: p.count for p in durations}
    assert streams.pop("default") == 2 and list(streams.values()) == [1]  # the other stream, by handle
    assert all(0 <= p.min <= p.max <= seconds for p in durations)

    ops = _by(m["gpu.operations.count"], "kind")
    assert ops["launch"].value == 3
    d = pool.diagnostics()
    assert ops["alloc"].value == d.hits + d.misses == 3

    free, total = pool.backend.mem_info()
    mem = _by(m["gpu.memory.utilization"], "memory")
    assert mem["pool"].value == pytest.approx(d.live_block_bytes / total)
    assert mem["device"].value == pytest.approx((total - free) / total, abs=0.01)
    assert 0 < mem["pool"].value <= mem["device"].value <= 1

    (rate,) = m["gpu.throughput.elements_per_second"]
    assert rate.attributes["kernel"] == "scale"
    assert rate.value >= (n1 + n2) / 10  # elements per second since enabling (well under 10 s)
    del blocks


def test_throughput_is_per_collection_and_counts_are_cumulative(rng: np.random.Generator) -> None:
    provider, reader = _sdk()
    n = int(rng.integers(100, 1000))
    a, out = cuda.to_device(rng.random(n)), cuda.device_array(n)
    with GpuTelemetry(meter_provider=provider) as tel:
        scale(a, out)
        first = _points(reader)
        second = _points(reader)  # nothing launched in between
        scale(a, out)
        third = _points(reader)
    assert tel.closed
    assert [_by(m["gpu.operations.count"], "kind")["launch"].value for m in (first, second, third)] == [1, 1, 2]
    assert [m["gpu.throughput.elements_per_second"][0].value > 0 for m in (first, second, third)] == [True, False, True]
    assert "alloc" not in _by(first["gpu.operations.count"], "kind")  # no pool: numba's own allocations
    if simulator_enabled():
        assert "gpu.memory.utilization" not in first  # no pool, and no device memory to ask about
    provider.shutdown()


def test_duration_arithmetic_with_a_scripted_clock(rng: np.random.Generator) -> None:
    """The GPU path's rule, with the end times a CUDA event would give: a launch runs from
    the later of its launch call and the previous launch's end on its stream."""
    provider, reader = _sdk()
    a, out = cuda.to_device(rng.random(64)), cuda.device_array(64)

    class Clock:
        def __init__(self) -> None:
            self.ends: list[int] = []
            self.ready = False

        def skip(self, stream: Any) -> bool:
            return False

        def mark(self, stream: Any, idle: bool) -> int:
            self.ends.append(time.perf_counter_ns() + 1_000_000_000 * (2 * len(self.ends) + 1))  # 1 s, then 3 s on
            return len(self.ends) - 1

        def done(self, token: int) -> bool:
            return self.ready

        def end_ns(self, token: int) -> int:
            return self.ends[token]

        def release(self, token: int) -> None: ...

        def close(self) -> None: ...

    with GpuTelemetry(meter_provider=provider) as tel:
        clock = tel._recorder.clock = Clock()  # type: ignore[assignment]
        scale(a, out)
        scale(a, out)  # queued behind the first: starts at its end
        assert not _points(reader).get("gpu.kernel.duration")  # not ended yet
        clock.ready = True
        tel.flush()
        (p,) = _points(reader)["gpu.kernel.duration"]
    assert p.count == 2
    assert p.max == pytest.approx((clock.ends[1] - clock.ends[0]) / 1e9)  # the second: from the first's end
    assert 1.0 <= p.min < 1.1  # the first: from its launch call (just before its mark)
    provider.shutdown()


class _FakeGpu:
    """The driver calls of the GPU timing path: each kernel runs ``kernel_ns`` on its stream,
    from when its event is recorded or the stream's previous kernel ended; events complete
    when the test says so."""

    def __init__(self, kernel_ns: int) -> None:
        self.kernel_ns, self.ids = kernel_ns, iter(range(1, 1 << 30))
        self.end: dict[int, int] = {}
        self.busy: dict[int, int] = {}
        self.created: list[int] = []
        self.destroyed: list[int] = []
        self.streams: list[int] = []
        self.anchor_records = 0
        self.finished = self.capturing = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from ringkernel import driver
        from ringkernel.profiling import telemetry

        monkeypatch.setattr(telemetry, "simulator_enabled", lambda: False)
        for name in ("event_create", "event_record", "event_synchronize", "event_done", "event_elapsed_ms",
                     "event_destroy", "stream_create", "stream_destroy", "stream_is_capturing", "stream_handle",
                     "mem_get_info"):  # fmt: skip
            monkeypatch.setattr(driver, name, getattr(self, name))

    def event_create(self) -> int:
        self.created.append(next(self.ids))
        return self.created[-1]

    def event_record(self, event: int, stream: int) -> None:
        now = time.perf_counter_ns()
        if stream in self.streams:  # the anchor's stream: idle, the event completes at once
            self.anchor_records += 1
            self.end[event] = now
        else:
            self.end[event] = self.busy[stream] = max(now, self.busy.get(stream, 0)) + self.kernel_ns

    def event_synchronize(self, event: int) -> None: ...

    def event_done(self, event: int) -> bool:
        return self.finished

    def event_elapsed_ms(self, start: int, end: int) -> float:
        return (self.end[end] - self.end[start]) / 1e6

    def event_destroy(self, event: int) -> None:
        self.destroyed.append(event)

    def stream_create(self, priority: int, *, non_blocking: bool = True) -> int:
        self.streams.append(0xA000 + len(self.streams))
        return self.streams[-1]

    def stream_destroy(self, handle: int) -> None:
        self.streams.remove(handle)

    def stream_is_capturing(self, handle: int) -> bool:
        return self.capturing

    def stream_handle(self, stream: Any) -> int:
        return 0 if stream is None or stream == 0 else id(stream)

    def mem_get_info(self) -> tuple[int, int]:
        return 3 << 30, 4 << 30


def test_gpu_timing_path_against_a_fake_driver(monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator) -> None:
    """The CUDA-event path's bookkeeping (anchor, pooled events, graph capture, release) with
    the driver calls faked: kernels of 1 s, queued back to back."""
    provider, reader = _sdk()
    gpu = _FakeGpu(kernel_ns=1_000_000_000)
    gpu.install(monkeypatch)
    a, out = cuda.to_device(rng.random(64)), cuda.device_array(64)
    with GpuTelemetry(meter_provider=provider) as tel:
        scale(a, out)
        scale(a, out)
        gpu.capturing = True
        scale(a, out)  # captured into a graph: not recorded
        gpu.capturing = False
        assert gpu.anchor_records == 1 and len(gpu.created) == 3  # the anchor and two launch events
        m = _points(reader)
        assert not m.get("gpu.kernel.duration")  # not finished yet
        gpu.finished = True
        (p,) = _points(reader)["gpu.kernel.duration"]
        assert p.count == 2 and p.attributes == {"kernel": "scale", "stream": "default"}
        assert p.max == pytest.approx(1.0, abs=0.05)  # the first: from its launch call (ms before its record)
        assert p.min == pytest.approx(1.0, abs=1e-6)  # the second: queued, from the first's end
        assert _by(_points(reader)["gpu.memory.utilization"], "memory")["device"].value == 0.25
        monkeypatch.setattr("ringkernel.profiling.telemetry._REANCHOR_NS", 0)
        scale(a, out)  # nothing pending: a new anchor, and a pooled event
        assert gpu.anchor_records == 2 and len(gpu.created) == 3
        ops = _by(_points(reader)["gpu.operations.count"], "kind")
    assert ops["launch"].value == 3
    assert sorted(gpu.destroyed) == sorted(gpu.created) and not gpu.streams  # all released at close
    provider.shutdown()


def test_otlp_http_export_to_a_local_receiver(rng: np.random.Generator) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="needs the telemetry extra")
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    with _Receiver() as rx:
        n = int(rng.integers(100, 1000))
        a, out = cuda.to_device(rng.random(n)), cuda.device_array(n)
        tel = GpuTelemetry(endpoint=f"http://127.0.0.1:{rx.port}", export_interval_s=60, pool=GpuMemoryPool())
        assert tel.endpoint == f"http://127.0.0.1:{rx.port}/v1/metrics"
        scale(a, out)
        scale(a, out, stream=cuda.stream())
        cuda.synchronize()
        assert tel.flush(timeout_s=10)
        tel.close()  # a last export
        assert rx.paths and set(rx.paths) == {"/v1/metrics"}
        assert rx.content_types == {"application/x-protobuf"}
        bodies = list(rx.bodies)
    metrics: dict[str, list[Any]] = {}
    resources = set()
    for body in bodies:
        req = ExportMetricsServiceRequest()
        req.ParseFromString(body)
        for rm in req.resource_metrics:
            resources |= {(kv.key, kv.value.string_value) for kv in rm.resource.attributes}
            for sm in rm.scope_metrics:
                assert sm.scope.name == "ringkernel"
                for m in sm.metrics:
                    metrics.setdefault(m.name, []).append(m)
    assert set(metrics) == {
        "gpu.kernel.duration", "gpu.memory.utilization", "gpu.operations.count", "gpu.throughput.elements_per_second",
    }  # fmt: skip

    def attrs(m: Any, field: str) -> list[dict[str, Any]]:
        return [{kv.key: kv.value.string_value for kv in p.attributes} for p in getattr(m, field).data_points]

    last = {name: ms[-1] for name, ms in metrics.items()}
    hist = last["gpu.kernel.duration"]
    assert hist.unit == "s" and sum(p.count for p in hist.histogram.data_points) == 2
    assert all(list(p.explicit_bounds) == list(_BUCKETS) for p in hist.histogram.data_points)  # 1 us .. 10 s
    assert sorted(a["stream"] == "default" for a in attrs(hist, "histogram")) == [False, True]
    assert all(a["kernel"] == "scale" for a in attrs(hist, "histogram"))
    ops = {p.attributes[0].value.string_value: p.as_int for p in last["gpu.operations.count"].sum.data_points}
    assert ops["launch"] == 2 and last["gpu.operations.count"].sum.is_monotonic
    assert {a["memory"] for a in attrs(last["gpu.memory.utilization"], "gauge")} == {"pool", "device"}
    assert attrs(last["gpu.throughput.elements_per_second"], "gauge") == [{"kernel": "scale"}]
    assert ("telemetry.sdk.name", "opentelemetry") in resources


class _Receiver:
    """An OTLP/HTTP receiver on 127.0.0.1 (random port) in a thread: keeps each posted body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        self.content_types: set[str] = set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                outer.paths.append(self.path)
                outer.content_types.add(self.headers.get("Content-Type", ""))
                outer.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "_Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_context_telemetry_counts_its_own_launches(rng: np.random.Generator) -> None:
    provider, reader = _sdk()
    a, out = cuda.to_device(rng.random(200)), cuda.device_array(200)
    before = len(launch_hooks())
    with GpuContext(streams=2) as ctx:
        tel = ctx.enable_telemetry(meter_provider=provider)
        with pytest.raises(ConfigurationError, match="already"):
            ctx.enable_telemetry(meter_provider=provider)
        x = ctx.allocate(1000)
        ctx.launch(scale, a, out)
        scale(a, out)  # current context too: inside `with ctx:`
        m = _points(reader)
        assert len(launch_hooks()) == before + 1
    scale(a, out)  # outside: not counted (and the context closed its telemetry)
    assert tel.closed and len(launch_hooks()) == before
    assert _by(m["gpu.operations.count"], "kind")["launch"].value == 2
    assert _by(m["gpu.operations.count"], "kind")["alloc"].value == 1
    assert _by(m["gpu.memory.utilization"], "memory")["pool"].value > 0
    assert _points(reader).get("gpu.operations.count", []) == []  # closed: reports nothing
    del x
    provider.shutdown()


def test_use_after_close_and_no_hook_while_off() -> None:
    provider, _ = _sdk()
    before = len(launch_hooks())
    tel = GpuTelemetry(meter_provider=provider)
    assert len(launch_hooks()) == before + 1
    tel.disable()
    tel.close()  # idempotent
    assert tel.closed and len(launch_hooks()) == before
    with pytest.raises(ResourceClosedError, match="GpuTelemetry is closed: flush"):
        tel.flush()
    with pytest.raises(ResourceClosedError):
        with tel:
            pass
    with GpuTelemetry() as tel:  # OpenTelemetry's global provider (exports nothing until one is set)
        assert "meter provider" in repr(tel) and len(launch_hooks()) == before + 1
    assert "closed" in repr(tel)
    ctx = GpuContext()
    ctx.close()
    with pytest.raises(ResourceClosedError, match="enable_telemetry"):
        ctx.enable_telemetry(meter_provider=provider)
    provider.shutdown()


def test_an_unclosed_telemetry_is_collected() -> None:
    import gc

    provider, _ = _sdk()
    before = len(launch_hooks())
    GpuTelemetry(meter_provider=provider)
    gc.collect()
    assert len(launch_hooks()) == before
    provider.shutdown()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"endpoint": "localhost:4318"}, "http"),
        ({"endpoint": "ftp://collector/v1/metrics"}, "http"),
        ({"endpoint": "http://:4318"}, "http"),
        ({"endpoint": "http://collector:port"}, "not a valid URL"),
        ({"endpoint": 4318}, "URL string"),
        ({"meter_provider": "provider"}, "MeterProvider"),
        ({"meter_provider": object()}, "MeterProvider"),
        ({"export_interval_s": 0}, "export_interval_s"),
        ({"export_interval_s": float("nan")}, "export_interval_s"),
        ({"pool": 3}, "pool"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    pytest.importorskip("opentelemetry.metrics", reason="needs the telemetry extra")
    before = len(launch_hooks())
    with pytest.raises(ConfigurationError, match=match):
        GpuTelemetry(**kwargs)
    assert len(launch_hooks()) == before


def test_meter_provider_and_endpoint_together() -> None:
    provider, _ = _sdk()
    with pytest.raises(ConfigurationError, match="not both"):
        GpuTelemetry(provider, "http://127.0.0.1:4318")
    provider.shutdown()


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs with or without OpenTelemetry installed: its import is made to fail."""
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.delitem(sys.modules, name)
    real_import = builtins.__import__

    def no_otel(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_otel)
    before = len(launch_hooks())
    with pytest.raises(ConfigurationError, match="OpenTelemetry") as info:
        GpuTelemetry()
    assert INSTALL_HINT in str(info.value) and info.value.hint and INSTALL_HINT in info.value.hint
    assert isinstance(info.value.__cause__, ImportError)
    with GpuContext() as ctx, pytest.raises(ConfigurationError, match=r"ringkernel\[telemetry\]"):
        ctx.enable_telemetry(endpoint="http://127.0.0.1:4318")
    assert len(launch_hooks()) == before


@pytest.mark.gpu
def test_kernel_durations_agree_with_cuda_events(rng: np.random.Generator) -> None:
    """On a GPU: the histogram's durations of back-to-back launches against CUDA events
    recorded around the same launches."""
    provider, reader = _sdk()
    n = 1 << 25  # ~0.1 ms a launch on an H200: the launches queue back to back
    a, out = cuda.to_device(rng.random(n)), cuda.device_array(n)
    stream = cuda.stream()
    scale(a, out, stream=stream)  # compiled and warm
    stream.synchronize()
    start, end = cuda.event(), cuda.event()
    with GpuTelemetry(meter_provider=provider) as tel:
        scale(a, out, stream=stream)  # the clock's one-off set-up (its anchor) is not in the timed run
        stream.synchronize()
        tel.flush()
        (warm,) = _points(reader)["gpu.kernel.duration"]  # cumulative: subtracted below
        start.record(stream)
        for _ in range(20):
            scale(a, out, stream=stream)
        end.record(stream)
        end.synchronize()
        tel.flush()
        (p,) = _points(reader)["gpu.kernel.duration"]
    provider.shutdown()
    assert warm.count == 1 and p.count == 21
    p_sum = p.sum - warm.sum
    events_s = cuda.event_elapsed_time(start, end) / 1e3
    assert 0.9 * events_s <= p_sum <= 1.1 * events_s


@pytest.fixture(autouse=True)
def _no_hook_left() -> Iterator[None]:
    before = len(launch_hooks())
    yield
    assert len(launch_hooks()) == before, "a test left a launch hook registered"
