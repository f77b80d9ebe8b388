"""Running benchmarks: host callables on a monotonic clock, GPU work between CUDA events.

GPU hygiene, in order, for every GPU benchmark:

1. ``warmup_iterations`` untimed calls, then a device synchronise: JIT compilation, module
   loading and clock ramp-up never fall inside a measurement;
2. the batch size: work shorter than ``target_batch_time_ms`` is timed as a batch of
   back-to-back calls between one event pair (time / batch), so event resolution does not
   dominate;
3. for each sample: a one-thread *spin kernel* (``nanosleep`` in a loop) keeps the GPU busy
   while the host enqueues the whole batch, then the optional L2 flush (a kernel
   overwriting twice the L2's size), then start event, the batch, end event. Both the
   spin and the flush run before the start event, so neither is timed, and because every
   launch is queued before the start event executes, the host's launch overhead never
   leaves the GPU idle inside the window. Whether that held is checked, not assumed: the
   start event must still be pending when the host has enqueued the batch
   (``cudaEventQuery``); if not, the sample is retaken with a longer spin. This is the
   technique of NVIDIA's nvbench ("blocking kernel"). ``cover_launch_overhead=False``
   measures instead what back-to-back launches from this host sustain.

Under numba's CUDA simulator events carry no timing, so GPU benchmarks fall back to the
host clock around a synchronised batch (the simulator is synchronous anyway); results
say which timer was used in ``metadata['timer']``.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TextIO

import numpy as np

from ..driver import event_done
from ..errors import BenchmarkError, ConfigurationError
from . import _fields
from .environment import EnvironmentFingerprint
from .results import BenchmarkConfig, BenchmarkResult

__all__ = ["Benchmark", "BenchmarkRunner", "Progress", "GpuTimer"]

log = logging.getLogger(__name__)

_MAX_BATCH = 100_000


@dataclass(frozen=True)
class Benchmark:
    """A benchmark case: ``fn()`` does ``workload_size`` units of work.

    ``gpu=True`` times it with CUDA events (``fn`` only enqueues work); ``setup()``, if
    given, runs before every sample, untimed.
    """

    name: str
    fn: Callable[[], Any]
    workload_size: int
    unit: str = "elements"
    gpu: bool = True
    setup: Callable[[], Any] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    batch: int | None = None

    def __post_init__(self) -> None:
        # Checked when the case is defined, not after its measurement (a bad size used to be
        # refused only once every sample had been taken, and lost the suite's other results).
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(f"a benchmark needs a non-empty name, got {self.name!r}")
        size = self.workload_size
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 0 < size <= _fields.MAX_WORKLOAD:
            raise ConfigurationError(
                f"benchmark '{self.name}': workload_size must be a positive int up to 2**63-1, got {size!r}",
                hint="the units of work one call does (elements, bytes, ...), e.g. 1 << 20",
            )
        object.__setattr__(self, "workload_size", int(size))
        if not callable(self.fn):
            raise ConfigurationError(f"benchmark '{self.name}': fn must be callable, got {self.fn!r}")
        if self.setup is not None and not callable(self.setup):
            raise ConfigurationError(f"benchmark '{self.name}': setup must be callable or None, got {self.setup!r}")
        if self.batch is not None and (isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1):
            raise ConfigurationError(f"benchmark '{self.name}': batch must be a positive int or None, got {self.batch!r}")
        object.__setattr__(self, "metadata", _fields.json_ready(dict(self.metadata), f"benchmark '{self.name}' metadata"))


class Progress:
    """A one-line progress bar on a terminal; silent when the stream is not a TTY."""

    def __init__(self, total: int, label: str = "", *, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.total = max(1, total)
        self.label = label
        self.done = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0

    def update(self, n: int = 1, note: str = "") -> None:
        self.done = min(self.total, self.done + n)
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last_draw < 0.05 and self.done < self.total:
            return  # redraw at most 20 times a second
        self._last_draw = now
        width = 24
        filled = int(width * self.done / self.total)
        bar = "#" * filled + "-" * (width - filled)
        text = f"\r{self.label} [{bar}] {self.done}/{self.total} {now - self.start:5.1f}s {note}"
        self.stream.write(text[:160].ljust(80))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GpuTimer:
    """Times enqueued GPU work on one stream; see the module docstring for the protocol.

    ``flush_l2`` allocates a scratch buffer of twice the L2 size once, lazily.
    """

    def __init__(self, stream: Any = None, *, cover_launch_overhead: bool = True) -> None:
        from ..config import require_backend

        self.simulated = require_backend()  # before numba.cuda is imported; DeviceError without a GPU
        from numba import cuda

        self._cuda = cuda
        self._stream_arg = stream  # None: the default stream
        self.stream: Any = stream if stream is not None else 0
        if not self.simulated:
            self._start = cuda.event(timing=True)
            self._end = cuda.event(timing=True)
        self._scratch: Any = None
        self.cover = cover_launch_overhead and not self.simulated
        self.method = "host clock (simulator)" if self.simulated else (
            "cuda events, launches queued behind a spin kernel" if self.cover else "cuda events"
        )
        self.host_enqueue_s = 0.0  # largest per-call host enqueue time seen
        self.samples = 0
        self.covered_samples = 0

    def synchronize(self) -> None:
        if self._stream_arg is None:
            self._cuda.synchronize()
        else:
            self.stream.synchronize()

    def flush_l2(self) -> None:
        """Overwrite twice the L2's capacity on the stream (no-op on the simulator)."""
        if self.simulated:
            return
        if self._scratch is None:
            from ..device import GpuArchitecture

            n = max(1 << 20, 2 * GpuArchitecture.current().l2_cache_bytes // 4)
            self._scratch = self._cuda.device_array(n, dtype="float32")
        _scribble(self._scratch, 1.0, stream=self._stream_arg)

    def time_batch(self, fn: Callable[[], Any], batch: int, *, flush: bool = False) -> float:
        """Milliseconds per call of ``fn`` over ``batch`` back-to-back calls."""
        if self.simulated:
            self.synchronize()
            t = time.perf_counter()
            for _ in range(batch):
                fn()
            self.synchronize()
            return (time.perf_counter() - t) * 1e3 / batch
        scale = 1.5
        for _attempt in range(_MAX_COVER_ATTEMPTS):
            if self.cover:
                # Long enough for the host to enqueue the batch (+20 us for the event records).
                spin_ns = int(scale * self.host_enqueue_s * batch * 1e9) + 20_000
                _spin(min(spin_ns, _MAX_SPIN_NS), self._stream_arg)
            if flush:
                self.flush_l2()
            self._start.record(self.stream)
            t = time.perf_counter()
            for _ in range(batch):
                fn()
            host = (time.perf_counter() - t) / batch
            self._end.record(self.stream)
            # Still pending: the GPU had not reached the start event when the last launch was
            # queued, so no launch gap can lie inside the window.
            covered = not event_done(self._start)
            self._end.synchronize()
            ms = self._cuda.event_elapsed_time(self._start, self._end) / batch
            # A decaying maximum: one slow call (a library compiling on first use) must not
            # make every later sample spin for seconds; an estimate that falls too short is
            # caught below (not covered: retry with a longer spin).
            self.host_enqueue_s = max(host, 0.5 * self.host_enqueue_s)
            if covered or not self.cover:
                break
            scale *= 2
        self.samples += 1
        self.covered_samples += int(covered)
        return ms


_MAX_COVER_ATTEMPTS = 4
_MAX_SPIN_NS = 2_000_000_000
_SPIN: Any = None


def _spin(ns: int, stream: Any) -> None:
    """Keep the GPU busy for about ``ns`` nanoseconds (one thread, ``nanosleep`` in 1 us steps)."""
    global _SPIN
    if _SPIN is None:
        from numba import cuda

        @cuda.jit
        def spin(steps):  # type: ignore[no-untyped-def]
            for _ in range(steps):
                cuda.nanosleep(1000)

        _SPIN = spin
    _SPIN[1, 1, stream if stream is not None else 0](max(1, ns // 1000))


def _scribble(buf: Any, value: float, *, stream: Any) -> None:
    from ..kernel import gpu_kernel
    from ..kernel.intrinsics import global_thread_id, grid_stride

    global _SCRIBBLE
    if _SCRIBBLE is None:

        @gpu_kernel(grid_stride=True)
        def l2_flush(out, v):  # type: ignore[no-untyped-def]
            for i in range(global_thread_id(), out.size, grid_stride()):
                out[i] = v

        _SCRIBBLE = l2_flush
    _SCRIBBLE(buf, value, stream=stream)


_SCRIBBLE: Any = None


class BenchmarkRunner:
    """Runs benchmarks under a :class:`BenchmarkConfig` and returns :class:`BenchmarkResult` s.

    Parameters
    ----------
    config:
        Iterations, time limits, batching and L2 flushing.
    progress:
        Show a progress bar (default: only when stderr is a terminal).
    environment:
        Fingerprint attached to results (default: captured on first use).
    """

    def __init__(
        self,
        config: BenchmarkConfig | None = None,
        *,
        progress: bool | None = None,
        environment: EnvironmentFingerprint | None = None,
    ) -> None:
        self.config = config or BenchmarkConfig()
        self.progress = progress
        self._environment = environment
        self._timers: dict[int, GpuTimer] = {}

    @property
    def environment(self) -> EnvironmentFingerprint:
        if self._environment is None:
            self._environment = EnvironmentFingerprint.capture()
        return self._environment

    # -- sampling loop ----------------------------------------------------------------
    def _sample(self, name: str, measure: Callable[[], float], setup: Callable[[], Any] | None) -> list[float]:
        cfg = self.config
        samples: list[float] = []
        begun = time.perf_counter()
        with Progress(cfg.measurement_iterations, name, enabled=self.progress) as bar:
            while True:
                if setup is not None:
                    setup()
                ms = measure()
                if not math.isfinite(ms) or ms <= 0:
                    raise BenchmarkError(
                        f"benchmark '{name}': a sample measured {ms!r} ms",
                        hint="the timed function must do work (GPU benchmarks: enqueue it on the timed stream)",
                    )
                samples.append(ms)
                bar.update(1, f"{ms:.4g} ms")
                elapsed = time.perf_counter() - begun
                enough = len(samples) >= cfg.measurement_iterations and elapsed >= cfg.min_time_s
                if enough or (elapsed >= cfg.max_time_s and len(samples) >= 2):
                    break
        if len(samples) < cfg.measurement_iterations:
            log.warning(
                "benchmark %s: max_time_s=%s reached after %d of %d samples",
                name, cfg.max_time_s, len(samples), cfg.measurement_iterations,
            )  # fmt: skip
        return samples

    # -- host -------------------------------------------------------------------------
    def run_host(
        self,
        name: str,
        fn: Callable[[], Any],
        workload_size: int,
        *,
        unit: str = "elements",
        setup: Callable[[], Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> BenchmarkResult:
        """Time a host callable with ``time.perf_counter`` (monotonic, highest resolution)."""
        if not callable(fn):
            raise ConfigurationError(f"benchmark '{name}': fn must be callable, got {fn!r}")
        for _ in range(self.config.warmup_iterations):
            fn()

        def measure() -> float:
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3

        times = self._sample(name, measure, setup)
        meta = {"timer": "host perf_counter", "warmup_iterations": self.config.warmup_iterations, **(metadata or {})}
        return BenchmarkResult.from_measurements(
            name, workload_size, [t / 1e3 for t in times], unit=unit, metadata=meta, environment=self.environment
        )

    # -- GPU --------------------------------------------------------------------------
    def timer(self, stream: Any = None) -> GpuTimer:
        key = id(stream) if stream is not None else 0
        t = self._timers.get(key)
        if t is None:
            t = self._timers[key] = GpuTimer(stream, cover_launch_overhead=self.config.cover_launch_overhead)
        return t

    def run_gpu(
        self,
        name: str,
        fn: Callable[[], Any],
        workload_size: int,
        *,
        unit: str = "elements",
        stream: Any = None,
        setup: Callable[[], Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        batch: int | None = None,
        flush_l2: bool | None = None,
    ) -> BenchmarkResult:
        """Time GPU work that ``fn`` enqueues on ``stream`` (default stream if ``None``)."""
        if not callable(fn):
            raise ConfigurationError(f"benchmark '{name}': fn must be callable, got {fn!r}")
        cfg = self.config
        flush = cfg.flush_l2 if flush_l2 is None else flush_l2
        timer = self.timer(stream)
        for _ in range(cfg.warmup_iterations):
            t = time.perf_counter()
            fn()
            timer.host_enqueue_s = max(timer.host_enqueue_s, time.perf_counter() - t)
        timer.synchronize()
        if batch is None:
            if flush:
                batch = 1  # every timed call must start with a cold L2
            else:
                one = timer.time_batch(fn, 10)
                batch = 1 if one <= 0 else math.ceil(cfg.target_batch_time_ms / one)
                # keep the host's enqueueing of one sample under ~50 ms
                host_cap = max(1, int(0.05 / max(timer.host_enqueue_s, 1e-7)))
                batch = max(1, min(batch, host_cap, _MAX_BATCH))
        elif isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigurationError(f"benchmark '{name}': batch must be a positive int, got {batch!r}")

        def measure() -> float:
            return timer.time_batch(fn, batch, flush=flush)

        before = (timer.samples, timer.covered_samples)
        times = self._sample(name, measure, setup)
        taken, covered = timer.samples - before[0], timer.covered_samples - before[1]
        meta: dict[str, Any] = {
            "timer": timer.method,
            "batch": batch,
            "flush_l2": flush,
            "warmup_iterations": cfg.warmup_iterations,
            "host_enqueue_us_per_call": timer.host_enqueue_s * 1e6,
        }
        if timer.cover:
            meta["covered_samples"] = f"{covered}/{taken}"
            if covered < taken:
                log.warning(
                    "benchmark %s: %d of %d samples may include host launch gaps (the spin did not cover "
                    "the host's enqueueing)", name, taken - covered, taken,
                )  # fmt: skip
        meta.update(metadata or {})
        return BenchmarkResult.from_measurements(
            name, workload_size, [t / 1e3 for t in times], unit=unit, metadata=meta, environment=self.environment
        )

    def run(self, benchmark: Benchmark) -> BenchmarkResult:
        if benchmark.gpu:
            return self.run_gpu(
                benchmark.name, benchmark.fn, benchmark.workload_size, unit=benchmark.unit,
                setup=benchmark.setup, metadata=benchmark.metadata, batch=benchmark.batch,
            )  # fmt: skip
        return self.run_host(
            benchmark.name, benchmark.fn, benchmark.workload_size, unit=benchmark.unit,
            setup=benchmark.setup, metadata=benchmark.metadata,
        )  # fmt: skip
