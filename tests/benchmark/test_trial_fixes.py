"""Defects an adversarial trial found in the benchmark framework (tenth session), each pinned down."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ringkernel.benchmark import (
    Benchmark, BenchmarkBaseline, BenchmarkConfig, BenchmarkResult, BenchmarkSuite, EnvironmentFingerprint,
    EnvironmentPolicy, compare_results,
)  # fmt: skip
from ringkernel.benchmark.results import format_rate, format_time_ms
from ringkernel.errors import BenchmarkError, ConfigurationError, EnvironmentMismatchError

H200 = EnvironmentFingerprint(backend="cuda", gpu_name="H200")
A100 = EnvironmentFingerprint(backend="cuda", gpu_name="A100")


def _result(name: str, factor: float, env: EnvironmentFingerprint | None, n: int = 30) -> BenchmarkResult:
    rng = np.random.default_rng(abs(hash((name, factor))) % 2**32)
    return BenchmarkResult.from_measurements(name, 100, list(factor * rng.lognormal(0, 0.01, n)), environment=env)


def test_each_pair_is_compared_in_its_own_environment() -> None:
    base = [_result("a", 1.0, H200), _result("k", 1.0, H200)]
    cur = [_result("a", 1.0, H200), _result("k", 0.5, A100)]  # k ran on another GPU
    with pytest.raises(EnvironmentMismatchError, match="A100"):
        compare_results(base, cur, policy=EnvironmentPolicy.REFUSE)
    report = compare_results(base, cur, policy=EnvironmentPolicy.WARN)
    assert report.environment_differences


def test_an_unknown_environment_is_refused_or_warned(caplog: pytest.LogCaptureFixture) -> None:
    base, cur = [_result("k", 1.0, None)], [_result("k", 0.5, H200)]
    with pytest.raises(EnvironmentMismatchError, match="cannot be checked"):
        compare_results(base, cur, policy=EnvironmentPolicy.REFUSE)
    compare_results(base, cur, policy=EnvironmentPolicy.WARN)
    assert "cannot be checked" in caplog.text
    compare_results(base, cur, policy=EnvironmentPolicy.IGNORE)


def test_benchmarks_are_checked_when_defined() -> None:
    for size in (1e6, 0, -5, True, 2**70, "10"):
        with pytest.raises(ConfigurationError, match="workload_size"):
            Benchmark("x", lambda: None, size)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="metadata"):
        Benchmark("x", lambda: None, 10, metadata={"f": object()})
    b = Benchmark("x", lambda: None, np.int64(10), metadata={"n": np.int64(1000), "r": np.float32(0.5),
                                                            "a": np.arange(3), "bad": float("nan")})  # fmt: skip
    assert b.workload_size == 10 and b.metadata == {"n": 1000, "r": 0.5, "a": [0, 1, 2], "bad": None}
    assert json.dumps(b.metadata, allow_nan=False)


def test_results_files_are_strict_json(tmp_path: Path) -> None:
    suite = BenchmarkSuite(BenchmarkConfig.quick())
    suite.add_result(_result("k", 1.0, H200, n=3))
    suite.set_baseline(BenchmarkBaseline.from_results([_result("k", 1.0, H200, n=3)]))
    text = suite.generate_json_export()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in the export"))
    path = tmp_path / "base.json"
    BenchmarkBaseline.from_results([_result("k", 1.0, H200, n=3)]).save(path)
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in the baseline"))


def test_a_case_that_raises_is_named_and_the_others_kept() -> None:
    suite = BenchmarkSuite(BenchmarkConfig.quick())
    calls = {"n": 0}

    def flaky() -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("transient failure")

    cases = [Benchmark("fine", lambda: None, 10, gpu=False), Benchmark("flaky", flaky, 10, gpu=False)]
    with pytest.raises(BenchmarkError, match="'flaky' raised RuntimeError: transient failure"):
        suite.run(cases, progress=False)
    assert [r.name for r in suite.results] == ["fine"]


def test_units_are_chosen_after_rounding() -> None:
    assert format_time_ms(0.9996) == "1 ms" and format_time_ms(999.7) == "1 s" and format_time_ms(0.5) == "500 us"
    assert format_rate(999700, "B/s") == "1 MB/s" and format_rate(3.6e12, "B/s") == "3.6 TB/s"


def test_reports_show_missing_and_new_and_escape_names() -> None:
    base = [_result("gone", 1.0, H200), _result("a|b<i>", 1.0, H200)]
    cur = [_result("a|b<i>", 1.0, H200), _result("fresh", 1.0, H200)]
    suite = BenchmarkSuite(BenchmarkConfig.quick())
    for r in cur:
        suite.add_result(r)
    suite.set_baseline(BenchmarkBaseline.from_results(base))
    html = suite.generate_html_report("t")
    assert "gone" in html and "missing in current" in html and "fresh" in html and "new (no baseline)" in html
    assert "<i>" not in html
    md = suite.generate_markdown_report("t")
    assert "a\\|b<i>" in md and "| a|b" not in md


def test_review_of_the_fixes() -> None:
    """Number keys in metadata are written as json.dumps writes them (they worked before); a
    bad batch is refused when the case is defined; ringkernel's own errors from a case keep
    their type in a suite."""
    b = Benchmark("x", lambda: None, 10, metadata={"sizes": {1024: "small", True: 1, 2.5: "f"}})
    assert b.metadata == {"sizes": {"1024": "small", "true": 1, "2.5": "f"}}
    with pytest.raises(ConfigurationError, match="batch"):
        Benchmark("x", lambda: None, 10, batch=-1)

    def bad_config() -> None:
        raise ConfigurationError("the case's own configuration")

    suite = BenchmarkSuite(BenchmarkConfig.quick())
    with pytest.raises(ConfigurationError, match="own configuration"):
        suite.run([Benchmark("c", bad_config, 10, gpu=False)], progress=False)
