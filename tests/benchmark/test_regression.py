"""Regression detection: false alarms and power on synthetic data (seeded), baselines on disk."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ringkernel import BenchmarkError, ConfigurationError, EnvironmentMismatchError
from ringkernel.benchmark import (
    BenchmarkBaseline,
    BenchmarkResult,
    EnvironmentFingerprint,
    EnvironmentPolicy,
    RegressionStatus,
    compare_results,
    compare_samples,
)

N = 30  # samples per side
SIGMA = 0.03  # 3% log-normal noise; kernel timings on the H200 vary far less (docs/benchmark.md)


def _trial(rng: np.random.Generator, shift: float, threshold: float, sigma: float = SIGMA) -> RegressionStatus:
    base = 1.0 * rng.lognormal(0, sigma, N)
    cur = (1.0 + shift) * rng.lognormal(0, sigma, N)
    return compare_samples(base, cur, threshold=threshold, n_resamples=1000, seed=rng).status


@pytest.mark.parametrize("threshold", [0.10, 0.05])
def test_false_alarm_rate_aa(threshold: float) -> None:
    rng = np.random.default_rng(2026)
    trials = 250
    statuses = [_trial(rng, 0.0, threshold) for _ in range(trials)]
    alarms = sum(s in (RegressionStatus.REGRESSED, RegressionStatus.IMPROVED) for s in statuses)
    assert alarms / trials <= 0.05
    assert statuses.count(RegressionStatus.UNCHANGED) / trials >= 0.9


def test_false_alarm_rate_aa_heavy_tails() -> None:
    # 10% of samples hit by a 3x stall (a context switch, a clock dip): medians and ranks shrug it off
    rng = np.random.default_rng(11)
    alarms = 0
    for _ in range(200):
        base = rng.lognormal(0, SIGMA, N) * np.where(rng.random(N) < 0.1, 3.0, 1.0)
        cur = rng.lognormal(0, SIGMA, N) * np.where(rng.random(N) < 0.1, 3.0, 1.0)
        s = compare_samples(base, cur, threshold=0.05, n_resamples=1000, seed=rng).status
        alarms += s in (RegressionStatus.REGRESSED, RegressionStatus.IMPROVED)
    assert alarms / 200 <= 0.05


def test_detects_10_percent_shifts() -> None:
    rng = np.random.default_rng(77)
    trials = 250
    slower = [_trial(rng, +0.10, 0.05) for _ in range(trials)]
    faster = [_trial(rng, -0.10, 0.05) for _ in range(trials)]
    assert slower.count(RegressionStatus.REGRESSED) / trials >= 0.95
    assert faster.count(RegressionStatus.IMPROVED) / trials >= 0.95


def test_threshold_is_the_change_one_must_be_sure_of() -> None:
    # A true 10% shift against a 10% threshold sits on the boundary: mostly Inconclusive,
    # called Unchanged only when the interval happens to fall inside (at most ~2.5%).
    rng = np.random.default_rng(5)
    statuses = [_trial(rng, 0.10, 0.10) for _ in range(200)]
    assert statuses.count(RegressionStatus.UNCHANGED) / 200 <= 0.05
    assert statuses.count(RegressionStatus.INCONCLUSIVE) / 200 >= 0.3


def test_small_significant_change_is_unchanged() -> None:
    rng = np.random.default_rng(3)
    base = rng.lognormal(0, 0.005, 200)
    cur = 1.02 * rng.lognormal(0, 0.005, 200)
    r = compare_samples(base, cur, threshold=0.10)
    assert r.status is RegressionStatus.UNCHANGED and r.p_value < 0.05 and "significant" in r.message


def test_few_samples_inconclusive() -> None:
    r = compare_samples([1.0, 1.1], [2.0, 2.1], threshold=0.1)
    assert r.status is RegressionStatus.INCONCLUSIVE and "too few samples" in r.message


def test_bad_samples_refused() -> None:
    with pytest.raises(ConfigurationError):
        compare_samples([], [1.0])
    with pytest.raises(ConfigurationError):
        compare_samples([1.0, -1.0], [1.0, 1.0])
    with pytest.raises(ConfigurationError):
        compare_samples([1.0], [1.0], threshold=0)


def _result(name: str, size: int, times: np.ndarray, gpu: str = "H200") -> BenchmarkResult:
    env = EnvironmentFingerprint(backend="cuda", gpu_name=gpu, compute_capability="9.0", driver_version="13.0")
    return BenchmarkResult.from_measurements(name, size, list(times / 1e3), environment=env)


def test_compare_results_matches_by_name_and_size(rng: np.random.Generator) -> None:
    base = [_result("a", 1, rng.lognormal(0, 0.01, 30)), _result("a", 2, rng.lognormal(0, 0.01, 30)),
            _result("gone", 1, rng.lognormal(0, 0.01, 30))]  # fmt: skip
    cur = [_result("a", 1, 1.5 * rng.lognormal(0, 0.01, 30)), _result("a", 2, rng.lognormal(0, 0.01, 30)),
           _result("new", 1, rng.lognormal(0, 0.01, 30))]  # fmt: skip
    rep = compare_results(base, cur, threshold=0.1)
    status = {(r.name, r.workload_size): r.status for r in rep.results}
    assert status == {("a", 1): RegressionStatus.REGRESSED, ("a", 2): RegressionStatus.UNCHANGED}
    assert rep.has_regressions and rep.missing_in_current == [("gone", 1)] and rep.new_in_current == [("new", 1)]
    md = rep.to_markdown()
    assert "regressed" in md and "missing in current" in md


def test_environment_mismatch_policies(rng: np.random.Generator, caplog: pytest.LogCaptureFixture) -> None:
    base = [_result("a", 1, rng.lognormal(0, 0.01, 30), gpu="A100")]
    cur = [_result("a", 1, rng.lognormal(0, 0.01, 30), gpu="H200")]
    with pytest.raises(EnvironmentMismatchError) as err:
        compare_results(base, cur, policy=EnvironmentPolicy.REFUSE)
    assert "gpu_name" in str(err.value) and "A100" in str(err.value)
    with caplog.at_level(logging.WARNING):
        rep = compare_results(base, cur, policy=EnvironmentPolicy.WARN)
    assert ("gpu_name", "A100", "H200") in rep.environment_differences
    assert any("differs" in m for m in caplog.messages)


def test_baseline_roundtrip_and_corruption(tmp_path: Path, rng: np.random.Generator) -> None:
    results = [_result("a", 10, rng.lognormal(0, 0.01, 30))]
    path = BenchmarkBaseline.from_results(results, label="v1").save(tmp_path / "base.json")
    loaded = BenchmarkBaseline.load(path)
    assert loaded.label == "v1" and loaded.results[0].measurement_times == results[0].measurement_times
    assert loaded.environment is not None and loaded.environment.gpu_name == "H200"
    assert [p.name for p in tmp_path.iterdir()] == ["base.json"]  # no temp files left
    for bad in ("", "{not json", json.dumps({"schema": "other"}), json.dumps([1, 2]),
                json.dumps({"schema": "ringkernel.benchmark/1", "results": [{"name": "x"}]})):  # fmt: skip
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(BenchmarkError):
            BenchmarkBaseline.load(tmp_path / "bad.json")
    with pytest.raises(BenchmarkError, match="no baseline"):
        BenchmarkBaseline.load(tmp_path / "missing.json")
