"""Statistics for benchmark samples: summaries, confidence intervals, outliers, scaling fits.

Everything is computed with NumPy and SciPy and checked against them in the tests:
t-based intervals for the mean (``scipy.stats.t``), bootstrap intervals for the median
(``scipy.stats.bootstrap``, BCa), Tukey's fences for outliers, and a least-squares fit in
log-log space for scaling exponents (``scipy.stats.linregress``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Sequence, Union

import numpy as np

from ..errors import ConfigurationError


#: What the statistics accept: any sequence of numbers, or a NumPy array of them.
Samples = Union[Sequence[float], np.ndarray]

__all__ = [
    "ConfidenceInterval",
    "OutlierKind",
    "OutlierReport",
    "Summary",
    "ScalingMetrics",
    "Statistics",
]


@dataclass(frozen=True)
class ConfidenceInterval:
    """``estimate`` with a two-sided interval ``[low, high]`` at ``confidence``."""

    estimate: float
    low: float
    high: float
    confidence: float
    method: str

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class OutlierKind(Enum):
    """Tukey's classes: beyond 1.5 IQR (mild) or 3 IQR (severe) from the quartiles."""

    LOW_SEVERE = "low_severe"
    LOW_MILD = "low_mild"
    HIGH_MILD = "high_mild"
    HIGH_SEVERE = "high_severe"


@dataclass(frozen=True)
class OutlierReport:
    """Tukey classification of a sample: indices per class and the fences used."""

    q1: float
    q3: float
    fences: tuple[float, float, float, float]  # low severe, low mild, high mild, high severe
    indices: dict[OutlierKind, tuple[int, ...]] = field(default_factory=dict)

    def count(self, kind: OutlierKind | None = None) -> int:
        if kind is None:
            return sum(len(v) for v in self.indices.values())
        return len(self.indices.get(kind, ()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "q1": self.q1,
            "q3": self.q3,
            "fences": list(self.fences),
            "counts": {k.value: self.count(k) for k in OutlierKind},
        }


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one sample."""

    n: int
    mean: float
    stddev: float
    median: float
    min: float
    max: float
    p5: float
    p95: float
    mean_ci: ConfidenceInterval
    median_ci: ConfidenceInterval
    outliers: OutlierReport

    @property
    def cv(self) -> float:
        """Coefficient of variation (stddev / mean)."""
        return self.stddev / self.mean if self.mean else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean": self.mean,
            "stddev": self.stddev,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "p5": self.p5,
            "p95": self.p95,
            "cv": self.cv,
            "mean_ci": self.mean_ci.to_dict(),
            "median_ci": self.median_ci.to_dict(),
            "outliers": self.outliers.to_dict(),
        }


@dataclass(frozen=True)
class ScalingMetrics:
    """``throughput ~ size ** exponent`` fitted in log-log space.

    An exponent near 0 means throughput is flat in size (time grows linearly); near 1,
    throughput grows with size (fixed cost dominates, e.g. launch overhead).
    """

    exponent: float
    intercept: float
    r_squared: float
    exponent_ci: ConfidenceInterval
    n: int
    sizes: tuple[float, ...]
    throughputs: tuple[float, ...]

    def predict(self, size: float) -> float:
        return float(math.exp(self.intercept) * size**self.exponent)

    def to_dict(self) -> dict[str, Any]:
        return {
            "exponent": self.exponent,
            "intercept": self.intercept,
            "r_squared": self.r_squared,
            "exponent_ci": self.exponent_ci.to_dict(),
            "n": self.n,
            "sizes": list(self.sizes),
            "throughputs": list(self.throughputs),
        }


def _preview(values: object) -> str:
    text = repr(values)
    return text if len(text) <= 80 else text[:77] + "..."


def _as_array(values: Samples, what: str = "values", minimum: int = 1) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{what} must be numbers, got {_preview(values)}", hint="pass a sequence of floats or a NumPy array"
        ) from exc
    if arr.size < minimum:
        raise ConfigurationError(f"{what} needs at least {minimum} value(s), got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ConfigurationError(f"{what} contains NaN or infinite values", hint="drop failed measurements first")
    return arr


#: Fewest bootstrap resamples accepted: below this the tails of a 95% interval hold a
#: handful of resamples (2.5% of 100 is 2.5), and the interval is noise.
MIN_RESAMPLES = 100


def _is_real(value: object) -> bool:
    """A finite real number: an int or float (NumPy's included), not a bool."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(value)


def _check_fraction(name: str, value: object, example: str) -> None:
    """``value`` must be a number strictly between 0 and 1 (``name`` and ``example`` go in the message)."""
    if not _is_real(value) or not 0 < value < 1:  # type: ignore[operator]
        raise ConfigurationError(
            f"{name} must be a number strictly between 0 and 1, got {value!r}",
            hint=f"pass e.g. {name}={example}",
            details={name: value},
        )


def _check_confidence(confidence: object) -> None:
    _check_fraction("confidence", confidence, "0.95 for a 95% interval")


def _check_resamples(n_resamples: object) -> None:
    if isinstance(n_resamples, (bool, np.bool_)) or not isinstance(n_resamples, (int, np.integer)) \
            or n_resamples < MIN_RESAMPLES:  # fmt: skip
        raise ConfigurationError(
            f"n_resamples must be an int >= {MIN_RESAMPLES}, got {n_resamples!r}",
            hint=f"pass n_resamples=2000 (the default) or another int >= {MIN_RESAMPLES}: the bootstrap "
                 "interval's tails need enough resamples to mean anything",
            details={"n_resamples": n_resamples, "minimum": MIN_RESAMPLES},
        )


class Statistics:
    """Static helpers (the design proposal's ``Statistics``)."""

    @staticmethod
    def mean(values: Samples) -> float:
        return float(np.mean(_as_array(values)))

    @staticmethod
    def stddev(values: Samples) -> float:
        """Sample standard deviation (ddof=1; 0 for a single value)."""
        arr = _as_array(values)
        return float(np.std(arr, ddof=1)) if arr.size > 1 else 0.0

    @staticmethod
    def median(values: Samples) -> float:
        return float(np.median(_as_array(values)))

    @staticmethod
    def percentile(sorted_values: Samples, p: float) -> float:
        """The ``p``-th percentile (0..100), linear interpolation as ``numpy.percentile``.

        The input need not be sorted (the proposal's name is kept; sorting is done here).
        """
        if not _is_real(p) or not 0 <= p <= 100:
            raise ConfigurationError(f"percentile p must be a number in [0, 100], got {p!r}", hint="pass e.g. p=95")
        return float(np.percentile(_as_array(sorted_values), p))

    @staticmethod
    def confidence_interval(values: Samples, confidence: float = 0.95) -> ConfidenceInterval:
        """Student-t interval for the mean."""
        from scipy import stats

        _check_confidence(confidence)
        arr = _as_array(values, minimum=2)
        m = float(np.mean(arr))
        sem = float(stats.sem(arr))
        if sem == 0.0:
            return ConfidenceInterval(m, m, m, confidence, "t")
        low, high = stats.t.interval(confidence, arr.size - 1, loc=m, scale=sem)
        return ConfidenceInterval(m, float(low), float(high), confidence, "t")

    @staticmethod
    def median_confidence_interval(
        values: Samples,
        confidence: float = 0.95,
        *,
        n_resamples: int = 2000,
        seed: int | np.random.Generator | None = 0,
    ) -> ConfidenceInterval:
        """Bootstrap (BCa) interval for the median; seeded, so reproducible by default."""
        from scipy import stats

        _check_confidence(confidence)
        _check_resamples(n_resamples)
        arr = _as_array(values, minimum=2)
        med = float(np.median(arr))
        if np.all(arr == arr[0]):
            return ConfidenceInterval(med, med, med, confidence, "bootstrap-bca")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        import warnings

        def interval(method: str) -> tuple[float, float]:
            with warnings.catch_warnings():
                # BCa warns on degenerate (heavily tied) resamples and returns NaN; the
                # percentile method is the fallback then.
                warnings.simplefilter("ignore")
                res = stats.bootstrap(
                    (arr,), np.median, confidence_level=confidence, n_resamples=n_resamples,
                    method=method, random_state=rng, vectorized=True, axis=-1,
                )  # fmt: skip
            return float(res.confidence_interval.low), float(res.confidence_interval.high)

        low, high = interval("BCa")
        method = "bootstrap-bca"
        if not (math.isfinite(low) and math.isfinite(high)):
            low, high = interval("percentile")
            method = "bootstrap-percentile"
        return ConfidenceInterval(med, min(low, med), max(high, med), confidence, method)

    @staticmethod
    def classify_outliers(values: Samples) -> OutlierReport:
        """Tukey's fences: mild beyond 1.5 IQR of the quartiles, severe beyond 3 IQR."""
        arr = _as_array(values)
        q1, q3 = (float(x) for x in np.percentile(arr, [25, 75]))
        iqr = q3 - q1
        fences = (q1 - 3 * iqr, q1 - 1.5 * iqr, q3 + 1.5 * iqr, q3 + 3 * iqr)
        idx = {
            OutlierKind.LOW_SEVERE: tuple(int(i) for i in np.flatnonzero(arr < fences[0])),
            OutlierKind.LOW_MILD: tuple(int(i) for i in np.flatnonzero((arr >= fences[0]) & (arr < fences[1]))),
            OutlierKind.HIGH_MILD: tuple(int(i) for i in np.flatnonzero((arr > fences[2]) & (arr <= fences[3]))),
            OutlierKind.HIGH_SEVERE: tuple(int(i) for i in np.flatnonzero(arr > fences[3])),
        }
        return OutlierReport(q1=q1, q3=q3, fences=fences, indices=idx)

    @staticmethod
    def summarize(values: Samples, confidence: float = 0.95, *, seed: int | None = 0) -> Summary:
        """Every descriptive statistic of a sample at once."""
        _check_confidence(confidence)
        arr = _as_array(values)
        if arr.size == 1:
            v = float(arr[0])
            ci = ConfidenceInterval(v, v, v, confidence, "single value")
            return Summary(1, v, 0.0, v, v, v, v, v, ci, ci, Statistics.classify_outliers(arr))
        return Summary(
            n=int(arr.size),
            mean=float(np.mean(arr)),
            stddev=float(np.std(arr, ddof=1)),
            median=float(np.median(arr)),
            min=float(arr.min()),
            max=float(arr.max()),
            p5=float(np.percentile(arr, 5)),
            p95=float(np.percentile(arr, 95)),
            mean_ci=Statistics.confidence_interval(arr, confidence),
            median_ci=Statistics.median_confidence_interval(arr, confidence, seed=seed),
            outliers=Statistics.classify_outliers(arr),
        )

    @staticmethod
    def scaling_exponent(
        sizes: Sequence[float], throughputs: Sequence[float], confidence: float = 0.95
    ) -> ScalingMetrics:
        """Fit ``log(throughput) = exponent * log(size) + intercept``; CI from the slope's t-distribution."""
        from scipy import stats

        _check_confidence(confidence)
        x = _as_array(sizes, "sizes", minimum=3)
        y = _as_array(throughputs, "throughputs", minimum=3)
        if x.size != y.size:
            raise ConfigurationError(f"sizes ({x.size}) and throughputs ({y.size}) differ in length")
        if np.any(x <= 0) or np.any(y <= 0):
            raise ConfigurationError("sizes and throughputs must be positive for a log-log fit")
        if np.unique(x).size < 2:
            raise ConfigurationError("scaling needs at least two distinct sizes")
        fit = stats.linregress(np.log(x), np.log(y))
        t = float(stats.t.ppf(0.5 + confidence / 2, x.size - 2))
        slope = float(fit.slope)
        ci = ConfidenceInterval(slope, slope - t * float(fit.stderr), slope + t * float(fit.stderr), confidence, "t (OLS slope)")
        return ScalingMetrics(
            exponent=slope,
            intercept=float(fit.intercept),
            r_squared=float(fit.rvalue**2),
            exponent_ci=ci,
            n=int(x.size),
            sizes=tuple(float(v) for v in x),
            throughputs=tuple(float(v) for v in y),
        )
