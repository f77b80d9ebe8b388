"""``ProfilingSummary``: per-kernel GPU time statistics, bandwidth, stream idle gaps and range totals, as a table."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from .events import EventKind, ProfileEvent

__all__ = ["KernelStats", "StreamStats", "RangeStats", "TransferStats", "ProfilingSummary", "measured_copy_ceiling_gbps", "reset"]


@dataclass(frozen=True)
class KernelStats:
    """One kernel's launches. Times in microseconds; ``None`` where nothing was measured."""

    name: str
    launches: int
    #: Launches with GPU times (those captured in a graph or on failed work have none).
    timed: int
    total_us: float
    mean_us: float | None
    median_us: float | None
    p99_us: float | None
    #: Median host time per launch (see ``ProfileEvent.host_ns``).
    host_median_us: float | None
    #: Launches whose GPU start is estimated (idle stream or first on its stream).
    estimated_starts: int
    #: Bytes moved by the timed launches (annotations), and the bandwidth over their GPU time.
    bytes: int | None
    gbps: float | None
    #: ``gbps`` over the copy ceiling (``None`` without bytes or without a ceiling).
    fraction_of_copy: float | None


@dataclass(frozen=True)
class StreamStats:
    """A stream's GPU track: busy time, and the idle gaps between its kernels and copies."""

    stream: str
    #: Kernels and copies on the stream (GPU-timed spans).
    kernels: int
    busy_us: float
    #: From the first kernel's start to the last one's end.
    window_us: float
    idle_us: float
    gaps: int
    largest_gap_us: float

    @property
    def utilisation(self) -> float:
        return self.busy_us / self.window_us if self.window_us > 0 else 0.0


@dataclass(frozen=True)
class RangeStats:
    """Ranges of one name (host time); bandwidth where they were annotated with bytes."""

    name: str
    category: str
    count: int
    total_us: float
    mean_us: float
    bytes: int | None
    gbps: float | None


@dataclass(frozen=True)
class TransferStats:
    """Copies of one direction (``memcpy HtoD``, ``memcpy DtoH``, ``memcpy DtoD``), GPU-timed."""

    name: str
    count: int
    timed: int
    bytes: int
    total_us: float
    median_us: float | None
    #: Bytes of the timed copies over their GPU time.
    gbps: float | None


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@dataclass(frozen=True)
class ProfilingSummary:
    """What :meth:`GpuProfiler.summary` returns; ``str()`` (or :meth:`table`) prints it as tables."""

    session: str
    timing_source: str
    kernels: tuple[KernelStats, ...]
    streams: tuple[StreamStats, ...]
    ranges: tuple[RangeStats, ...]
    copy_ceiling_gbps: float | None = None
    dropped_events: int = 0
    transfers: tuple["TransferStats", ...] = ()

    @classmethod
    def from_events(cls, events: Iterable[ProfileEvent], *, session: str = "", timing_source: str = "",
                    copy_ceiling_gbps: float | None = None, dropped_events: int = 0) -> "ProfilingSummary":  # fmt: skip
        """Summarise ``events`` (the profiler's, or any you built: the statistics are plain arithmetic)."""
        events = list(events)
        by_kernel: dict[str, list[ProfileEvent]] = {}
        by_stream: dict[str, list[tuple[int, int]]] = {}
        by_range: dict[tuple[str, str], list[ProfileEvent]] = {}
        copies: dict[str, list[ProfileEvent]] = {}
        for e in events:
            if e.kind is EventKind.KERNEL or e.kind is EventKind.TRANSFER:
                (by_kernel if e.kind is EventKind.KERNEL else copies).setdefault(e.name, []).append(e)
                if e.gpu_start_ns is not None and e.gpu_end_ns is not None:
                    by_stream.setdefault(e.stream or "?", []).append((e.gpu_start_ns, e.gpu_end_ns))
            elif e.kind is EventKind.RANGE:
                by_range.setdefault((e.name, e.category.name), []).append(e)
        kernels = tuple(_kernel_stats(n, evs, copy_ceiling_gbps) for n, evs in by_kernel.items())
        streams = tuple(_stream_stats(s, spans) for s, spans in by_stream.items())
        ranges = tuple(_range_stats(n, c, evs) for (n, c), evs in by_range.items())
        transfers = tuple(_transfer_stats(n, evs) for n, evs in sorted(copies.items()))
        return cls(session, timing_source, tuple(sorted(kernels, key=lambda k: -k.total_us)), streams,
                   tuple(sorted(ranges, key=lambda r: -r.total_us)), copy_ceiling_gbps, dropped_events,
                   transfers)  # fmt: skip

    def kernel(self, name: str) -> KernelStats:
        for k in self.kernels:
            if k.name == name:
                return k
        raise KeyError(f"no kernel {name!r} in this summary; kernels: {[k.name for k in self.kernels]}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for s, st in zip(d["streams"], self.streams):
            s["utilisation"] = st.utilisation
        return d

    def table(self) -> str:
        """The summary as plain-text tables (kernels, streams, ranges)."""
        lines = [f"profile {self.session!r}: kernel times from {self.timing_source}"]
        if self.copy_ceiling_gbps:
            lines[0] += f"; copy ceiling {self.copy_ceiling_gbps:.0f} GB/s"
        if self.kernels:
            rows = [[k.name, str(k.launches), _f(k.total_us / 1e3, 3), _f(k.mean_us), _f(k.median_us), _f(k.p99_us),
                     _f(k.host_median_us), _f(k.gbps, 1), _f(None if k.fraction_of_copy is None else 100 * k.fraction_of_copy, 1)]
                    for k in self.kernels]  # fmt: skip
            lines += ["", *_grid(["kernel", "launches", "total ms", "mean us", "median us", "p99 us", "host us",
                                  "GB/s", "% of copy"], rows)]  # fmt: skip
        if self.streams:
            rows = [[s.stream, str(s.kernels), _f(s.busy_us / 1e3, 3), _f(s.idle_us / 1e3, 3), str(s.gaps),
                     _f(s.largest_gap_us), _f(100 * s.utilisation, 1)] for s in self.streams]  # fmt: skip
            lines += ["", *_grid(["stream", "spans", "busy ms", "idle ms", "gaps", "largest gap us", "busy %"], rows)]
        if self.transfers:
            rows = [[t.name, str(t.count), str(t.timed), _f(t.bytes / 2**20, 1), _f(t.total_us / 1e3, 3),
                     _f(t.median_us), _f(t.gbps, 1)] for t in self.transfers]  # fmt: skip
            lines += ["", *_grid(["copy", "count", "timed", "MiB", "total ms", "median us", "GB/s"], rows)]
        if self.ranges:
            rows = [[r.name, r.category, str(r.count), _f(r.total_us / 1e3, 3), _f(r.mean_us), _f(r.gbps, 2)]
                    for r in self.ranges]  # fmt: skip
            lines += ["", *_grid(["range", "category", "count", "total ms", "mean us", "GB/s"], rows)]
        if not (self.kernels or self.ranges or self.transfers):
            lines.append("(nothing recorded)")
        if self.dropped_events:
            lines.append(f"{self.dropped_events} events dropped (max_events reached)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _kernel_stats(name: str, evs: list[ProfileEvent], ceiling: float | None) -> KernelStats:
    durs = [d / 1e3 for e in evs if (d := e.gpu_duration_ns) is not None]
    hosts = [e.host_ns / 1e3 for e in evs if e.host_ns is not None]
    timed = [e for e in evs if e.gpu_duration_ns is not None]
    nbytes = sum(e.nbytes for e in timed if e.nbytes is not None) if any(e.nbytes is not None for e in timed) else None
    busy_us = sum(d for e in timed if e.nbytes is not None and (d := e.gpu_duration_ns) is not None) / 1e3
    gbps = nbytes / (busy_us * 1e3) if nbytes is not None and busy_us > 0 else None
    return KernelStats(
        name=name, launches=len(evs), timed=len(durs), total_us=float(sum(durs)),
        mean_us=float(np.mean(durs)) if durs else None, median_us=_pct(durs, 50) if durs else None,
        p99_us=_pct(durs, 99) if durs else None, host_median_us=_pct(hosts, 50) if hosts else None,
        estimated_starts=sum(1 for e in timed if e.gpu_start_estimated), bytes=nbytes, gbps=gbps,
        fraction_of_copy=gbps / ceiling if gbps is not None and ceiling else None,
    )  # fmt: skip


def _transfer_stats(name: str, evs: list[ProfileEvent]) -> "TransferStats":
    durs = [d / 1e3 for e in evs if (d := e.gpu_duration_ns) is not None]
    timed_bytes = sum(e.nbytes or 0 for e in evs if e.gpu_duration_ns is not None)
    total = float(sum(durs))
    return TransferStats(name, len(evs), len(durs), sum(e.nbytes or 0 for e in evs), total,
                         _pct(durs, 50) if durs else None, timed_bytes / (total * 1e3) if total > 0 else None)  # fmt: skip


def _stream_stats(stream: str, spans: list[tuple[int, int]]) -> StreamStats:
    spans.sort()
    busy = idle = largest = 0
    gaps = 0
    reach = spans[0][0]  # the latest end so far (spans may overlap under CUPTI's concurrent kernels)
    for start, end in spans:
        if start > reach:
            gaps += 1
            idle += start - reach
            largest = max(largest, start - reach)
        busy += max(0, end - max(start, reach))
        reach = max(reach, end)
    return StreamStats(stream, len(spans), busy / 1e3, (reach - spans[0][0]) / 1e3, idle / 1e3, gaps, largest / 1e3)


def _range_stats(name: str, category: str, evs: list[ProfileEvent]) -> RangeStats:
    total = sum(e.duration_ns for e in evs) / 1e3
    with_bytes = [e for e in evs if e.nbytes is not None]
    nbytes = sum(e.nbytes for e in with_bytes if e.nbytes is not None) if with_bytes else None
    t = sum(e.duration_ns for e in with_bytes)
    return RangeStats(name, category, len(evs), total, total / len(evs), nbytes,
                      nbytes / t if nbytes is not None and t > 0 else None)  # fmt: skip


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


# -- the device's copy ceiling ---------------------------------------------------------------
_ceiling: float | None = None
_ceiling_lock = threading.Lock()


def measured_copy_ceiling_gbps() -> float | None:
    """Device-to-device copy bandwidth (bytes read + written per second / 1e9), measured once
    per process with CUDA events (best of 5 copies of up to 256 MiB); ``None`` on the simulator."""
    global _ceiling
    from ..config import require_backend

    if require_backend():
        return None
    with _ceiling_lock:
        if _ceiling is None:
            _ceiling = _measure()
        return _ceiling


def _measure() -> float:
    from numba import cuda

    from .. import driver

    cuda.current_context()
    free, _ = driver.mem_get_info()
    n = max(1 << 20, min(256 << 20, free // 8))
    src = driver.mem_alloc(n)
    dst = driver.mem_alloc(n)
    stream = driver.stream_create(0, non_blocking=True)
    start, end = driver.event_create(), driver.event_create()
    try:
        driver.memcpy_dtod(dst, src, n, stream)  # warm-up
        best = float("inf")
        for _ in range(5):
            driver.event_record(start, stream)
            driver.memcpy_dtod(dst, src, n, stream)
            driver.event_record(end, stream)
            driver.event_synchronize(end)
            ms = driver.event_elapsed_ms(start, end)
            if ms:
                best = min(best, ms)
        return 2 * n / (best * 1e-3) / 1e9
    finally:
        driver.stream_synchronize(stream)
        for ev in (start, end):
            driver.event_destroy(ev)
        driver.stream_destroy(stream)
        driver.mem_free(src)
        driver.mem_free(dst)


def reset() -> None:
    """Forget the measured copy ceiling (for tests)."""
    global _ceiling
    with _ceiling_lock:
        _ceiling = None
