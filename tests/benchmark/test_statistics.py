"""Statistics against NumPy/SciPy on known distributions (seeded)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ringkernel import ConfigurationError
from ringkernel.benchmark import OutlierKind, Statistics


def test_descriptives_match_numpy(rng: np.random.Generator) -> None:
    x = rng.gamma(2.0, 3.0, size=101)
    assert Statistics.mean(x) == pytest.approx(np.mean(x))
    assert Statistics.stddev(x) == pytest.approx(np.std(x, ddof=1))
    assert Statistics.median(x) == pytest.approx(np.median(x))
    for p in (0, 5, 25, 50, 90, 99.5, 100):
        assert Statistics.percentile(np.sort(x), p) == pytest.approx(np.percentile(x, p))
    assert Statistics.percentile(x, 50) == pytest.approx(np.median(x))  # unsorted input is fine
    assert Statistics.stddev([4.0]) == 0.0


def test_t_interval_matches_scipy(rng: np.random.Generator) -> None:
    x = rng.normal(10, 2, size=25)
    ci = Statistics.confidence_interval(x, 0.9)
    lo, hi = stats.t.interval(0.9, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert (ci.low, ci.high) == (pytest.approx(lo), pytest.approx(hi))
    assert ci.estimate == pytest.approx(np.mean(x)) and ci.method == "t"


def test_t_interval_coverage_on_normal_data() -> None:
    rng = np.random.default_rng(1234)
    hits = sum(Statistics.confidence_interval(rng.normal(5.0, 1.5, 20), 0.95).contains(5.0) for _ in range(1000))
    # 95% nominal; binomial sd over 1000 trials is 0.7%
    assert 0.93 <= hits / 1000 <= 0.97


def test_bootstrap_median_coverage_on_skewed_data() -> None:
    rng = np.random.default_rng(99)
    true_median = math.log(2)  # exponential(1)
    trials = 300
    hits = sum(
        Statistics.median_confidence_interval(rng.exponential(1.0, 40), 0.95, n_resamples=1000, seed=rng).contains(true_median)
        for _ in range(trials)
    )
    assert 0.90 <= hits / trials <= 0.99


def test_bootstrap_is_seeded_and_degenerate_safe(rng: np.random.Generator) -> None:
    x = rng.normal(size=30)
    assert Statistics.median_confidence_interval(x) == Statistics.median_confidence_interval(x)
    flat = Statistics.median_confidence_interval([2.0] * 10)
    assert flat.low == flat.high == 2.0
    tied = Statistics.median_confidence_interval([1.0] * 20 + [2.0])
    assert tied.low <= 1.0 <= tied.high


def test_tukey_outliers_known_data() -> None:
    base = list(np.linspace(10, 11, 21))  # q1=10.25, q3=10.75, iqr=0.5
    data = base + [9.0, 11.6, 13.0]
    rep = Statistics.classify_outliers(data)
    q1, q3 = np.percentile(data, [25, 75])
    iqr = q3 - q1
    assert rep.fences == pytest.approx((q1 - 3 * iqr, q1 - 1.5 * iqr, q3 + 1.5 * iqr, q3 + 3 * iqr))
    assert rep.indices[OutlierKind.HIGH_SEVERE] == (23,)
    assert rep.count(OutlierKind.LOW_SEVERE) + rep.count(OutlierKind.LOW_MILD) == 1
    assert rep.count() == sum(rep.count(k) for k in OutlierKind)
    assert Statistics.classify_outliers(np.ones(10)).count() == 0


def test_summary_consistent(rng: np.random.Generator) -> None:
    x = rng.lognormal(0, 0.2, 50)
    s = Statistics.summarize(x)
    assert s.n == 50 and s.min <= s.p5 <= s.median <= s.p95 <= s.max
    assert s.mean_ci.low <= s.mean <= s.mean_ci.high
    assert s.median_ci.low <= s.median <= s.median_ci.high
    assert s.cv == pytest.approx(np.std(x, ddof=1) / np.mean(x))
    one = Statistics.summarize([3.0])
    assert one.median == 3.0 and one.stddev == 0.0


def test_scaling_exponent_exact_power_law() -> None:
    sizes = [1e3, 1e4, 1e5, 1e6, 1e7]
    m = Statistics.scaling_exponent(sizes, [3.0 * s**0.5 for s in sizes])
    assert m.exponent == pytest.approx(0.5) and m.r_squared == pytest.approx(1.0)
    assert m.predict(1e8) == pytest.approx(3.0 * 1e4)


def test_scaling_exponent_matches_linregress_and_covers_truth() -> None:
    rng = np.random.default_rng(7)
    sizes = np.geomspace(1e3, 1e8, 8)
    covered = 0
    for _ in range(300):
        y = 2.0 * sizes**0.8 * rng.lognormal(0, 0.1, sizes.size)
        m = Statistics.scaling_exponent(sizes, y, 0.95)
        covered += m.exponent_ci.contains(0.8)
    assert 0.92 <= covered / 300 <= 0.98
    fit = stats.linregress(np.log(sizes), np.log(y))
    assert m.exponent == pytest.approx(fit.slope) and m.r_squared == pytest.approx(fit.rvalue**2)


@pytest.mark.parametrize(
    "call",
    [
        lambda: Statistics.mean([]),
        lambda: Statistics.median([1.0, float("nan")]),
        lambda: Statistics.percentile([1.0], 101),
        lambda: Statistics.confidence_interval([1.0], 0.95),
        lambda: Statistics.confidence_interval([1.0, 2.0], 1.5),
        lambda: Statistics.scaling_exponent([1, 2], [1, 2]),
        lambda: Statistics.scaling_exponent([1, 2, 3], [1, -2, 3]),
        lambda: Statistics.scaling_exponent([5, 5, 5], [1, 2, 3]),
        lambda: Statistics.scaling_exponent([1, 2, 3], [1, 2]),
    ],
)
def test_bad_input_is_refused(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigurationError):
        call()
