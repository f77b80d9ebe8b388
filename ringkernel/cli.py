"""``ringkernel`` command line: ``demo``, ``info``, ``cache stats|clear|path``, ``bench run|compare|report``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence

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
    if n <= 0:
        print(f"error: --elements must be positive, got {n}", file=sys.stderr)
        return 2
    print(f"ringkernel demo: vector add of {n:,} float32 on {arch.name}"
          + (" (no GPU found: running on numba's CUDA simulator, which is slow)" if simulated else ""))
    rng = np.random.default_rng(args.seed)
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    d_a, d_b = cuda.to_device(a), cuda.to_device(b)
    d_c = cuda.device_array_like(d_a)

    t0 = time.perf_counter()
    vector_add(d_a, d_b, d_c)  # first launch compiles
    cuda.synchronize()
    first_ms = (time.perf_counter() - t0) * 1e3
    decision = vector_add.last_config
    assert decision is not None
    print("configuration:\n  " + decision.explain().replace("\n", "\n  "))

    reps = args.repeat if args.repeat else (3 if simulated else 50)
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

    path = Path(script)
    if not path.is_file():
        raise SystemExit(f"ringkernel bench run: no such script {script!r}")
    spec = importlib.util.spec_from_file_location(f"_ringkernel_bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    factory = getattr(module, "benchmarks", None)
    if not callable(factory):
        raise SystemExit(f"ringkernel bench run: {script} must define benchmarks() returning Benchmark objects")
    cases = list(factory())
    bad = [c for c in cases if not isinstance(c, Benchmark)]
    if bad or not cases:
        raise SystemExit(f"ringkernel bench run: benchmarks() in {script} must return Benchmark objects, got {bad[:1] or 'none'}")
    return cases


def cmd_bench_run(args: argparse.Namespace) -> int:
    from .config import use_simulator_if_no_gpu

    use_simulator_if_no_gpu()
    from .benchmark import BenchmarkConfig, BenchmarkRunner, BenchmarkSuite

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
    suite.run(cases, runner=BenchmarkRunner(cfg, progress=None), progress=None)
    paths = suite.write_reports(args.out, args.formats, title=args.title or f"Benchmarks: {args.script}")
    print(suite.generate_markdown_report(args.title or f"Benchmarks: {args.script}"))
    for fmt, path in paths.items():
        print(f"wrote {fmt}: {path}")
    report = suite.compare_to_baseline()
    return 1 if report is not None and report.has_regressions else 0


def cmd_bench_compare(args: argparse.Namespace) -> int:
    from .benchmark import BenchmarkBaseline, EnvironmentPolicy, compare_results

    current = BenchmarkBaseline.load(args.current)
    baseline = BenchmarkBaseline.load(args.baseline)
    report = compare_results(
        baseline.results, current.results, threshold=args.threshold, confidence=args.confidence,
        baseline_environment=baseline.environment, current_environment=current.environment,
        policy=EnvironmentPolicy(args.policy),
    )  # fmt: skip
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
        print(f"removed {cache.clear()} entries from {cache.cache_dir}")
    else:
        st = cache.stats()
        if args.json:
            print(json.dumps({"directory": st.directory, "entries": st.entries, "bytes": st.bytes}, indent=2))
        else:
            print(f"directory  {st.directory}\nentries    {st.entries}\nbytes      {st.bytes:,}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringkernel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="vector add on the GPU (or the simulator), checked against NumPy and timed")
    demo.add_argument("--elements", type=int, default=None, help="vector length (default 2^26 on a GPU, 4096 on the simulator)")
    demo.add_argument("--repeat", type=int, default=None, help="timed launches (default 50 on a GPU, 3 on the simulator)")
    demo.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
    demo.set_defaults(func=cmd_demo)
    info = sub.add_parser("info", help="device facts and versions")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_info)

    cache = sub.add_parser("cache", help="the on-disk kernel cache (RINGKERNEL_CACHE_DIR)")
    csub = cache.add_subparsers(dest="cache_command", required=True)
    cst = csub.add_parser("stats", help="entries and bytes on disk")
    cst.add_argument("--json", action="store_true")
    csub.add_parser("clear", help="delete every cached kernel")
    csub.add_parser("path", help="print the cache directory")
    cache.set_defaults(func=cmd_cache)

    from .benchmark.suite import REPORT_FORMATS

    bench = sub.add_parser("bench", help="run benchmark scripts, compare to baselines, write reports")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    run = bsub.add_parser("run", help="run the Benchmark objects a script's benchmarks() returns")
    run.add_argument("script", help="a Python file defining benchmarks() -> iterable of ringkernel.benchmark.Benchmark")
    run.add_argument("--out", default="bench-results", help="directory for the reports (default: bench-results)")
    run.add_argument("--formats", nargs="+", default=list(REPORT_FORMATS), choices=list(REPORT_FORMATS))
    run.add_argument("--baseline", help="JSON export to compare against (exit status 1 on a regression)")
    run.add_argument("--iterations", type=int, help="samples per benchmark (default 30)")
    run.add_argument("--threshold", type=float, help="regression threshold (default 0.10)")
    run.add_argument("--flush-l2", action="store_true", help="flush the L2 cache before every GPU sample")
    run.add_argument("--quick", action="store_true", help="5 samples, 1 warm-up: a smoke test")
    run.add_argument("--title", help="report title")
    run.set_defaults(func=cmd_bench_run)
    cmp_ = bsub.add_parser("compare", help="judge CURRENT against BASELINE (both JSON exports); exit 1 on a regression")
    cmp_.add_argument("current")
    cmp_.add_argument("baseline")
    cmp_.add_argument("--threshold", type=float, default=0.10)
    cmp_.add_argument("--confidence", type=float, default=0.95)
    cmp_.add_argument("--policy", choices=["warn", "refuse", "ignore"], default="warn",
                      help="when the environments differ (default: warn)")  # fmt: skip
    cmp_.set_defaults(func=cmd_bench_compare)
    rep = bsub.add_parser("report", help="write reports from a JSON export")
    rep.add_argument("results")
    rep.add_argument("--out", default="bench-results")
    rep.add_argument("--formats", nargs="+", default=list(REPORT_FORMATS), choices=list(REPORT_FORMATS))
    rep.add_argument("--baseline", help="JSON export to compare against, shown in the reports")
    rep.add_argument("--title")
    rep.set_defaults(func=cmd_bench_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import RingKernelError

    try:
        return int(args.func(args))
    except RingKernelError as exc:
        print(f"ringkernel {args.command}: {exc}", file=sys.stderr)
        return 2 if args.command == "bench" else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
