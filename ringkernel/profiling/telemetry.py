"""OpenTelemetry metrics of GPU work: kernel durations, memory use, operation counts, throughput.

Needs the optional extra ``pip install "ringkernel[telemetry]"``. ::

    tel = GpuTelemetry(endpoint="http://collector:4318")   # OTLP/HTTP, exported every 10 s
    step(x)                                                # @gpu_kernel launches are measured
    tel.close()                                            # a last export, then nothing more

    tel = GpuTelemetry(meter_provider=provider)            # into a MeterProvider of yours
    tel = ctx.enable_telemetry()                           # launches made in ctx; ctx's pool

Instruments: ``gpu.kernel.duration`` (histogram, s; ``kernel``, ``stream``),
``gpu.memory.utilization`` (gauge; ``memory``: ``pool``, ``device``),
``gpu.operations.count`` (counter; ``kind``: ``launch``, ``alloc``) and
``gpu.throughput.elements_per_second`` (gauge; ``kernel``). docs/profiling.md says what each
measures. Launches are seen through the launch seam, after they were queued, so durations are
estimated: on a GPU from a timing event recorded right after each launch on its stream (see
``_Recorder._resolve``); on numba's simulator kernels run inside the launch call, so durations
are near zero there. While telemetry is on, its launch hook is registered: launches keep their
memoised paths and each reports to the hook (``ringkernel.kernel.hooks``).
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterator
from urllib.parse import urlsplit

from .. import _current, driver
from ..config import simulator_enabled
from ..errors import ConfigurationError, DriverError, ResourceClosedError
from ..kernel import LaunchEvent, add_launch_hook, remove_launch_hook

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Histogram, Observation
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider

__all__ = ["GpuTelemetry", "INSTALL_HINT"]

log = logging.getLogger(__name__)

#: What to run when the extra is missing.
INSTALL_HINT = 'pip install "ringkernel[telemetry]"'
#: Histogram buckets (seconds) for kernels: 1 us to 10 s.
_BUCKETS = tuple(m * 10.0**e for e in range(-6, 1) for m in (1, 2.5, 5)) + (10.0,)
_MAX_PENDING = 4096  # launches whose end is not known yet; beyond, launches go untimed
_REANCHOR_NS = 1_000_000_000


def _import_error(exc: ImportError) -> ConfigurationError:
    return ConfigurationError(
        f"telemetry needs the OpenTelemetry packages, and {exc.name or 'one of them'} is not installed",
        hint=f"install the telemetry extra: {INSTALL_HINT}", details={"missing": exc.name},
    )  # fmt: skip


class GpuTelemetry:
    """OpenTelemetry metrics of the GPU work ringkernel does (design proposal 11.7).

    Parameters
    ----------
    meter_provider:
        An ``opentelemetry.metrics.MeterProvider`` to create the instruments in (its readers
        and exporters are yours). ``None`` with no ``endpoint``: the global provider
        (``opentelemetry.metrics.get_meter_provider()``; nothing is exported until one is set).
    endpoint:
        ``http(s)://host:port[/path]`` of an OTLP/HTTP receiver: a provider with a periodic
        exporter is created (and shut down by :meth:`close`). A URL without a path gets the
        standard ``/v1/metrics``. Not together with ``meter_provider``.
    export_interval_s:
        How often that exporter sends (with ``endpoint`` only).
    pool:
        The ``GpuMemoryPool`` whose use ``gpu.memory.utilization`` and the ``alloc`` count
        report, or a callable returning it (or ``None`` while there is none). Default: the
        pool behind numba's allocations (:func:`ringkernel.memory.use_pool`), if any.
    context:
        A ``GpuContext``: count only launches made while it is current (``with ctx:``,
        ``ctx.launch``). Default: every launch. ``ctx.enable_telemetry()`` sets both.

    Raises
    ------
    ConfigurationError
        For a bad argument, or when the telemetry extra is not installed.
    """

    def __init__(
        self, meter_provider: Any = None, endpoint: str | None = None, *, export_interval_s: float = 10.0,
        pool: Any = None, context: Any = None,
    ) -> None:  # fmt: skip
        url = _check_endpoint(endpoint)
        if isinstance(export_interval_s, bool) or not isinstance(export_interval_s, (int, float)) or not (
            math.isfinite(export_interval_s) and export_interval_s > 0
        ):
            raise ConfigurationError(f"export_interval_s must be a positive number of seconds: {export_interval_s!r}")
        source = _pool_source(pool)
        try:
            from opentelemetry import metrics
        except ImportError as exc:
            raise _import_error(exc) from exc
        if meter_provider is not None and url is not None:
            raise ConfigurationError(
                "pass meter_provider or endpoint, not both",
                hint="add an OTLP exporter to your provider's readers, or pass only endpoint",
            )
        if meter_provider is not None and not isinstance(meter_provider, metrics.MeterProvider):
            raise ConfigurationError(
                f"meter_provider must be an opentelemetry.metrics.MeterProvider, got {type(meter_provider).__name__}"
            )
        owned = _otlp_provider(url, export_interval_s) if url is not None else None
        provider = owned or meter_provider or metrics.get_meter_provider()
        try:
            from .. import __version__

            meter = provider.get_meter("ringkernel", __version__)
            hist = meter.create_histogram(
                "gpu.kernel.duration", unit="s", description="GPU time of a kernel launch (estimated)",
                explicit_bucket_boundaries_advisory=_BUCKETS,
            )  # fmt: skip
            clock = _HostClock() if simulator_enabled() else _EventClock()
            ctx = weakref.ref(context) if context is not None else None
            rec = _Recorder(hist, metrics.Observation, ctx, source, clock)
            meter.create_observable_gauge(
                "gpu.memory.utilization", callbacks=[rec.observe_memory], unit="1",
                description="device memory in use as a fraction of the device's total",
            )  # fmt: skip
            meter.create_observable_counter(
                "gpu.operations.count", callbacks=[rec.observe_operations], unit="{operation}",
                description="GPU operations done through ringkernel, by kind",
            )  # fmt: skip
            meter.create_observable_gauge(
                "gpu.throughput.elements_per_second", callbacks=[rec.observe_throughput], unit="{element}/s",
                description="elements covered by a kernel's launches per second since the previous collection",
            )  # fmt: skip
        except BaseException:
            if owned is not None:
                owned.shutdown()
            raise
        self._recorder, self._owned, self.endpoint = rec, owned, url
        self._finalizer = weakref.finalize(self, _shutdown, add_launch_hook(rec), rec, owned)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def _check(self, operation: str) -> None:
        if self.closed:
            raise ResourceClosedError("GpuTelemetry", operation=operation, hint="enable telemetry again")

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Record the durations of launches the GPU finished, and with ``endpoint`` export
        now; False when the export did not finish in ``timeout_s``."""
        self._check("flush")
        self._recorder.resolve()
        if self._owned is not None:
            return bool(self._owned.force_flush(timeout_millis=int(timeout_s * 1000)))
        return True

    def close(self) -> None:
        """Unregister the launch hook; with ``endpoint``, export a last time and shut the
        exporter down. The instruments report nothing more. Idempotent."""
        self._finalizer()

    disable = close

    def __enter__(self) -> "GpuTelemetry":
        self._check("__enter__")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<GpuTelemetry {'closed' if self.closed else 'on'}, to {self.endpoint or 'a meter provider'}>"


def _check_endpoint(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    if not isinstance(endpoint, str):
        raise ConfigurationError(f"endpoint must be a URL string, got {type(endpoint).__name__}")
    try:
        parts = urlsplit(endpoint)
        parts.port  # raises for a port that is not a number
    except ValueError as exc:
        raise ConfigurationError(f"endpoint {endpoint!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"endpoint must be an http(s) URL of an OTLP/HTTP receiver, got {endpoint!r}",
            hint="e.g. http://localhost:4318 (a collector's OTLP/HTTP port)",
        )
    return endpoint if parts.path not in ("", "/") else endpoint.rstrip("/") + "/v1/metrics"


def _pool_source(pool: Any) -> Callable[[], Any]:
    if pool is None:
        from ..memory.plugin_state import plugin_pool

        return plugin_pool
    if hasattr(pool, "diagnostics"):
        return lambda: pool
    if callable(pool):
        return pool  # type: ignore[no-any-return]
    raise ConfigurationError(f"pool must be a GpuMemoryPool or a callable returning one, got {type(pool).__name__}")


def _otlp_provider(url: str, interval_s: float) -> "SdkMeterProvider":
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    except ImportError as exc:
        raise _import_error(exc) from exc
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=url), export_interval_millis=interval_s * 1000)
    # shut down by close() (or the finalizer), not a second time by the SDK's atexit hook
    return MeterProvider(metric_readers=[reader], shutdown_on_exit=False)


def _shutdown(hook: int, rec: "_Recorder", owned: "SdkMeterProvider | None") -> None:
    remove_launch_hook(hook)
    try:
        rec.resolve()
        if owned is not None:
            owned.shutdown()  # a last collection and export, with the callbacks still answering
    except Exception:  # noqa: BLE001 - closing must not fail (it also runs at interpreter exit)
        log.warning("GpuTelemetry: the last export failed", exc_info=True)
    finally:
        rec.closed = True
        rec.clock.close()


def _stream_attr(stream: Any) -> str:
    if stream is None or (isinstance(stream, int) and stream == 0):
        return "default"
    try:
        handle = driver.stream_handle(stream)
    except (TypeError, ValueError):  # the simulator's streams have no handle
        handle = id(stream)
    return f"0x{handle:x}" if handle else "default"


class _HostClock:
    """When did a launch end. ``mark`` right after it (``idle``: nothing else is pending),
    ``done``/``end_ns`` once the GPU is past it; ``skip``: a launch not to record. This one,
    the simulator's: the kernel ran inside the launch call, so it has ended by ``mark``."""

    def skip(self, stream: Any) -> bool:
        return False

    def mark(self, stream: Any, idle: bool) -> Any:
        return time.perf_counter_ns()

    def done(self, token: Any) -> bool:
        return True

    def end_ns(self, token: Any) -> int:
        return int(token)

    def release(self, token: Any) -> None:
        pass

    def close(self) -> None:
        pass


class _EventClock(_HostClock):
    """A GPU's: a timing event after each launch (pooled), put on the host's clock through an anchor
    event synchronised on a private idle stream. GPU and host clocks drift apart, so the
    anchor is renewed after a second, at a launch with nothing pending (whatever is pending
    was measured against the current anchor)."""

    def __init__(self) -> None:
        self._events: list[int] = []
        self._free: list[int] = []
        self._anchor = self._anchor_stream = 0
        self._anchor_ns: int | None = None

    def skip(self, stream: Any) -> bool:
        # An event recorded on a stream capturing a graph would land in the graph, and the
        # launch runs only when the graph does, which the hook does not see.
        return driver.stream_is_capturing(driver.stream_handle(stream))

    def mark(self, stream: Any, idle: bool) -> Any:
        now = time.perf_counter_ns()
        if idle and (self._anchor_ns is None or now - self._anchor_ns > _REANCHOR_NS):
            if not self._anchor:
                self._anchor_stream = driver.stream_create(0, non_blocking=True)
                self._anchor = driver.event_create()
            # The host clock read right around the record and its wait only: reading it before
            # creating the stream (which can take hundreds of microseconds the first time) put
            # the anchor that much too early and shortened the first durations (0.90x of CUDA
            # events on the H200).
            t0 = time.perf_counter_ns()
            driver.event_record(self._anchor, self._anchor_stream)
            driver.event_synchronize(self._anchor)
            self._anchor_ns = (t0 + time.perf_counter_ns()) // 2
        if not self._free:
            self._events.append(driver.event_create())
            self._free.append(self._events[-1])
        event = self._free.pop()
        driver.event_record(event, driver.stream_handle(stream))
        return event

    def done(self, token: Any) -> bool:
        return driver.event_done(token)

    def end_ns(self, token: Any) -> int:
        ms = driver.event_elapsed_ms(self._anchor, token)
        assert ms is not None and self._anchor_ns is not None  # done(token); the anchor was waited for
        return self._anchor_ns + int(ms * 1e6)

    def release(self, token: Any) -> None:
        self._free.append(token)

    def close(self) -> None:
        events, self._events, self._free = self._events + ([self._anchor] if self._anchor else []), [], []
        stream, self._anchor, self._anchor_stream, self._anchor_ns = self._anchor_stream, 0, 0, None
        try:
            for event in events:
                driver.event_destroy(event)
            if stream:
                driver.stream_destroy(stream)
        except DriverError:  # at interpreter exit the CUDA context may be gone first
            pass


class _Recorder:
    """The launch hook and the state the instruments read. It holds no ``GpuTelemetry``
    (the hook registry keeps it alive), so an unclosed ``GpuTelemetry`` is still collected."""

    def __init__(
        self, hist: "Histogram", observation: type["Observation"], context: "weakref.ref[Any] | None",
        pool: Callable[[], Any], clock: _HostClock,
    ) -> None:  # fmt: skip
        self.hist, self.observation, self.context, self.pool, self.clock = hist, observation, context, pool, clock
        self.lock = threading.Lock()
        self.closed = False
        self.launches = 0
        self.elements: dict[str, int] = {}
        self.elements_seen: dict[str, int] = {}  # at the previous throughput observation
        self.seen_ns = time.perf_counter_ns()
        self.pending: dict[str, collections.deque[tuple[str, int, Any]]] = {}
        self.n_pending = 0
        self.last_end: dict[str, int] = {}
        self.allocs = [0, 0, 0]  # base, the count last read, id() of the pool it was read from

    def __call__(self, event: LaunchEvent) -> None:
        if self.closed:
            return
        if self.context is not None:
            ctx = self.context()
            if ctx is None or _current.current() is not ctx:
                return
        if self.clock.skip(event.stream):
            return
        stream = _stream_attr(event.stream)
        with self.lock:
            self.launches += 1
            self.elements[event.kernel_name] = self.elements.get(event.kernel_name, 0) + event.elements
            if self.n_pending < _MAX_PENDING:
                token = self.clock.mark(event.stream, self.n_pending == 0)
                queue = self.pending.setdefault(stream, collections.deque())
                queue.append((event.kernel_name, event.timestamp_ns, token))
                self.n_pending += 1
            self._resolve()

    def resolve(self) -> None:
        with self.lock:
            self._resolve()

    def _resolve(self) -> None:
        """Record the launches that ended. A launch is taken to run from the later of its
        launch call and the end of the previous launch on its stream, to its event: exact for
        back-to-back launches (to the event's ~0.5 us), a few microseconds short on an idle
        stream (the GPU may start it before the call returned); other work queued on the
        stream between two launches counts toward the second."""
        for stream, queue in self.pending.items():
            while queue and self.clock.done(queue[0][2]):  # a stream's launches end in order
                kernel, launched_ns, token = queue.popleft()
                self.n_pending -= 1
                end = self.clock.end_ns(token)
                self.clock.release(token)
                start = max(launched_ns, self.last_end.get(stream, 0))
                self.last_end[stream] = end
                self.hist.record(max(end - start, 0) / 1e9, {"kernel": kernel, "stream": stream})
        if len(self.last_end) > 256:  # streams made and dropped: forget the long idle ones
            old = time.perf_counter_ns() - _REANCHOR_NS
            for stream in [k for k, t in self.last_end.items() if t < old and not self.pending.get(k)]:
                del self.last_end[stream]
                self.pending.pop(stream, None)

    # -- the observable instruments' callbacks, on the reader's thread ----------------------
    def _collecting(self) -> bool:
        """Callbacks run before the histogram is collected: resolving here puts the
        durations of the launches the GPU finished into this collection."""
        if self.closed:
            return False
        if not simulator_enabled():
            from numba import cuda

            cuda.current_context()  # the exporter's thread has none: numba's, where kernels run
        self.resolve()
        return True

    def observe_memory(self, options: "CallbackOptions") -> Iterator["Observation"]:
        if not self._collecting():
            return
        pool = self.pool()
        if pool is not None:  # its backend: the driver on a GPU, simulated memory on the simulator
            free, total = pool.backend.mem_info()
        elif simulator_enabled():
            return
        else:
            free, total = driver.mem_get_info()
        if total:
            if pool is not None:
                yield self.observation(pool.diagnostics().live_block_bytes / total, {"memory": "pool"})
            yield self.observation((total - free) / total, {"memory": "device"})

    def observe_operations(self, options: "CallbackOptions") -> Iterator["Observation"]:
        if not self._collecting():
            return
        yield self.observation(self.launches, {"kind": "launch"})
        pool = self.pool()
        if pool is not None:
            d = pool.diagnostics()
            n = d.hits + d.misses
            base, last, pid = self.allocs
            if id(pool) != pid or n < last:  # another pool, or its counts were reset
                base += last
            self.allocs = [base, n, id(pool)]
            yield self.observation(base + n, {"kind": "alloc"})

    def observe_throughput(self, options: "CallbackOptions") -> Iterator["Observation"]:
        if not self._collecting():
            return
        with self.lock:
            now = time.perf_counter_ns()
            seconds = max(now - self.seen_ns, 1) / 1e9
            rates = {k: (n - self.elements_seen.get(k, 0)) / seconds for k, n in self.elements.items()}
            self.elements_seen, self.seen_ns = dict(self.elements), now
        for kernel, rate in rates.items():
            yield self.observation(rate, {"kernel": kernel})
