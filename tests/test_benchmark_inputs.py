"""Bad inputs to the benchmark framework and `ringkernel bench`: clear errors, exit status 2, report modes."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from ringkernel import _fileio
from ringkernel.benchmark import (
    BenchmarkBaseline,
    BenchmarkConfig,
    BenchmarkResult,
    BenchmarkSuite,
    EnvironmentFingerprint,
    EnvironmentPolicy,
    Statistics,
    compare_results,
    compare_samples,
)
from ringkernel.cli import main
from ringkernel.errors import BenchmarkError, ConfigurationError

# -- helpers ------------------------------------------------------------------------------------


def _result(name: str, size: int, times_ms: np.ndarray, gpu: str = "H200") -> BenchmarkResult:
    env = EnvironmentFingerprint(backend="cuda", gpu_name=gpu, versions={"numpy": np.__version__})
    return BenchmarkResult.from_measurements(name, size, list(times_ms / 1e3), environment=env)


def _save(path: Path, factor: float, rng: np.random.Generator, gpu: str = "H200") -> Path:
    r = _result("k", 100, factor * rng.lognormal(0, 0.01, 30), gpu=gpu)
    return BenchmarkBaseline.from_results([r]).save(path)


def _doc(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _bench(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["bench", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# -- `bench compare`: which file is missing, exit status ------------------------------------------


def test_compare_names_the_missing_current_file(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _save(tmp_path / "base.json", 1.0, rng)
    missing = tmp_path / "nowhere" / "current.json"
    code, out, err = _bench(["compare", str(missing), str(base)], capsys)
    assert code == 2
    assert f"no current results file at {missing}" in err, err
    assert "baseline file" not in err and "Traceback" not in err


def test_compare_names_the_missing_baseline_file(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cur = _save(tmp_path / "cur.json", 1.0, rng)
    monkeypatch.chdir(tmp_path)
    code, out, err = _bench(["compare", str(cur), "old/base.json"], capsys)
    assert code == 2
    # a relative path is shown as given and resolved, since the reader may not know the cwd
    assert f"no baseline file at old/base.json (absolute: {tmp_path / 'old' / 'base.json'})" in err, err
    assert "current results" not in err


def test_compare_exit_status_is_1_only_for_a_regression(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _save(tmp_path / "base.json", 1.0, rng)
    same = _save(tmp_path / "same.json", 1.0, rng)
    slow = _save(tmp_path / "slow.json", 1.5, rng)
    fast = _save(tmp_path / "fast.json", 0.5, rng)
    assert _bench(["compare", str(same), str(base)], capsys)[0] == 0
    assert _bench(["compare", str(fast), str(base)], capsys)[0] == 0  # an improvement is not a failure
    code, out, _ = _bench(["compare", str(slow), str(base)], capsys)
    assert code == 1 and "regressed" in out


def test_compare_refused_environment_is_2_with_cli_advice(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _save(tmp_path / "base.json", 1.0, rng)
    other = _save(tmp_path / "other.json", 1.5, rng, gpu="A100")
    code, _, err = _bench(["compare", str(other), str(base), "--policy", "refuse"], capsys)
    assert code == 2 and "gpu_name" in err
    assert "--policy warn" in err and "policy=" not in err, err


# -- malformed files: BenchmarkError naming the file and the field ----------------------------------

RESULT = {
    "name": "k", "workload_size": 100, "throughput": 1e8, "throughput_unit": "elements/s",
    "total_time_ms": 6.0, "measurement_times_ms": [1.0, 1.1, 0.9, 1.0, 1.05, 0.95],
}  # fmt: skip


def _with(result_changes: dict[str, Any] | None = None, **doc_changes: Any) -> dict[str, Any]:
    result = {k: v for k, v in {**RESULT, **(result_changes or {})}.items() if v is not _DROP}
    doc = {"schema": "ringkernel.benchmark/1", "kind": "baseline", "results": [result]}
    doc.update(doc_changes)
    return {k: v for k, v in doc.items() if v is not _DROP}


_DROP: Any = object()

MALFORMED = {
    "samples are strings": (_with({"measurement_times_ms": ["1.0", "1.1"]}), "results[0].measurement_times_ms[0]"),
    "one sample is null": (_with({"measurement_times_ms": [1.0, None]}), "results[0].measurement_times_ms[1]"),
    "a sample is negative": (_with({"measurement_times_ms": [1.0, 2.0, -1.0]}), "results[0].measurement_times_ms[2]"),
    "samples are an object": (_with({"measurement_times_ms": {"a": 1.0}}), "results[0].measurement_times_ms"),
    "no samples": (_with({"measurement_times_ms": []}), "results[0].measurement_times_ms"),
    "samples missing": (_with({"measurement_times_ms": _DROP}), "results[0].measurement_times_ms"),
    "name missing": (_with({"name": _DROP}), "results[0].name"),
    "name is a number": (_with({"name": 7}), "results[0].name"),
    "size is a string": (_with({"workload_size": "100"}), "results[0].workload_size"),
    "size is fractional": (_with({"workload_size": 10.5}), "results[0].workload_size"),
    "size is a boolean": (_with({"workload_size": True}), "results[0].workload_size"),
    "throughput is a string": (_with({"throughput": "fast"}), "results[0].throughput"),
    "metadata is a list": (_with({"metadata": [1, 2]}), "results[0].metadata"),
    "timestamp is a number": (_with({"timestamp": 5}), "results[0].timestamp"),
    "result environment is a list": (_with({"environment": ["H200"]}), "results[0].environment"),
    "clock is a string": (_with({"environment": {"backend": "cuda", "sm_clock_mhz": "1980"}}),
                          "results[0].environment.sm_clock_mhz"),
    "versions not strings": (_with(environment={"backend": "cuda", "versions": {"numba": 0.6}}),
                             "environment.versions.numba"),
    "environment is a string": (_with(environment="H200"), "environment"),
    "results is an object": (_with(results={"k": RESULT}), "results"),
    "results missing": (_with(results=_DROP), "results"),
    "a result is a list": (_with(results=[RESULT, [1, 2]]), "results[1]"),
    "label is a list": (_with(label=["v1"]), "label"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_baseline_names_file_and_field(tmp_path: Path, case: str) -> None:
    doc, field = MALFORMED[case]
    path = tmp_path / "base.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(BenchmarkError) as exc:
        BenchmarkBaseline.load(path)
    msg = str(exc.value)
    assert f"baseline file {path}" in msg and f"field '{field}'" in msg, msg
    assert exc.value.details["field"] == field
    assert "hint:" in msg
    assert not isinstance(exc.value.__cause__, (KeyError, AttributeError))


@pytest.mark.parametrize("case", ["samples are strings", "results is an object", "environment is a string"])
def test_malformed_baseline_via_cli_exits_2(
    tmp_path: Path, rng: np.random.Generator, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _save(tmp_path / "good.json", 1.0, rng)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(MALFORMED[case][0]))
    for argv, role in ((["compare", str(good), str(bad)], "baseline"), (["compare", str(bad), str(good)], "current results"),
                       (["report", str(bad), "--out", str(tmp_path / "r")], "results"),
                       (["report", str(good), "--baseline", str(bad), "--out", str(tmp_path / "r")], "baseline")):  # fmt: skip
        code, _, err = _bench(argv, capsys)
        assert code == 2, (argv, err)
        assert f"{role} file {bad}" in err and MALFORMED[case][1] in err, err
        assert "Traceback" not in err


@pytest.mark.parametrize("text,expected", [
    ("", "not readable JSON"),
    ("{not json", "not readable JSON"),
    ("[1, 2]", "top level is a list"),
    ('"results"', "top level is a string"),
    ('{"results": []}', 'no "schema" field'),
    ('{"schema": "other/2"}', 'schema is a string "other/2"'),
])  # fmt: skip
def test_foreign_or_corrupt_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(BenchmarkError, match="baseline file") as exc:
        BenchmarkBaseline.load(path)
    assert expected in str(exc.value) and str(path) in str(exc.value)


def test_not_utf8_and_directory(tmp_path: Path) -> None:
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BenchmarkError, match="not readable"):
        BenchmarkBaseline.load(tmp_path / "bin.json")
    with pytest.raises(BenchmarkError, match="is a directory"):
        BenchmarkBaseline.load(tmp_path)


def test_from_json_text_is_checked_too() -> None:
    with pytest.raises(BenchmarkError, match=r"field 'results\[0\]\.measurement_times_ms\[0\]'"):
        BenchmarkSuite.from_json(json.dumps(MALFORMED["samples are strings"][0]))
    with pytest.raises(BenchmarkError, match="not valid JSON"):
        BenchmarkSuite.from_json("{oops")
    with pytest.raises(BenchmarkError, match="no results file"):
        BenchmarkSuite.from_json("/nonexistent/results.json")


def test_a_well_formed_file_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(_with({"metadata": None, "environment": None}, label="v2", environment=None)))
    loaded = BenchmarkBaseline.load(path)
    assert loaded.label == "v2" and loaded.results[0].measurement_times == RESULT["measurement_times_ms"]
    assert loaded.environment is None and loaded.results[0].metadata == {}
    # integral JSON numbers are fine where floats are expected
    path.write_text(json.dumps(_with({"measurement_times_ms": [1, 2, 3], "throughput": 5})))
    assert BenchmarkBaseline.load(path).results[0].measurement_times == [1.0, 2.0, 3.0]


def test_environment_from_dict_checks_types() -> None:
    with pytest.raises(ConfigurationError, match="field 'versions.numba' must be a version string"):
        EnvironmentFingerprint.from_dict({"backend": "cuda", "versions": {"numba": [0, 60]}})
    with pytest.raises(ConfigurationError, match="field 'backend' must be a string"):
        EnvironmentFingerprint.from_dict({"backend": 3})
    with pytest.raises(ConfigurationError, match="an object"):
        EnvironmentFingerprint.from_dict([("backend", "cuda")])  # type: ignore[arg-type]
    env = EnvironmentFingerprint.from_dict({"gpu_name": "H200", "future_field": {"x": 1}})
    assert env.backend == "unknown" and env.gpu_name == "H200"


# -- `bench run`: every failure is exit status 2 ------------------------------------------------------

HOST_SCRIPT = """
from ringkernel.benchmark import Benchmark

def work():
    return sum(range(2000))

def benchmarks():
    return [Benchmark("k", work, 2000, gpu=False)]
"""


def _script(tmp_path: Path, body: str, name: str = "s.py") -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


@pytest.mark.parametrize("body,expected", [
    ("x = 1\n", "must define benchmarks()"),
    ("def benchmarks():\n    return [1]\n", "must return Benchmark objects"),
    ("def benchmarks():\n    return []\n", "must return Benchmark objects"),
    ("import no_such_module_ringkernel\n", "ModuleNotFoundError"),
    ("def benchmarks(:\n", "SyntaxError"),
    ("raise SystemExit(1)\n", "SystemExit"),
    ("def benchmarks():\n    raise ValueError('no GPU here')\n", "ValueError: no GPU here"),
])  # fmt: skip
def test_bench_run_script_errors_exit_2(
    tmp_path: Path, body: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script(tmp_path, body)
    code, _, err = _bench(["run", script, "--quick", "--out", str(tmp_path / "out")], capsys)
    assert code == 2, err
    assert expected in err and script in err, err
    assert not (tmp_path / "out").exists()


def test_bench_run_missing_script_and_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _bench(["run", str(tmp_path / "gone.py"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and f"the benchmark script {tmp_path / 'gone.py'} does not exist" in err, err
    script = _script(tmp_path, HOST_SCRIPT)
    code, _, err = _bench(["run", script, "--quick", "--baseline", str(tmp_path / "b.json"), "--out", str(tmp_path / "o")],
                          capsys)  # fmt: skip
    assert code == 2 and f"no baseline file at {tmp_path / 'b.json'}" in err, err


def test_bench_run_failing_benchmark_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _script(tmp_path, HOST_SCRIPT.replace("return sum(range(2000))", "raise RuntimeError('kernel broke')"))
    code, _, err = _bench(["run", script, "--quick", "--out", str(tmp_path / "o")], capsys)
    assert code == 2  # not 1: CI must be able to tell "broken" from "regressed"
    assert "RuntimeError: kernel broke" in err


def test_bench_run_unwritable_out_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _script(tmp_path, HOST_SCRIPT)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = _bench(["run", script, "--quick", "--out", str(blocker)], capsys)
    assert code == 2 and "could not write" in err and str(blocker) in err and "--out" in err, err


def test_bench_run_regression_is_1_and_clean_run_is_0(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script(tmp_path, HOST_SCRIPT)
    # A baseline 1000x faster than anything Python can do: a certain regression.
    tiny = BenchmarkBaseline.from_results([_result("k", 2000, 1e-5 * rng.lognormal(0, 0.01, 30))])
    base = tiny.save(tmp_path / "tiny.json")
    code, out, err = _bench(["run", script, "--quick", "--baseline", str(base), "--out", str(tmp_path / "a")], capsys)
    assert code == 1, err
    assert "regressed" in out
    code, _, err = _bench(["run", script, "--quick", "--out", str(tmp_path / "b")], capsys)
    assert code == 0, err


# -- parameter checks of the Python API --------------------------------------------------------------

BASE = list(np.linspace(1.0, 1.1, 10))
CUR = list(np.linspace(1.0, 1.1, 10))


@pytest.mark.parametrize("kwargs,name", [
    (dict(confidence=0.0), "confidence"), (dict(confidence=1.0), "confidence"), (dict(confidence=95), "confidence"),
    (dict(confidence=math.nan), "confidence"), (dict(confidence="0.95"), "confidence"), (dict(confidence=True), "confidence"),
    (dict(alpha=0.0), "alpha"), (dict(alpha=1.0), "alpha"), (dict(alpha=-0.05), "alpha"), (dict(alpha=None), "alpha"),
    (dict(threshold=1.0), "threshold"), (dict(threshold="10%"), "threshold"),
    (dict(n_resamples=0), "n_resamples"), (dict(n_resamples=-5), "n_resamples"), (dict(n_resamples=99), "n_resamples"),
    (dict(n_resamples=2000.0), "n_resamples"), (dict(n_resamples="2000"), "n_resamples"), (dict(n_resamples=True), "n_resamples"),
    (dict(seed=-1), "seed"), (dict(seed="abc"), "seed"), (dict(seed=1.5), "seed"),
])  # fmt: skip
def test_compare_samples_checks_its_parameters(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigurationError) as exc:
        compare_samples(BASE, CUR, **kwargs)
    msg = str(exc.value)
    assert msg.startswith(f"{name} must be"), msg
    assert f"got {next(iter(kwargs.values()))!r}" in msg
    assert "hint: pass" in msg and f"{name}=" in msg  # says what to pass


def test_compare_samples_accepts_the_documented_ranges() -> None:
    r = compare_samples(BASE, CUR, confidence=0.5, alpha=0.5, threshold=0.5, n_resamples=100, seed=np.int64(3))  # type: ignore[arg-type]
    assert r.confidence == 0.5 and r.status.value == "unchanged"
    numpy_int = compare_samples(BASE, CUR, n_resamples=np.int32(200), seed=None)  # type: ignore[arg-type]
    assert numpy_int.ratio == pytest.approx(1.0)


def test_compare_samples_rejects_non_numeric_samples() -> None:
    with pytest.raises(ConfigurationError, match="'k': baseline_ms must be numbers"):
        compare_samples(["fast", "slow"], CUR, name="k")  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="current_ms must be one-dimensional"):
        compare_samples(BASE, [[1.0, 2.0]])  # type: ignore[list-item]


def test_compare_results_checks_parameters_even_with_nothing_to_compare() -> None:
    with pytest.raises(ConfigurationError, match="confidence must be"):
        compare_results([], [], confidence=2.0)
    with pytest.raises(ConfigurationError, match="alpha must be"):
        compare_results([], [], alpha=0)
    with pytest.raises(ConfigurationError, match="policy must be an EnvironmentPolicy") as exc:
        compare_results([], [], policy="warn")  # type: ignore[arg-type]
    assert "EnvironmentPolicy.WARN" in str(exc.value)
    with pytest.raises(ConfigurationError, match="baseline must hold BenchmarkResult objects, got dict"):
        compare_results([RESULT], [])  # type: ignore[list-item]


def test_statistics_check_their_parameters() -> None:
    values = [1.0, 1.2, 0.9, 1.1]
    with pytest.raises(ConfigurationError, match="n_resamples must be an int >= 100"):
        Statistics.median_confidence_interval(values, n_resamples=10)
    with pytest.raises(ConfigurationError, match="confidence must be a number strictly between 0 and 1"):
        Statistics.summarize([1.0], confidence=1.5)  # a single value used to skip the check
    with pytest.raises(ConfigurationError, match="confidence must be"):
        Statistics.confidence_interval(values, confidence="high")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="percentile p must be a number"):
        Statistics.percentile(values, "50")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="values must be numbers"):
        Statistics.median(["a", "b"])  # type: ignore[list-item]


@pytest.mark.parametrize("kwargs", [
    dict(confidence="0.95"), dict(alpha=1.0), dict(regression_threshold=None), dict(min_time_s="1"),
    dict(target_batch_time_ms=math.inf), dict(measurement_iterations=30.0), dict(flush_l2="yes"),
])  # fmt: skip
def test_benchmark_config_type_errors_are_configuration_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
        BenchmarkConfig(**kwargs)


def test_suite_checks_its_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="environment_policy must be an EnvironmentPolicy"):
        BenchmarkSuite(environment_policy="refuse")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="config must be a BenchmarkConfig"):
        BenchmarkSuite({"confidence": 0.9})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="baseline must be a BenchmarkBaseline or a path"):
        BenchmarkSuite().set_baseline(42)  # type: ignore[arg-type]
    suite = BenchmarkSuite(environment_policy=EnvironmentPolicy.IGNORE)
    suite.add_result(_result("k", 10, np.full(10, 1.0)))
    assert sorted(p.name for p in suite.write_reports(tmp_path, "markdown").values()) == ["report.md"]


# -- file modes: reports follow the umask, the kernel cache stays private --------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_reports_and_baselines_get_the_umask_mode(tmp_path: Path, umask_022: None) -> None:
    suite = BenchmarkSuite()
    suite.add_result(_result("k", 10, np.linspace(1.0, 1.2, 10)))
    stale = tmp_path / "report.md"
    stale.write_text("old")
    stale.chmod(0o600)  # as an older ringkernel wrote it: replaced with the right mode
    paths = suite.write_reports(tmp_path)
    assert set(paths) == {"markdown", "html", "json", "latex"}
    assert {p.name: _mode(p) for p in paths.values()} == {p.name: 0o644 for p in paths.values()}
    assert _mode(suite.save_baseline(tmp_path / "baseline.json")) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["baseline.json", *(p.name for p in paths.values())])


def test_report_mode_follows_a_stricter_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        suite = BenchmarkSuite()
        suite.add_result(_result("k", 10, np.linspace(1.0, 1.2, 10)))
        assert _mode(suite.write_reports(tmp_path, ["json"])["json"]) == 0o600
        os.umask(0o002)
        assert _mode(suite.write_reports(tmp_path, ["json"])["json"]) == 0o664
    finally:
        os.umask(old)


def test_cli_report_files_are_0644(
    tmp_path: Path, rng: np.random.Generator, umask_022: None, capsys: pytest.CaptureFixture[str]
) -> None:
    res = _save(tmp_path / "res.json", 1.0, rng)
    code, out, err = _bench(["report", str(res), "--out", str(tmp_path / "rep")], capsys)
    assert code == 0, err
    files = list((tmp_path / "rep").iterdir())
    assert len(files) == 4 and all(_mode(p) == 0o644 for p in files), [(p.name, oct(_mode(p))) for p in files]


def test_kernel_cache_entries_stay_private(tmp_path: Path, umask_022: None) -> None:
    from ringkernel.compile import CacheEntry, PtxCache

    path = PtxCache.with_dir(tmp_path / "kc").put_entry(CacheEntry(PtxCache.hash_source("k"), "sm_90", "ptx", b"cubin"))
    assert path is not None and _mode(path) == 0o600


def test_atomic_write_default_mode_is_private(tmp_path: Path, umask_022: None) -> None:
    assert _mode(_fileio.atomic_write_bytes(tmp_path / "a", b"x")) == 0o600
    assert _mode(_fileio.atomic_write_bytes(tmp_path / "b", b"x", mode=0o640)) == 0o640
    assert _fileio.shared_file_mode() == 0o644


def test_umask_fallback_without_proc(monkeypatch: pytest.MonkeyPatch, umask_022: None) -> None:
    monkeypatch.setattr(_fileio, "_proc_umask", lambda: None)
    monkeypatch.setattr(_fileio, "_umask_fallback", None)
    assert _fileio.current_umask() == 0o022
    assert os.umask(0o022) == 0o022  # the dance restored it


def test_compare_with_nothing_in_common_is_an_error(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _save(tmp_path / "base.json", 1.0, rng)
    other = BenchmarkBaseline.from_results([_result("another", 100, rng.lognormal(0, 0.01, 30))]).save(
        tmp_path / "other.json"
    )
    code, _, err = _bench(["compare", str(other), str(base)], capsys)
    assert code == 2 and "share no benchmark" in err and "other.json" in err


def test_cache_stats_shows_the_trust_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from ringkernel import config

    d = tmp_path / "kc"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("RINGKERNEL_CACHE_DIR", str(d))
    config.reset()
    assert main(["cache", "stats", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["enabled"] is True and facts["temp_files"] == 0 and facts["entries"] == 0


# -- an adversarial trial's findings ------------------------------------------------------------------
def test_duplicates_units_labels_and_the_cached_verdict() -> None:
    from ringkernel.benchmark.regression import compare_results, percent

    rng = np.random.default_rng(3)
    fast = BenchmarkResult.from_measurements("k", 100, list(rng.normal(1e-3, 1e-5, 20)))
    slow = BenchmarkResult.from_measurements("k", 100, list(rng.normal(2e-3, 1e-5, 20)))
    # two results of one (name, size): the second silently replaced the first ("improved, -50%")
    with pytest.raises(BenchmarkError, match="twice"):
        compare_results([slow, fast], [fast])
    # numpy.timedelta64 in its own unit (ns was read as seconds: 1e9 off); bools refused
    r = BenchmarkResult.from_measurements("t", 1000, [np.timedelta64(5000, "ns"), np.timedelta64(5, "us")])
    assert r.measurement_times == [0.005, 0.005]
    with pytest.raises(ConfigurationError, match="measurement"):
        BenchmarkResult.from_measurements("t", 1000, [True, True])
    # labels say the confidence and threshold asked for
    assert (percent(0.95), percent(0.999), percent(0.025), percent(0.29)) == ("95%", "99.9%", "2.5%", "29%")
    report = compare_results([fast], [slow], confidence=0.5)
    assert "50% CI" in report.to_markdown() and "95% CI" not in report.to_markdown()
    # the suite's cached verdict follows its configuration
    suite = BenchmarkSuite(BenchmarkConfig(regression_threshold=0.5))
    suite.add_result(BenchmarkResult.from_measurements("k", 100, list(rng.normal(1.2e-3, 1e-5, 20))))
    suite._baseline = BenchmarkBaseline.from_results([fast])
    first = suite.compare_to_baseline()
    assert first is not None and first.results[0].status.value == "unchanged"
    suite.config = BenchmarkConfig(regression_threshold=0.05)
    again = suite.compare_to_baseline()
    assert again is not None and again.results[0].status.value == "regressed"
