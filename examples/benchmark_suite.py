"""The benchmark framework in one page: run a suite, compare with a baseline, write reports.

    python examples/benchmark_suite.py OUT_DIR

It is also a ``ringkernel bench run`` script (it defines ``benchmarks()``)::

    ringkernel bench run examples/benchmark_suite.py --out OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ringkernel.benchmark import Benchmark, BenchmarkConfig, BenchmarkRunner, BenchmarkSuite

SIZES = [1 << 12, 1 << 14, 1 << 16, 1 << 18]


def benchmarks() -> list[Benchmark]:
    """NumPy's sort at four sizes (host work: runs anywhere)."""
    rng = np.random.default_rng()
    cases = []
    for n in SIZES:
        data = rng.random(n)
        cases.append(Benchmark("np.sort", lambda d=data: np.sort(d), n, gpu=False))
    return cases


def main(out: Path) -> int:
    config = BenchmarkConfig(warmup_iterations=2, measurement_iterations=20, regression_threshold=0.10)
    runner = BenchmarkRunner(config)

    # 1. A baseline run, saved to disk.
    baseline = BenchmarkSuite(config)
    baseline.run(benchmarks(), runner=runner)
    baseline.save_baseline(out / "baseline.json", label="example")

    # 2. A second run judged against it: Improved / Unchanged / Regressed / Inconclusive.
    current = BenchmarkSuite(config)
    current.run(benchmarks(), runner=runner)
    current.set_baseline(out / "baseline.json")
    report = current.compare_to_baseline()
    assert report is not None
    print(report.to_markdown())

    # 3. Scaling: sort throughput falls slowly with size (n log n work).
    scaling = current.scaling("np.sort")
    print(f"np.sort scaling exponent {scaling.exponent:.3f} "
          f"(95% CI {scaling.exponent_ci.low:.3f}..{scaling.exponent_ci.high:.3f}, R² {scaling.r_squared:.3f})")

    # 4. The four report formats.
    for fmt, path in current.write_reports(out, title="np.sort example").items():
        print(f"{fmt}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("bench-example")))
