"""Running benchmarks: host callables on a monotonic clock, GPU work between CUDA events.

GPU hygiene, in order, for every GPU benchmark:

1. ``warmup_iterations`` untimed calls, then a device synchronise: JIT compilation, module
   loading and clock ramp-up never fall inside a measurement;
2. the batch size: work shorter than ``target_batch_time_ms`` is timed as a batch of
   back-to-back calls between one event pair (time / batch), so event resolution and the
   host's launch gaps do not dominate;
3. for each sample: the optional L2 flush (a kernel overwriting twice the L2's size) is
   enqueued *before* the start event, so it is never timed; then start event, the batch,
   end event, synchronise on the end event.

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

from ..errors import BenchmarkError, ConfigurationError
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

    def __init__(self, stream: Any = None) -> None:
        from numba import config as numba_config
        from numba import cuda

        self._cuda = cuda
        self._stream_arg = stream  # None: the default stream
        self.stream = stream if stream is not None else 0
        self.simulated = bool(numba_config.ENABLE_CUDASIM)
        if not self.simulated:
            self._start = cuda.event(timing=True)
            self._end = cuda.event(timing=True)
        self._scratch: Any = None
        self.method = "host clock (simulator)" if self.simulated else "cuda events"

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
        if flush:
            self.flush_l2()
        if self.simulated:
            self.synchronize()
            t = time.perf_counter()
            for _ in range(batch):
                fn()
            self.synchronize()
            return (time.perf_counter() - t) * 1e3 / batch
        self._start.record(self.stream)
        for _ in range(batch):
            fn()
        self._end.record(self.stream)
        self._end.synchronize()
        return self._cuda.event_elapsed_time(self._start, self._end) / batch


def _scribble(buf: Any, value: float, *, stream: Any) -> None:
    from ..dsl import gpu_kernel
    from ..intrinsics import global_thread_id, grid_stride

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
            t = self._timers[key] = GpuTimer(stream)
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
            fn()
        timer.synchronize()
        if batch is None:
            if flush:
                batch = 1  # every timed call must start with a cold L2
            else:
                one = timer.time_batch(fn, 1)
                batch = 1 if one <= 0 else min(_MAX_BATCH, max(1, math.ceil(cfg.target_batch_time_ms / one)))
        elif isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigurationError(f"benchmark '{name}': batch must be a positive int, got {batch!r}")

        def measure() -> float:
            return timer.time_batch(fn, batch, flush=flush)

        times = self._sample(name, measure, setup)
        meta = {
            "timer": timer.method,
            "batch": batch,
            "flush_l2": flush,
            "warmup_iterations": cfg.warmup_iterations,
            **(metadata or {}),
        }
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
