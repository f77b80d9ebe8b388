"""``ringkernel`` command line: ``demo``, ``info``, ``profile``, ``cache stats|clear|path``, ``bench run|compare|report``."""

from __future__ import annotations

import argparse
import os
import json
import re
import sys
import time
import traceback
from typing import Any, Callable, Sequence

from ._versions import driver_version as _driver_version
from ._versions import library_versions as _versions

__all__ = ["main"]


def cmd_info(args: argparse.Namespace) -> int:
    from .config import use_simulator_if_no_gpu

    simulated = use_simulator_if_no_gpu()
    from .device import GpuArchitecture

    arch = GpuArchitecture.current()
    facts: dict[str, Any] = {
        "backend": "numba CUDA simulator (no GPU found)" if simulated else "CUDA GPU",
        "device": arch.name,
        "compute_capability": f"{arch.compute_capability[0]}.{arch.compute_capability[1]}",
        "sm_count": arch.sm_count,
        "l2_cache_bytes": arch.l2_cache_bytes,
        "max_threads_per_sm": arch.max_threads_per_sm,
        "max_threads_per_block": arch.max_threads_per_block,
        "max_blocks_per_sm": arch.max_blocks_per_sm,
        "max_shared_memory_per_block": arch.max_shared_memory_per_block,
        "shared_memory_per_sm": arch.shared_memory_per_sm,
        "registers_per_sm": arch.registers_per_sm,
        "warp_size": arch.warp_size,
    }
    if not simulated:
        drv = _driver_version()
        if drv:
            facts["cuda_driver"] = drv
    from . import native

    st = native.status()
    path = f"compiled ({st.detail})" if st.in_use else f"Python ({st.detail})"
    facts["launch_path"] = f"numba's simulator (on a GPU: {path})" if simulated else path
    facts["versions"] = _versions()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        if key == "versions":
            print(f"{'versions':<{width}}  " + ", ".join(f"{k} {v}" for k, v in value.items()))
        else:
            print(f"{key:<{width}}  {value}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .config import use_simulator_if_no_gpu

    simulated = use_simulator_if_no_gpu()
    import numpy as np
    from numba import cuda

    from .device import GpuArchitecture
    from .kernels import vector_add, vector_add_reference

    arch = GpuArchitecture.current()
    n = args.elements if args.elements is not None else (4096 if simulated else 1 << 26)
    print(f"ringkernel demo: vector add of {n:,} float32 on {arch.name}"
          + (" (no GPU found: running on numba's CUDA simulator, which is slow)" if simulated else ""))
    rng = np.random.default_rng(args.seed)
    try:
        a = rng.standard_normal(n, dtype=np.float32)
        b = rng.standard_normal(n, dtype=np.float32)
    except MemoryError:
        from .errors import ConfigurationError

        raise ConfigurationError(f"{n:,} elements do not fit in this machine's memory (3 arrays of {4 * n:,} bytes)",
                                 hint="pass a smaller --elements") from None  # fmt: skip
    d_a, d_b = cuda.to_device(a), cuda.to_device(b)
    d_c = cuda.device_array_like(d_a)

    t0 = time.perf_counter()
    vector_add(d_a, d_b, d_c)  # first launch compiles
    cuda.synchronize()
    first_ms = (time.perf_counter() - t0) * 1e3
    decision = vector_add.last_config
    assert decision is not None
    print("configuration:\n  " + decision.explain().replace("\n", "\n  "))

    reps = args.repeat if args.repeat is not None else (3 if simulated else 50)
    times = []
    for _ in range(reps):
        if simulated:
            t = time.perf_counter()
            vector_add(d_a, d_b, d_c)
            cuda.synchronize()
            times.append((time.perf_counter() - t) * 1e3)
        else:
            start, end = cuda.event(), cuda.event()
            start.record()
            vector_add(d_a, d_b, d_c)
            end.record()
            end.synchronize()
            times.append(cuda.event_elapsed_time(start, end))
    med = float(np.median(times))
    got = d_c.copy_to_host()
    ok = bool(np.array_equal(got, vector_add_reference(a, b)))
    moved = 3 * n * 4
    if simulated:
        print(f"first launch (compile + run): {first_ms:.1f} ms")
    else:
        ck = vector_add.compiled(d_a, d_b, d_c)
        where = (f"loaded from the kernel cache in {ck.load_ms:.2f} ms" if ck.from_cache
                 else f"compiled by numba in {ck.load_ms:.0f} ms and cached for the next process")  # fmt: skip
        print(f"first launch: {first_ms:.1f} ms ({where}; `ringkernel cache path` shows where)")
    print(f"median of {reps} launches: {med:.3f} ms ({'host clock' if simulated else 'CUDA events'}), "
          f"{moved / (med * 1e-3) / 1e9:.3g} GB/s counting {moved:,} bytes read+written")
    print(f"result matches NumPy: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


def _load_benchmarks(script: str) -> list[Any]:
    import importlib.util
    from pathlib import Path

    from .benchmark import Benchmark
    from .errors import BenchmarkError

    path = Path(script)
    shown = str(path) if path.is_absolute() else f"{path} (absolute: {path.absolute()})"
    if not path.is_file():
        what = "is a directory, not a script" if path.is_dir() else "does not exist"
        raise BenchmarkError(
            f"the benchmark script {shown} {what}",
            hint="pass a Python file that defines benchmarks(), e.g. examples/benchmark_suite.py",
        )
    spec = importlib.util.spec_from_file_location(f"_ringkernel_bench_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise BenchmarkError(f"cannot import the benchmark script {shown}", hint="pass a .py file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        factory = getattr(module, "benchmarks", None)
        if not callable(factory):
            raise BenchmarkError(
                f"the benchmark script {shown} must define benchmarks() returning Benchmark objects",
                hint="see examples/benchmark_suite.py",
            )
        cases = list(factory())
    except (BenchmarkError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # the user's code: SyntaxError, ImportError, SystemExit, anything
        where = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise BenchmarkError(
            f"the benchmark script {shown} failed while loading its benchmarks: {where}",
            hint=f"run `python {script}` to see the full traceback",
        ) from exc
    bad = [c for c in cases if not isinstance(c, Benchmark)]
    if bad or not cases:
        raise BenchmarkError(
            f"benchmarks() in {shown} must return Benchmark objects, got {bad[:1] or 'none'}",
            hint="return e.g. [Benchmark('name', fn, workload_size)]",
        )
    return cases


def cmd_bench_run(args: argparse.Namespace) -> int:
    from .config import use_simulator_if_no_gpu

    use_simulator_if_no_gpu()
    from .benchmark import BenchmarkConfig, BenchmarkRunner, BenchmarkSuite
    from .errors import BenchmarkError

    cfg = BenchmarkConfig.quick() if args.quick else BenchmarkConfig()
    overrides = {k: v for k, v in (("measurement_iterations", args.iterations), ("regression_threshold", args.threshold),
                                   ("flush_l2", True if args.flush_l2 else None)) if v is not None}  # fmt: skip
    if overrides:
        from dataclasses import replace

        cfg = replace(cfg, **overrides)
    cases = _load_benchmarks(args.script)
    suite = BenchmarkSuite(cfg)
    if args.baseline:
        suite.set_baseline(args.baseline)
    def write_finished(why: str) -> None:
        """A run cut short (Ctrl-C, a case that raised): what the finished cases measured is written."""
        if not suite.results:
            print(f"ringkernel: {why} before any benchmark finished; nothing written", file=sys.stderr)
            return
        paths = suite.write_reports(args.out, args.formats, title=args.title or f"Benchmarks: {args.script}")
        print(f"ringkernel: {why}; wrote the {len(suite.results)} completed results to "
              + ", ".join(map(str, paths.values())), file=sys.stderr)  # fmt: skip

    try:
        suite.run(cases, runner=BenchmarkRunner(cfg, progress=None), progress=None)
    except KeyboardInterrupt:
        write_finished("interrupted")
        return 130  # as a shell reports Ctrl-C
    except BenchmarkError:
        write_finished("a benchmark raised")
        raise
    paths = suite.write_reports(args.out, args.formats, title=args.title or f"Benchmarks: {args.script}")
    print(suite.generate_markdown_report(args.title or f"Benchmarks: {args.script}"))
    for fmt, path in paths.items():
        print(f"wrote {fmt}: {path}")
    report = suite.compare_to_baseline()
    return 1 if report is not None and report.has_regressions else 0


def cmd_bench_compare(args: argparse.Namespace) -> int:
    from .benchmark import BenchmarkBaseline, EnvironmentPolicy, compare_results
    from .errors import EnvironmentMismatchError

    current = BenchmarkBaseline.load(args.current, role="current results")
    baseline = BenchmarkBaseline.load(args.baseline, role="baseline")
    try:
        report = compare_results(
            baseline.results, current.results, threshold=args.threshold, confidence=args.confidence,
            baseline_environment=baseline.environment, current_environment=current.environment,
            policy=EnvironmentPolicy(args.policy),
        )  # fmt: skip
    except EnvironmentMismatchError as exc:
        raise EnvironmentMismatchError(
            exc.message,
            hint="re-measure the baseline on this machine, or pass --policy warn to compare anyway",
            details=exc.details,
        ) from exc
    if not report.results:
        from .errors import BenchmarkError

        raise BenchmarkError(
            f"the current results ({args.current}) and the baseline ({args.baseline}) share no benchmark: "
            "nothing was compared",
            hint="compare results of the same benchmark script (names must match), or refresh the baseline",
        )
    print(report.to_markdown())
    return 1 if report.has_regressions else 0


def cmd_bench_report(args: argparse.Namespace) -> int:
    from .benchmark import BenchmarkSuite

    suite = BenchmarkSuite.from_json(args.results)
    if args.baseline:
        suite.set_baseline(args.baseline)
    paths = suite.write_reports(args.out, args.formats, title=args.title or "Benchmark report")
    for fmt, path in paths.items():
        print(f"wrote {fmt}: {path}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from .compile import PtxCache

    cache = PtxCache()
    if args.cache_command == "path":
        print(cache.cache_dir)
    elif args.cache_command == "clear":
        if cache.cache_dir.exists() and not cache.cache_dir.is_dir():
            print(f"ringkernel: the cache path {cache.cache_dir} is not a directory: nothing to clear "
                  "(remove it or point RINGKERNEL_CACHE_DIR elsewhere)", file=sys.stderr)  # fmt: skip
            return 1
        print(f"removed {cache.clear()} entries from {cache.cache_dir}")
    else:
        st = cache.stats()
        facts = {
            "directory": st.directory, "entries": st.entries, "bytes": st.bytes, "enabled": st.enabled,
            "temp_files": st.temp_files, "stale_temp_removed": st.stale_temp_removed,
            "refused_reason": st.refused_reason,
        }  # fmt: skip
        if args.json:
            print(json.dumps(facts, indent=2))
        else:
            for key, value in facts.items():
                if key == "refused_reason" and value is None:
                    continue
                print(f"{key:<19}{value:,}" if isinstance(value, int) and not isinstance(value, bool) else f"{key:<19}{value}")
    return 0


def _own_options_after_script(args: argparse.Namespace) -> None:
    """``ringkernel profile script.py --trace t.json --summary -- --script-flag``: the profile
    options right after the script are ringkernel's; the script's own start after them (or
    after ``--``). argparse gives everything after the script to the script otherwise."""
    rest = list(args.script_args)
    while rest:
        head = rest[0]
        if head == "--":
            rest.pop(0)
            break
        if head == "--summary":
            args.summary = True
            rest.pop(0)
        elif head in ("--trace", "--session", "--html"):
            if len(rest) < 2:
                from .errors import ConfigurationError

                raise ConfigurationError(f"{head} needs a value", hint=f"e.g. {head} {'trace.json' if head == '--trace' else 'trace.html' if head == '--html' else 'name'}")
            setattr(args, head[2:], rest[1])
            del rest[:2]
        elif head.startswith(("--trace=", "--session=", "--html=")):
            name, _, value = head[2:].partition("=")
            setattr(args, name, value)
            rest.pop(0)
        else:
            break
    args.script_args = rest


def cmd_profile(args: argparse.Namespace) -> int:
    """Run a script under a :class:`~ringkernel.profiling.GpuProfiler`; write its trace, print its summary."""
    from .config import use_simulator_if_no_gpu

    use_simulator_if_no_gpu()
    import runpy
    from pathlib import Path

    from .errors import ConfigurationError
    from .profiling import GpuProfiler

    _own_options_after_script(args)
    path = Path(args.script)
    if not path.is_file():
        what = "is a directory, not a script" if path.is_dir() else "does not exist"
        raise ConfigurationError(f"the script {path} {what}", hint="pass a Python file: ringkernel profile script.py")
    for option, out in (("--trace", args.trace), ("--html", args.html)):  # before the run, not after it
        if out is not None and not out:
            raise ConfigurationError(f"{option}= names no file", hint=f"e.g. {option} trace{'.json' if option == '--trace' else '.html'}")
        if out and Path(out).is_dir():
            raise ConfigurationError(f"{option} {out} is a folder", hint=f"name a file, e.g. {option} {Path(out) / 'trace'}"
                                     f"{'.json' if option == '--trace' else '.html'}")  # fmt: skip
        if out:  # a folder that cannot hold it: found now, not after the script ran (an adversarial trial)
            parent = Path(out).parent
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent  # (the writer creates missing folders below one that exists)
            if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigurationError(f"{option} {out}: {parent} is not a folder this process can write to",
                                         hint="name a file in a writable folder")  # fmt: skip
    profiler = GpuProfiler(args.session or path.name)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(path), *args.script_args]
    sys.path.insert(0, str(path.resolve().parent))  # as `python script.py` would
    status = 0
    try:
        with profiler:
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as exc:
                if isinstance(exc.code, int) or exc.code is None:
                    status = int(exc.code or 0)
                else:
                    print(exc.code, file=sys.stderr)
                    status = 1
            except Exception:  # the script's failure: still write what was recorded
                traceback.print_exc()
                status = 1
            except KeyboardInterrupt:  # Ctrl-C: still write what was recorded, exit as Python would
                traceback.print_exc()
                status = 130
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
    try:
        # each output on its own: one that cannot be written is reported and the others are
        # still made (an adversarial trial: an unwritable --trace lost the page and the summary)
        if args.trace:
            try:
                profiler.export_chrome_tracing(args.trace)
                print(f"wrote trace: {args.trace} (open it in https://ui.perfetto.dev or chrome://tracing)")
            except OSError as exc:
                print(f"ringkernel profile: cannot write the trace {args.trace}: {exc}", file=sys.stderr)
                status = status or 1
        if args.html:
            from ._fileio import atomic_write_bytes, shared_file_mode
            from .profiling.viewer import trace_html

            try:
                page = trace_html(profiler.chrome_trace()).encode("utf-8", errors="replace")
                atomic_write_bytes(Path(args.html), page, mode=shared_file_mode())
                print(f"wrote trace page: {args.html} (a static timeline, opens offline in any browser)")
            except OSError as exc:
                print(f"ringkernel profile: cannot write the page {args.html}: {exc}", file=sys.stderr)
                status = status or 1
        if args.summary or not (args.trace or args.html):
            print(profiler.summary())
    finally:
        profiler.close()
    return status


# reST that docstrings carry and --help must not show: :role:`target`, ``literal``, `text`.
_REST_ROLE = re.compile(r":(?:[A-Za-z][\w+-]*:)?[A-Za-z][\w+-]*:`([^`]+)`")
_REST_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
_REST_INTERPRETED = re.compile(r"`([^`]+)`_{0,2}")
_REST_TARGET = re.compile(r"^(.*?)\s*<[^<>]+>$", re.DOTALL)


def _role_text(match: re.Match[str]) -> str:
    target = match.group(1)
    titled = _REST_TARGET.match(target)
    if titled and titled.group(1):
        return titled.group(1)  # :ref:`the title <label>` -> the title
    target = target.lstrip("!")
    if target.startswith("~"):
        return target[1:].rsplit(".", 1)[-1]  # :class:`~a.b.C` -> C
    return target


def _plain(text: str | None) -> str | None:
    """``text`` without reST markup: roles, double-backtick literals and interpreted text.

    argparse shows descriptions and help verbatim; docstrings use reST. Examples::

        _plain("see :func:`ringkernel.cli.main`") == "see ringkernel.cli.main"
        _plain("``demo``, :class:`~ringkernel.benchmark.Benchmark`") == "demo, Benchmark"
    """
    if not text:
        return text
    text = _REST_ROLE.sub(_role_text, text)
    text = _REST_LITERAL.sub(r"\1", text)
    text = _REST_INTERPRETED.sub(lambda m: (_REST_TARGET.match(m.group(1)) or m).group(1), text)
    return re.sub(r"(?<=\S)::(?=\s|$)", ":", text)  # "Examples::" -> "Examples:"


def _strip_markup(parser: argparse.ArgumentParser) -> None:
    """Apply :func:`_plain` to every description, epilog and help text, subcommands included."""
    parser.description = _plain(parser.description)
    parser.epilog = _plain(parser.epilog)
    for action in parser._actions:
        action.help = _plain(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = _plain(choice.help)
            for subparser in action.choices.values():
                _strip_markup(subparser)


def _int_at_least(minimum: int, what: str, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum`` (and <= ``maximum``); argparse names the option in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum} ({what}), got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum} ({what}), got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:,} ({what}), got {value:,}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _fraction(example: str) -> Callable[[str], float]:
    """An argparse ``type``: a number strictly between 0 and 1."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0 < value < 1:  # also rejects nan and inf
            raise argparse.ArgumentTypeError(f"must be a number strictly between 0 and 1 (e.g. {example}), got {text!r}")
        return value

    parse.__name__ = "fraction"
    return parse


_EXIT = "Exit status: 0 when nothing regressed, 1 when something regressed, 2 on an error "
_BENCH_EXIT = _EXIT + "(a missing or malformed file, a bad option, a failing script)."
_COMPARE_EXIT = _EXIT + "(a missing or malformed file, a bad option, differing environments under --policy refuse)."


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="ringkernel",
        description="ringkernel's command line: a checked and timed vector add (demo), the device's facts "
        "(info), a script run under the profiler (profile), the on-disk kernel cache (cache), and benchmark "
        "runs, comparisons and reports (bench).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    def add(subs: Any, name: str, text: str, epilog: str | None = None) -> argparse.ArgumentParser:
        return subs.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".", epilog=epilog)

    demo = add(sub, "demo", "vector add on the GPU (or the simulator), checked against NumPy and timed")
    demo.add_argument("--elements", type=_int_at_least(1, "the vector length", maximum=1 << 32), default=None,
                      help="vector length (default 2^26 on a GPU, 4096 on the simulator)")  # fmt: skip
    demo.add_argument("--repeat", type=_int_at_least(1, "the number of timed launches"), default=None,
                      help="timed launches (default 50 on a GPU, 3 on the simulator)")  # fmt: skip
    demo.add_argument("--seed", type=_int_at_least(0, "a random seed"), default=None,
                      help="random seed, an integer >= 0 (default: fresh)")  # fmt: skip
    demo.set_defaults(func=cmd_demo)
    info = add(sub, "info", "device facts and versions")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_info)

    cache = add(sub, "cache", "the on-disk kernel cache (RINGKERNEL_CACHE_DIR)")
    csub = cache.add_subparsers(dest="cache_command", required=True)
    cst = add(csub, "stats", "entries and bytes on disk")
    cst.add_argument("--json", action="store_true", help="print JSON")
    add(csub, "clear", "delete every cached kernel")
    add(csub, "path", "print the cache directory")
    cache.set_defaults(func=cmd_cache)

    prof = add(sub, "profile", "run a Python script under the profiler: GPU-timed kernels, a trace, a summary",
               "Exit status: the script's own (1 when it raised), 2 on a bad option.")  # fmt: skip
    prof.add_argument("script", help="the Python file to run, as python would run it")
    prof.add_argument("script_args", nargs=argparse.REMAINDER,
                      help="the script's arguments (after the options below, or after --)")  # fmt: skip
    prof.add_argument("--trace", metavar="OUT.json", help="write a Chrome/Perfetto trace there")
    prof.add_argument("--html", metavar="OUT.html", help="write the trace as a static HTML timeline there (offline viewer)")
    prof.add_argument("--summary", action="store_true", help="print the summary (the default without --trace or --html)")
    prof.add_argument("--session", help="session name shown in the trace (default: the script's name)")
    prof.set_defaults(func=cmd_profile)

    from .benchmark.suite import REPORT_FORMATS

    formats = ", ".join(REPORT_FORMATS)
    bench = add(sub, "bench", "run benchmark scripts, compare to baselines, write reports", _BENCH_EXIT)
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    run = add(bsub, "run", "run the Benchmark objects a script's benchmarks() returns", _BENCH_EXIT)
    run.add_argument("script", help="a Python file defining benchmarks() -> iterable of ringkernel.benchmark.Benchmark")
    run.add_argument("--out", default="bench-results", help="directory for the reports (default: bench-results)")
    run.add_argument("--formats", nargs="+", default=list(REPORT_FORMATS), choices=list(REPORT_FORMATS),
                     metavar="FORMAT", help=f"reports to write, any of {formats} (default: all)")  # fmt: skip
    run.add_argument("--baseline", help="JSON export to compare against (exit status 1 on a regression)")
    run.add_argument("--iterations", type=_int_at_least(2, "samples per benchmark"),
                     help="samples per benchmark, at least 2 (default 30)")  # fmt: skip
    run.add_argument("--threshold", type=_fraction("0.10 for 10%"),
                     help="regression threshold, strictly between 0 and 1 (default 0.10 = 10%%)")  # fmt: skip
    run.add_argument("--flush-l2", action="store_true", help="flush the L2 cache before every GPU sample")
    run.add_argument("--quick", action="store_true", help="5 samples, 1 warm-up: a smoke test")
    run.add_argument("--title", help="report title")
    run.set_defaults(func=cmd_bench_run)
    cmp_ = add(bsub, "compare", "judge CURRENT against BASELINE (both JSON exports)", _COMPARE_EXIT)
    cmp_.add_argument("current", help="JSON export of the run to judge (the results.json of bench run)")
    cmp_.add_argument("baseline", help="JSON export to judge it against")
    cmp_.add_argument("--threshold", type=_fraction("0.10 for 10%"), default=0.10,
                      help="smallest change of the median to call, strictly between 0 and 1 (default 0.10 = 10%%)")  # fmt: skip
    cmp_.add_argument("--confidence", type=_fraction("0.95"), default=0.95,
                      help="level of the interval of the change, strictly between 0 and 1 (default 0.95)")  # fmt: skip
    cmp_.add_argument("--policy", choices=["warn", "refuse", "ignore"], default="warn",
                      help="when the environments differ: compare with a warning, refuse (exit 2), "
                           "or compare silently (default: warn)")  # fmt: skip
    cmp_.set_defaults(func=cmd_bench_compare)
    rep = add(bsub, "report", "write reports from a JSON export",
              "Exit status: 0 when the reports were written, 2 on an error (a missing or malformed file).")  # fmt: skip
    rep.add_argument("results", help="JSON export to report on (the results.json of bench run)")
    rep.add_argument("--out", default="bench-results", help="directory for the reports (default: bench-results)")
    rep.add_argument("--formats", nargs="+", default=list(REPORT_FORMATS), choices=list(REPORT_FORMATS),
                     metavar="FORMAT", help=f"reports to write, any of {formats} (default: all)")  # fmt: skip
    rep.add_argument("--baseline", help="JSON export to compare against, shown in the reports")
    rep.add_argument("--title", help="report title")
    rep.set_defaults(func=cmd_bench_report)
    _strip_markup(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ringkernel`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    ``bench`` exits 0 when nothing regressed, 1 when something did and 2 on any error;
    ``demo`` 0 when the result matches NumPy, 1 when it does not, 2 on an error; ``profile``
    the script's own status (1 when it raised, 130 on Ctrl-C), 2 on an error of its own;
    ``info`` and ``cache`` 0, or 1 on an error; argparse exits 2 (``SystemExit``) on bad
    arguments (docs/index.md, "Command line").
    """
    args = build_parser().parse_args(argv)
    from .errors import RingKernelError

    sub = getattr(args, "bench_command", None) or getattr(args, "cache_command", None)
    prog = f"ringkernel {args.command}" + (f" {sub}" if sub else "")
    try:
        return int(args.func(args))
    except RingKernelError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        # 1 means something else for these (bench: a regression; demo: a wrong result;
        # profile: the script raised), so their errors are 2, as argparse's are
        return 2 if args.command in ("bench", "demo", "profile") else 1
    except Exception as exc:
        if args.command != "bench":
            raise
        # Exit status 1 means "regressed" to CI; an unexpected failure must not look like one.
        traceback.print_exc()
        print(f"{prog}: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
