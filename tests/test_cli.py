"""The command line and the examples, run as a user would (subprocesses, no GPU: simulator)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ringkernel
from ringkernel.cli import _plain, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_info_json() -> None:
    out = _run("-m", "ringkernel", "info", "--json")
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert facts["device"] and facts["sm_count"] >= 1 and "numba-cuda" in facts["versions"]


def test_info_text() -> None:
    out = _run("-m", "ringkernel", "info")
    assert out.returncode == 0, out.stderr
    assert "compute_capability" in out.stdout and "max_threads_per_block" in out.stdout


def test_demo_checks_and_times() -> None:
    out = _run("-m", "ringkernel", "demo", "--elements", "2000", "--repeat", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "result matches NumPy: yes" in out.stdout
    assert "mode ElementCentric" in out.stdout and "GB/s" in out.stdout


def test_demo_rejects_bad_size() -> None:
    out = _run("-m", "ringkernel", "demo", "--elements", "0")
    assert out.returncode == 2 and "argument --elements: must be an integer >= 1" in out.stderr
    assert "Traceback" not in out.stderr


def test_example_vector_add() -> None:
    out = _run(str(ROOT / "examples" / "vector_add.py"), "500")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "matches NumPy: True" in out.stdout and "grid 2" in out.stdout


def test_cache_commands(tmp_path: Path) -> None:
    import os as _os

    env_dir = tmp_path / "kc"
    old = _os.environ.get("RINGKERNEL_CACHE_DIR")
    _os.environ["RINGKERNEL_CACHE_DIR"] = str(env_dir)
    try:
        from ringkernel.compile import CacheEntry, PtxCache

        PtxCache.with_dir(env_dir).put_entry(CacheEntry(PtxCache.hash_source("k"), "sm_90", "ptx", b"cubin"))
        path = _run("-m", "ringkernel", "cache", "path")
        assert path.returncode == 0 and path.stdout.strip() == str(env_dir)
        stats = _run("-m", "ringkernel", "cache", "stats", "--json")
        assert json.loads(stats.stdout)["entries"] == 1
        clear = _run("-m", "ringkernel", "cache", "clear")
        assert clear.returncode == 0 and "removed 1" in clear.stdout
        assert json.loads(_run("-m", "ringkernel", "cache", "stats", "--json").stdout)["entries"] == 0
    finally:
        if old is None:
            _os.environ.pop("RINGKERNEL_CACHE_DIR", None)
        else:
            _os.environ["RINGKERNEL_CACHE_DIR"] = old


def test_example_memory_pool() -> None:
    out = _run(str(ROOT / "examples" / "memory_pool.py"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "vector add correct: True" in out.stdout and "doubled correctly: True" in out.stdout
    assert "Reduce workload to" in out.stdout


def test_example_streams_async() -> None:
    out = _run(str(ROOT / "examples" / "streams_async.py"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "asyncio.gather of two kernels correct: True" in out.stdout and "pipeline correct: True" in out.stdout


def test_example_stencil_nd() -> None:
    out = _run(str(ROOT / "examples" / "stencil_nd.py"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2-D matches NumPy: True" in out.stdout and "3-D matches NumPy: True" in out.stdout
    assert "refused, as it should be" in out.stdout and "with elements=(width, height): True" in out.stdout


def test_example_context() -> None:
    out = _run(str(ROOT / "examples" / "context.py"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 launches recorded" in out.stdout and "results match NumPy: True" in out.stdout


def test_example_kernel_cache() -> None:
    out = _run(str(ROOT / "examples" / "kernel_cache.py"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "miss first: True" in out.stdout and "then a hit: True" in out.stdout
    assert "changes the key" in out.stdout and "(True)" in out.stdout


# -- --version, --help, option checks ---------------------------------------------------------


def test_version() -> None:
    out = _run("-m", "ringkernel", "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"ringkernel {ringkernel.__version__}"


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of the parser, found by walking it (so new ones are covered)."""
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += _command_paths(sub, (*prefix, name))
    return paths


COMMANDS = _command_paths(build_parser())
# reST that must not leak into --help: ``literal``, :role:`x`, `interpreted`, "Examples::".
REST = re.compile(r"``|:[A-Za-z][\w+-]*:`|`[^`\n]+`|\S::(\s|$)")


def test_every_command_is_walked() -> None:
    assert {("bench", "run"), ("bench", "compare"), ("bench", "report"), ("cache", "stats"), ("demo",)} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "ringkernel")
def test_help_has_no_rest_markup(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: ringkernel"), text
    assert REST.search(text) is None, f"reST markup in `ringkernel {' '.join(path)} --help`:\n{text}"
    if path:  # every subcommand says what it does, not only how to call it
        assert len(text.split("\n\n")) >= 3, text


def test_help_subprocess_top_level() -> None:
    out = _run("-m", "ringkernel", "--help")
    assert out.returncode == 0 and "--version" in out.stdout and "bench" in out.stdout
    assert REST.search(out.stdout) is None, out.stdout


def test_bench_help_states_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for path in (("bench",), ("bench", "run"), ("bench", "compare")):
        with pytest.raises(SystemExit):
            main([*path, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "0 when nothing regressed, 1 when something regressed, 2 on an error" in text, text


def test_plain_strips_rest() -> None:
    assert _plain("``ringkernel`` command line: ``demo``, ``bench run|compare``.") == (
        "ringkernel command line: demo, bench run|compare."
    )
    assert _plain("see :func:`ringkernel.cli.main` and :class:`~ringkernel.benchmark.Benchmark`") == (
        "see ringkernel.cli.main and Benchmark"
    )
    assert _plain(":py:meth:`save <BenchmarkSuite.save_baseline>` writes `it`_. Example::") == "save writes it. Example:"
    assert _plain("10% of 2^26, a::b") == "10% of 2^26, a::b"
    assert _plain(None) is None


BAD_OPTIONS = [
    (["demo", "--repeat", "0"], "--repeat"),
    (["demo", "--repeat", "-2"], "--repeat"),
    (["demo", "--repeat", "two"], "--repeat"),
    (["demo", "--elements", "0"], "--elements"),
    (["demo", "--elements", "-5"], "--elements"),
    (["demo", "--elements", "1e3"], "--elements"),
    (["demo", "--seed", "-1"], "--seed"),
    (["bench", "run", "s.py", "--iterations", "1"], "--iterations"),
    (["bench", "run", "s.py", "--threshold", "0"], "--threshold"),
    (["bench", "run", "s.py", "--threshold", "1.5"], "--threshold"),
    (["bench", "run", "s.py", "--formats", "pdf"], "--formats"),
    (["bench", "compare", "a.json", "b.json", "--threshold", "-0.1"], "--threshold"),
    (["bench", "compare", "a.json", "b.json", "--threshold", "nan"], "--threshold"),
    (["bench", "compare", "a.json", "b.json", "--confidence", "1"], "--confidence"),
    (["bench", "compare", "a.json", "b.json", "--confidence", "inf"], "--confidence"),
    (["bench", "compare", "a.json", "b.json", "--confidence", "high"], "--confidence"),
    (["bench", "compare", "a.json", "b.json", "--policy", "maybe"], "--policy"),
    (["bench", "report", "r.json", "--formats", "docx"], "--formats"),
]


@pytest.mark.parametrize("argv,option", BAD_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_bad_numeric_options_are_rejected_at_parse_time(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Rejected before the command runs: no file named in argv exists, and nothing is compiled.
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}:" in err, err
    assert "Traceback" not in err


def test_demo_repeat_one_is_accepted() -> None:
    args = build_parser().parse_args(["demo", "--repeat", "1", "--elements", "1", "--seed", "0"])
    assert (args.repeat, args.elements, args.seed) == (1, 1, 0)
    args = build_parser().parse_args(["bench", "compare", "a", "b", "--threshold", "0.05", "--confidence", "0.99"])
    assert (args.threshold, args.confidence) == (0.05, 0.99)


# -- ringkernel profile -----------------------------------------------------------------------------
PROFILED_SCRIPT = """
import sys
import numpy as np
import ringkernel
from ringkernel.kernels import vector_add
from numba import cuda
a = cuda.to_device(np.arange(64, dtype=np.float32))
c = cuda.device_array_like(a)
for _ in range(3):
    vector_add(a, a, c)
assert (c.copy_to_host() == 2 * np.arange(64)).all()
print("script args", sys.argv[1:], "main" if __name__ == "__main__" else __name__)
if sys.argv[1:] == ["fail"]:
    raise RuntimeError("the script failed")
if sys.argv[1:] == ["exit"]:
    sys.exit(3)
"""


def test_profile_runs_a_script_writes_its_trace_and_summary(tmp_path: Path) -> None:
    script = tmp_path / "work.py"
    script.write_text(PROFILED_SCRIPT)
    trace = tmp_path / "out" / "trace.json"
    out = _run("-m", "ringkernel", "profile", str(script), "--trace", str(trace), "--summary", "--", "x", "--y")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "script args ['x', '--y'] main" in out.stdout
    assert f"wrote trace: {trace}" in out.stdout
    assert "vector_add" in out.stdout and "launches" in out.stdout and "host (simulator)" in out.stdout
    data = json.loads(trace.read_text())
    gpu = [(e["cat"], e["name"]) for e in data["traceEvents"] if e["ph"] == "X" and e["pid"] >= 100]
    assert gpu == [("memcpy", "memcpy HtoD"), *[("kernel", "vector_add")] * 3, ("memcpy", "memcpy DtoH")]
    assert data["metadata"]["session"] == "work.py" and data["metadata"]["timing_source"] == "host (simulator)"


@pytest.mark.parametrize("arg,status", [("fail", 1), ("exit", 3), ("ok", 0)])
def test_profile_keeps_the_scripts_status_and_still_reports(
    tmp_path: Path, arg: str, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "work.py"
    script.write_text(PROFILED_SCRIPT)
    trace = tmp_path / "t.json"
    argv = list(sys.argv)
    assert main(["profile", "--session", "s1", str(script), "--trace", str(trace), arg]) == status
    assert sys.argv == argv, "the script's argv is restored"
    captured = capsys.readouterr()
    data = json.loads(trace.read_text())
    assert data["metadata"]["session"] == "s1"
    assert sum(1 for e in data["traceEvents"] if e["ph"] == "X" and e.get("cat") == "kernel") == 3, "launches before the exit"
    if arg == "fail":
        assert "RuntimeError: the script failed" in captured.err
    assert f"wrote trace: {trace}" in captured.out and "profile 's1'" not in captured.out  # --trace alone: no summary


def test_profile_without_trace_prints_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "work.py"
    script.write_text(PROFILED_SCRIPT)
    assert main(["profile", str(script)]) == 0
    out = capsys.readouterr().out
    assert "profile 'work.py'" in out and "vector_add" in out and "default stream" in out


def test_profile_writes_the_offline_trace_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "work.py"
    script.write_text(PROFILED_SCRIPT)
    page = tmp_path / "out" / "trace.html"
    assert main(["profile", str(script), "--html", str(page), "--", "x"]) == 0
    out = capsys.readouterr().out
    assert f"wrote trace page: {page}" in out and "script args ['x'] main" in out
    assert "profile 'work.py'" not in out, "--html alone: no summary"
    text = page.read_text()
    # 3 launch calls and 3 kernels, 2 copy calls and 2 copies, each call joined to its GPU slice
    assert text.startswith("<!DOCTYPE html>") and text.count('class="slice"') == 10
    assert text.count('class="flow"') == 5 and "<h1>work.py</h1>" in text


def test_profile_missing_script_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", str(tmp_path / "nope.py")]) == 2
    err = capsys.readouterr().err
    assert "ringkernel profile: error:" in err and "does not exist" in err and "Traceback" not in err


def test_profile_refuses_outputs_it_cannot_write_before_the_script_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An adversarial trial: a --trace under a file was found only after the script ran (a raw
    traceback, no page, no summary), a bare --trace went to the script's argv, --trace= was
    ignored. Now each is refused before the script runs; a script ended by Ctrl-C still has its
    trace written (status 130)."""
    script = tmp_path / "work.py"
    script.write_text("print('the script ran')\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for argv in (["--trace", str(a_file / "t.json")], ["--trace"], ["--trace="], ["--html="]):
        assert main(["profile", str(script), *argv]) == 2, argv
        captured = capsys.readouterr()
        assert "the script ran" not in captured.out and "ringkernel profile: error:" in captured.err, argv
    interrupted = tmp_path / "ctrl_c.py"
    interrupted.write_text("raise KeyboardInterrupt\n")
    trace = tmp_path / "t.json"
    assert main(["profile", str(interrupted), "--trace", str(trace)]) == 130
    assert json.loads(trace.read_text())["traceEvents"]
