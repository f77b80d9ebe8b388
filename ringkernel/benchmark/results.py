"""``BenchmarkConfig`` (how to measure) and ``BenchmarkResult`` (what was measured)."""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigurationError
from . import _fields
from .environment import EnvironmentFingerprint, _environment_from_dict
from .statistics import Statistics, Summary, _check_confidence, _check_fraction, _is_real

__all__ = ["BenchmarkConfig", "BenchmarkResult", "format_rate", "format_time_ms"]


@dataclass(frozen=True)
class BenchmarkConfig:
    """How a benchmark is measured and judged.

    Parameters
    ----------
    warmup_iterations:
        Untimed calls before measuring (JIT compilation, caches, clocks ramping up).
    measurement_iterations:
        Timed samples to take (at least; more if ``min_time_s`` has not passed).
    min_time_s, max_time_s:
        Keep sampling until ``min_time_s`` of measured time; stop at ``max_time_s`` even if
        fewer than ``measurement_iterations`` samples were taken (at least 2 always are).
    regression_threshold:
        Relative change of the median that counts as a regression or improvement (0.10 = 10%).
    confidence:
        Confidence level of every interval (0.95).
    alpha:
        Significance level of the Mann-Whitney U test in regression checks.
    target_batch_time_ms:
        GPU work shorter than this is timed in batches of back-to-back calls, so event
        resolution (~0.5 us) and launch gaps do not dominate.
    flush_l2:
        Overwrite the GPU's L2 cache before every GPU sample, outside the timed window.
    cover_launch_overhead:
        Queue each GPU batch behind a spin kernel so the host's launch overhead never
        leaves the GPU idle inside the timed window (the kernel's own time is measured).
        ``False`` measures what back-to-back launches from this host sustain.
    """

    warmup_iterations: int = 3
    measurement_iterations: int = 30
    min_time_s: float = 0.0
    max_time_s: float = 60.0
    regression_threshold: float = 0.10
    confidence: float = 0.95
    alpha: float = 0.05
    target_batch_time_ms: float = 1.0
    flush_l2: bool = False
    cover_launch_overhead: bool = True

    def __post_init__(self) -> None:
        def is_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.warmup_iterations) or self.warmup_iterations < 0:
            raise ConfigurationError(
                f"warmup_iterations must be an int >= 0, got {self.warmup_iterations!r}", hint="pass e.g. warmup_iterations=3"
            )
        if not is_int(self.measurement_iterations) or self.measurement_iterations < 2:
            raise ConfigurationError(
                f"measurement_iterations must be an int >= 2, got {self.measurement_iterations!r}",
                hint="statistics need at least two samples; 30 is a good default",
            )
        if not (_is_real(self.min_time_s) and _is_real(self.max_time_s)) \
                or self.min_time_s < 0 or self.max_time_s <= 0 or self.min_time_s > self.max_time_s:  # fmt: skip
            raise ConfigurationError(
                f"need 0 <= min_time_s <= max_time_s and max_time_s > 0 (seconds), got {self.min_time_s!r}, {self.max_time_s!r}",
                hint="pass e.g. min_time_s=0.0, max_time_s=60.0",
            )
        _check_fraction("regression_threshold", self.regression_threshold, "0.10 for 10%")
        _check_confidence(self.confidence)
        _check_fraction("alpha", self.alpha, "0.05")
        if not _is_real(self.target_batch_time_ms) or self.target_batch_time_ms <= 0:
            raise ConfigurationError(
                f"target_batch_time_ms must be a positive number, got {self.target_batch_time_ms!r}",
                hint="pass e.g. target_batch_time_ms=1.0",
            )
        for name in ("flush_l2", "cover_launch_overhead"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @classmethod
    def quick(cls) -> "BenchmarkConfig":
        """Few samples, for smoke tests."""
        return cls(warmup_iterations=1, measurement_iterations=5, max_time_s=10.0)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _to_ms(m: Any) -> float:
    if isinstance(m, _dt.timedelta):
        return m.total_seconds() * 1e3
    if isinstance(m, np.timedelta64):  # its own unit (ns, us, ...): an adversarial trial read ns as seconds
        if np.isnat(m):
            raise ConfigurationError("a measurement is NaT (not a time)")
        return float(m / np.timedelta64(1, "ns")) / 1e6
    if isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, float, np.integer, np.floating)):
        raise ConfigurationError(
            f"a measurement must be seconds (a number), a datetime.timedelta or a numpy.timedelta64, got {m!r}"
        )
    return float(m) * 1e3


@dataclass
class BenchmarkResult:
    """One benchmark at one workload size: its samples and what follows from them.

    ``measurement_times`` are milliseconds per call; ``throughput`` is
    ``workload_size / median time`` in ``throughput_unit`` (``"<unit>/s"``).
    """

    name: str
    workload_size: int
    throughput: float
    throughput_unit: str
    total_time_ms: float
    measurement_times: list[float]
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp: str = ""
    environment: EnvironmentFingerprint | None = None
    # Summaries bootstrap 2000 resamples; every report format asks for them.
    _summaries: dict[tuple[Any, ...], Summary] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_measurements(
        cls,
        name: str,
        workload_size: int,
        measurements: Sequence[float | _dt.timedelta],
        *,
        unit: str = "elements",
        metadata: Mapping[str, Any] | None = None,
        environment: EnvironmentFingerprint | None = None,
    ) -> "BenchmarkResult":
        """Build a result from per-call durations (seconds as floats, or ``timedelta``)."""
        if not name:
            raise ConfigurationError("a benchmark needs a name")
        if isinstance(workload_size, bool) or not isinstance(workload_size, int) or workload_size <= 0:
            raise ConfigurationError(f"workload_size must be a positive int, got {workload_size!r}")
        times = [_to_ms(m) for m in measurements]
        if not times:
            raise ConfigurationError(f"benchmark '{name}': no measurements")
        if any(not math.isfinite(t) or t <= 0 for t in times):
            raise ConfigurationError(
                f"benchmark '{name}': measurements must be positive and finite, got min {min(times)!r}",
                hint="a zero time usually means the work ran asynchronously and was not waited for",
            )
        med = Statistics.median(times)
        return cls(
            name=name,
            workload_size=workload_size,
            throughput=workload_size / (med * 1e-3),
            throughput_unit=f"{unit}/s",
            total_time_ms=float(sum(times)),
            measurement_times=times,
            metadata=dict(metadata or {}),
            timestamp=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            environment=environment,
        )

    @property
    def median_ms(self) -> float:
        return Statistics.median(self.measurement_times)

    @property
    def mean_ms(self) -> float:
        return Statistics.mean(self.measurement_times)

    def summary(self, confidence: float = 0.95) -> Summary:
        """Descriptive statistics of the samples (computed once per confidence and sample set)."""
        key = (confidence, tuple(self.measurement_times))
        s = self._summaries.get(key)
        if s is None:
            s = self._summaries[key] = Statistics.summarize(self.measurement_times, confidence)
        return s

    @property
    def key(self) -> tuple[str, int]:
        """``(name, workload_size)``: how results are matched against a baseline."""
        return (self.name, self.workload_size)

    def to_dict(self, confidence: float = 0.95) -> dict[str, Any]:
        return {
            "name": self.name,
            "workload_size": self.workload_size,
            "throughput": self.throughput,
            "throughput_unit": self.throughput_unit,
            "total_time_ms": self.total_time_ms,
            "median_ms": self.median_ms,
            "measurement_times_ms": list(self.measurement_times),
            "summary": self.summary(confidence).to_dict(),
            "metadata": self.metadata,
            "timestamp": self.timestamp,
            "environment": self.environment.to_dict() if self.environment else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BenchmarkResult":
        """Read one entry of a JSON export's ``results`` (the output of :meth:`to_dict`).

        Every field's type is checked, so a hand-edited or foreign file fails here, naming
        the field, rather than later inside the statistics. ``summary`` and ``median_ms``
        are recomputed from the samples, not read.

        Raises
        ------
        ConfigurationError
            A field is missing or has the wrong type; ``details['field']`` names it.
        """
        return _result_from_dict(data, "")


def _positive_number(v: Any) -> bool:
    return _fields.is_number(v) and v > 0


def _result_from_dict(data: Any, where: str) -> BenchmarkResult:
    """``BenchmarkResult.from_dict`` with field paths in errors prefixed by ``where`` (``results[3]``)."""
    data = _fields.require_object(data, where, "one benchmark result")

    def get(key: str, expected: str, ok: Any, *, optional: bool = False) -> Any:
        return _fields.get(data, key, where, expected, ok, optional=optional)

    name = get("name", "a non-empty string", lambda v: isinstance(v, str) and bool(v))
    size = get("workload_size", "a positive integer up to 2**63-1",
               lambda v: _fields.is_int(v) and 0 < v <= _fields.MAX_WORKLOAD)  # fmt: skip
    throughput = get("throughput", "a positive number", _positive_number)
    unit = get("throughput_unit", "a string", _fields.is_str)
    total = get("total_time_ms", "a number >= 0 (milliseconds)", lambda v: _fields.is_number(v) and v >= 0)
    key = "measurement_times_ms"
    times = get(key, "a non-empty list of times in milliseconds", lambda v: isinstance(v, list) and bool(v))
    for i, t in enumerate(times):
        if not _positive_number(t):
            raise _fields.field_error(_fields.join(where, f"{key}[{i}]"), "a positive number (milliseconds)", t)
    metadata = get("metadata", "an object or null", lambda v: isinstance(v, Mapping), optional=True)
    timestamp = get("timestamp", "a string (ISO 8601)", _fields.is_str, optional=True)
    env = data.get("environment")
    return BenchmarkResult(
        name=name,
        workload_size=size,
        throughput=float(throughput),
        throughput_unit=unit,
        total_time_ms=float(total),
        measurement_times=[float(t) for t in times],
        metadata=dict(metadata or {}),
        timestamp=timestamp or "",
        environment=None if env is None else _environment_from_dict(env, _fields.join(where, "environment")),
    )


_PREFIXES = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]


def _three_digits(value: float) -> float:
    """``value`` rounded to the 3 significant digits it is shown with (the unit is chosen after
    rounding: 999.7 ms is "1 s", not "1e+03 ms"; from an adversarial trial)."""
    return float(f"{value:.3g}")


def format_rate(value: float, unit: str) -> str:
    """``3.6e12, "B/s"`` -> ``"3.60 TB/s"``."""
    for scale, prefix in _PREFIXES:
        if abs(_three_digits(value / scale)) >= 1:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def format_time_ms(ms: float) -> str:
    if _three_digits(ms / 1000) >= 1:
        return f"{ms / 1000:.3g} s"
    if _three_digits(ms) >= 1:
        return f"{ms:.3g} ms"
    if _three_digits(ms * 1e3) >= 1:
        return f"{ms * 1e3:.3g} us"
    return f"{ms * 1e6:.3g} ns"
