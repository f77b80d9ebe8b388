"""Runner, suite and reports on the simulator (GPU timing falls back to the host clock there)."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from numba import cuda

from ringkernel import BenchmarkError, ConfigurationError
from ringkernel.benchmark import (
    Benchmark,
    BenchmarkConfig,
    BenchmarkResult,
    BenchmarkRunner,
    BenchmarkSuite,
    EnvironmentFingerprint,
    Progress,
)
from ringkernel.kernels import vector_add

ENV = EnvironmentFingerprint(backend="cuda", gpu_name="Test GPU", compute_capability="9.0", driver_version="13.0",
                             versions={"ringkernel": "0.1.0"})  # fmt: skip


def _synthetic(name: str, size: int, median_ms: float, rng: np.random.Generator, n: int = 30) -> BenchmarkResult:
    return BenchmarkResult.from_measurements(
        name, size, list(median_ms * rng.lognormal(0, 0.02, n) / 1e3), environment=ENV
    )


def _suite(rng: np.random.Generator) -> BenchmarkSuite:
    suite = BenchmarkSuite(BenchmarkConfig())
    for size in (1_000, 10_000, 100_000, 1_000_000):
        suite.add_result(_synthetic("copy<&>", size, 0.01 + size * 1e-6, rng))
    suite.add_result(_synthetic("scalar_50%_#1", 1, 0.002, rng))
    return suite


# -- results ------------------------------------------------------------------------------
def test_from_measurements_units_and_types() -> None:
    r = BenchmarkResult.from_measurements("k", 1000, [dt.timedelta(milliseconds=2), 0.002, 0.004], unit="B")
    assert r.measurement_times == pytest.approx([2.0, 2.0, 4.0])
    assert r.median_ms == pytest.approx(2.0) and r.total_time_ms == pytest.approx(8.0)
    assert r.throughput == pytest.approx(1000 / 2e-3) and r.throughput_unit == "B/s"
    assert r.timestamp.endswith("+00:00")
    again = BenchmarkResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again.measurement_times == r.measurement_times and again.key == ("k", 1000)


@pytest.mark.parametrize(
    "args",
    [("", 1, [1.0]), ("k", 0, [1.0]), ("k", 1, []), ("k", 1, [0.0]), ("k", 1, [float("nan")]), ("k", 1, ["x"])],
)
def test_from_measurements_refuses_bad_input(args) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigurationError):
        BenchmarkResult.from_measurements(*args)


def test_config_validation() -> None:
    for bad in (dict(measurement_iterations=1), dict(warmup_iterations=-1), dict(regression_threshold=0),
                dict(confidence=1.0), dict(min_time_s=5, max_time_s=1), dict(target_batch_time_ms=0)):  # fmt: skip
        with pytest.raises(ConfigurationError):
            BenchmarkConfig(**bad)


# -- runner -------------------------------------------------------------------------------
def test_host_runner_counts_and_times() -> None:
    calls = []
    runner = BenchmarkRunner(BenchmarkConfig(warmup_iterations=2, measurement_iterations=7), environment=ENV)
    r = runner.run_host("sleep", lambda: (calls.append(1), time.sleep(0.002)), 10, setup=lambda: None)
    assert len(calls) == 2 + 7 and len(r.measurement_times) == 7
    assert all(t >= 2.0 for t in r.measurement_times) and r.metadata["timer"] == "host perf_counter"


def test_host_runner_min_and_max_time() -> None:
    cfg = BenchmarkConfig(warmup_iterations=0, measurement_iterations=2, min_time_s=0.05)
    r = BenchmarkRunner(cfg, environment=ENV).run_host("t", lambda: time.sleep(0.005), 1)
    assert len(r.measurement_times) >= 8  # kept sampling until 50 ms had passed
    cfg = BenchmarkConfig(warmup_iterations=0, measurement_iterations=1000, max_time_s=0.05)
    r = BenchmarkRunner(cfg, environment=ENV).run_host("t", lambda: time.sleep(0.01), 1)
    assert 2 <= len(r.measurement_times) < 20


def test_gpu_runner_on_simulator(rng: np.random.Generator) -> None:
    n = 64
    a, b = cuda.to_device(rng.random(n, dtype=np.float32)), cuda.to_device(rng.random(n, dtype=np.float32))
    c = cuda.device_array(n, np.float32)
    runner = BenchmarkRunner(BenchmarkConfig(warmup_iterations=1, measurement_iterations=3), environment=ENV)
    r = runner.run_gpu("vector_add", lambda: vector_add(a, b, c), n, batch=2)
    assert len(r.measurement_times) == 3 and r.metadata["batch"] == 2 and "simulator" in r.metadata["timer"]
    np.testing.assert_array_equal(c.copy_to_host(), a.copy_to_host() + b.copy_to_host())
    with pytest.raises(ConfigurationError):
        runner.run_gpu("x", lambda: None, 1, batch=0)


def test_runner_refuses_zero_time() -> None:
    cfg = BenchmarkConfig(warmup_iterations=0, measurement_iterations=2)
    runner = BenchmarkRunner(cfg, environment=ENV)
    runner._sample  # noqa: B018
    with pytest.raises(BenchmarkError, match="measured"):
        runner._sample("zero", lambda: 0.0, None)


def test_progress_silent_off_tty_and_drawn_on_request() -> None:
    quiet = io.StringIO()
    with Progress(3, "x", stream=quiet) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""
    loud = io.StringIO()
    with Progress(3, "case", stream=loud, enabled=True) as bar:
        for _ in range(3):
            bar.update(1, "note")
    assert "case [" in loud.getvalue() and "3/3" in loud.getvalue()


# -- suite and reports --------------------------------------------------------------------
def test_add_result_replaces_same_key(rng: np.random.Generator) -> None:
    suite = BenchmarkSuite()
    suite.add_result(_synthetic("a", 1, 1.0, rng))
    suite.add_result(_synthetic("a", 1, 2.0, rng))
    assert len(suite.results) == 1 and suite.results[0].median_ms == pytest.approx(2.0, rel=0.1)
    with pytest.raises(ConfigurationError):
        suite.add_result("not a result")  # type: ignore[arg-type]


def test_scaling(rng: np.random.Generator) -> None:
    suite = _suite(rng)
    m = suite.scaling("copy<&>")
    assert 0 < m.exponent < 1 and m.n == 4
    assert list(suite.scaling_all()) == ["copy<&>"]
    with pytest.raises(BenchmarkError, match="3 or more"):
        suite.scaling("scalar_50%_#1")


def test_reports_contain_everything(rng: np.random.Generator, tmp_path: Path) -> None:
    suite = _suite(rng)
    md = suite.generate_markdown_report()
    assert "| copy<&> | 1,000 |" in md and "## Scaling" in md and "Test GPU" in md
    tex = suite.generate_latex_table()
    assert r"copy<\&>" in tex and r"scalar\_50\%\_\#1" in tex and r"\toprule" in tex
    html = suite.generate_html_report()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "http" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")  # fmt: skip
    assert 'id="results-chart"' in html and 'id="scaling-chart"' in html and "copy&lt;&amp;&gt;" in html
    assert html.count("<rect") >= 5 and html.count("<circle") == 4
    doc = json.loads(suite.generate_json_export())
    assert doc["schema"] == "ringkernel.benchmark/1" and len(doc["results"]) == 5
    assert doc["scaling"]["copy<&>"]["n"] == 4 and doc["regression"] is None
    paths = suite.write_reports(tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == ["report.html", "report.md", "results.json", "table.tex"]
    again = BenchmarkSuite.from_json(paths["json"])
    assert [r.key for r in again.results] == [r.key for r in suite.results]
    with pytest.raises(ConfigurationError):
        suite.write_reports(tmp_path, ["pdf"])
    with pytest.raises(BenchmarkError):
        BenchmarkSuite().write_reports(tmp_path)


def test_baseline_in_reports(rng: np.random.Generator, tmp_path: Path) -> None:
    old = _suite(rng)
    old.save_baseline(tmp_path / "base.json")
    new = BenchmarkSuite()
    for r in old.results:
        factor = 1.5 if r.workload_size == 1_000 else 1.0
        new.add_result(_synthetic(r.name, r.workload_size, r.median_ms * factor, rng))
    new.set_baseline(tmp_path / "base.json")
    rep = new.compare_to_baseline()
    assert rep is not None and rep.has_regressions
    assert [(r.name, r.workload_size) for r in rep.by_status(rep.results[0].status.__class__("regressed"))] == [("copy<&>", 1000)]
    assert "Regression check" in new.generate_markdown_report()
    assert 'class="regressed"' in new.generate_html_report()
    assert json.loads(new.generate_json_export())["regression"]["counts"]["regressed"] == 1


def test_suite_run_uses_runner() -> None:
    suite = BenchmarkSuite(BenchmarkConfig.quick())
    out = suite.run([Benchmark("noop", lambda: sum(range(100)), 100, gpu=False)],
                    runner=BenchmarkRunner(BenchmarkConfig.quick(), environment=ENV))  # fmt: skip
    assert len(out) == 1 and suite.results[0].name == "noop" and len(out[0].measurement_times) == 5


def test_json_from_text_rejects_foreign() -> None:
    with pytest.raises(BenchmarkError):
        BenchmarkSuite.from_json('{"schema": "x", "results": []}')
    with pytest.raises(BenchmarkError):
        BenchmarkSuite.from_json("{oops")


def test_environment_capture_on_simulator() -> None:
    env = EnvironmentFingerprint.capture()
    assert env.backend == "cuda-simulator" and "numba-cuda" in env.versions
    other = EnvironmentFingerprint.from_dict({**env.to_dict(), "backend": "cuda", "unknown_field": 1})
    assert ("backend", "cuda-simulator", "cuda") in env.differences(other)
    assert re.search(r"\d", env.describe())
