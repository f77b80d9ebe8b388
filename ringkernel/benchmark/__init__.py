"""Benchmark framework: sound statistics, GPU timing hygiene, regression detection, reports.

Importing this package imports NumPy but neither numba nor SciPy; GPU timing imports numba
when first used, statistics import SciPy when first used.
"""

from .environment import EnvironmentFingerprint
from .regression import (
    BenchmarkBaseline,
    EnvironmentPolicy,
    RegressionReport,
    RegressionResult,
    RegressionStatus,
    compare_results,
    compare_samples,
)
from .results import BenchmarkConfig, BenchmarkResult
from .runner import Benchmark, BenchmarkRunner, GpuTimer, Progress
from .statistics import ConfidenceInterval, OutlierKind, OutlierReport, ScalingMetrics, Statistics, Summary
from .suite import REPORT_FORMATS, BenchmarkSuite

__all__ = [
    "Benchmark", "BenchmarkBaseline", "BenchmarkConfig", "BenchmarkResult", "BenchmarkRunner",
    "BenchmarkSuite", "ConfidenceInterval", "EnvironmentFingerprint", "EnvironmentPolicy", "GpuTimer",
    "OutlierKind", "OutlierReport", "Progress", "REPORT_FORMATS", "RegressionReport", "RegressionResult",
    "RegressionStatus", "ScalingMetrics", "Statistics", "Summary", "compare_results", "compare_samples",
]  # fmt: skip
