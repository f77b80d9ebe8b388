"""``BenchmarkSuite``: collects results, runs benchmarks, compares to a baseline, writes reports."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import BenchmarkError, ConfigurationError, RingKernelError
from .environment import EnvironmentFingerprint
from . import _fields
from .regression import (
    BenchmarkBaseline,
    EnvironmentPolicy,
    RegressionReport,
    _baseline_from_doc,
    _check_schema,
    _read_export,
    _where,
    atomic_write_text,
    compare_results,
)
from .reporting import html_report, json_export, latex_table, markdown_report
from .results import BenchmarkConfig, BenchmarkResult
from .runner import Benchmark, BenchmarkRunner, Progress
from .statistics import ScalingMetrics, Statistics

__all__ = ["BenchmarkSuite", "REPORT_FORMATS"]

#: Report format -> file name written by :meth:`BenchmarkSuite.write_reports`.
REPORT_FORMATS = {"markdown": "report.md", "html": "report.html", "json": "results.json", "latex": "table.tex"}


class BenchmarkSuite:
    """Results of a set of benchmarks, their baseline and their reports.

    Parameters
    ----------
    config:
        Measurement and regression settings (also used by :meth:`run`).
    environment_policy:
        What :meth:`compare_to_baseline` does when the baseline's environment differs.
    """

    def __init__(
        self,
        config: BenchmarkConfig | None = None,
        *,
        environment_policy: EnvironmentPolicy = EnvironmentPolicy.WARN,
    ) -> None:
        if config is not None and not isinstance(config, BenchmarkConfig):
            raise ConfigurationError(
                f"config must be a BenchmarkConfig, got {type(config).__name__}",
                hint="pass e.g. BenchmarkConfig(measurement_iterations=30), or nothing for the defaults",
            )
        if not isinstance(environment_policy, EnvironmentPolicy):
            raise ConfigurationError(
                f"environment_policy must be an EnvironmentPolicy, got {environment_policy!r}",
                hint="pass EnvironmentPolicy.WARN, EnvironmentPolicy.REFUSE or EnvironmentPolicy.IGNORE",
            )
        self.config = config or BenchmarkConfig()
        self.environment_policy = environment_policy
        self._results: list[BenchmarkResult] = []
        self._baseline: BenchmarkBaseline | None = None
        self._report_cache: tuple[Any, RegressionReport | None] | None = None

    # -- results ----------------------------------------------------------------------
    @property
    def results(self) -> list[BenchmarkResult]:
        return list(self._results)

    def add_result(self, result: BenchmarkResult) -> None:
        """Add a result; one with the same ``(name, workload_size)`` replaces the old one."""
        if not isinstance(result, BenchmarkResult):
            raise ConfigurationError(f"add_result takes a BenchmarkResult, got {type(result).__name__}")
        self._results = [r for r in self._results if r.key != result.key] + [result]
        self._report_cache = None

    @property
    def environment(self) -> EnvironmentFingerprint | None:
        return next((r.environment for r in self._results if r.environment), None)

    def run(
        self,
        benchmarks: Iterable[Benchmark],
        *,
        runner: BenchmarkRunner | None = None,
        progress: bool | None = None,
    ) -> list[BenchmarkResult]:
        """Run each benchmark, add its result, and return the new results.

        A progress bar over the cases is shown on a terminal (``progress=None``).
        """
        cases = list(benchmarks)
        runner = runner or BenchmarkRunner(self.config, progress=False)
        out: list[BenchmarkResult] = []
        with Progress(len(cases), "suite", enabled=progress) as bar:
            for case in cases:
                try:
                    result = runner.run(case)
                except (KeyboardInterrupt, SystemExit, RingKernelError):
                    raise  # (ringkernel's own errors keep their type: they name the case already)
                except Exception as exc:
                    done = ", ".join(r.name for r in out) or "none"
                    raise BenchmarkError(
                        f"benchmark '{case.name}' raised {type(exc).__name__}: {exc}",
                        hint=f"the results of the cases before it are kept in this suite ({done}): "
                        "fix the case, or leave it out, and run the rest",
                        details={"benchmark": case.name, "completed": [r.name for r in out]},
                    ) from exc
                self.add_result(result)
                out.append(result)
                bar.update(1, case.name)
        return out

    # -- baseline ---------------------------------------------------------------------
    def set_baseline(self, baseline: BenchmarkBaseline | str | os.PathLike[str]) -> None:
        """Use ``baseline`` (or the baseline file at that path) for comparisons.

        Raises ``BenchmarkError`` when the file is missing or malformed (see
        :meth:`BenchmarkBaseline.load`).
        """
        if not isinstance(baseline, (BenchmarkBaseline, str, os.PathLike)):
            raise ConfigurationError(
                f"baseline must be a BenchmarkBaseline or a path, got {type(baseline).__name__}",
                hint="pass e.g. suite.set_baseline('baseline.json')",
            )
        if not isinstance(baseline, BenchmarkBaseline):
            baseline = BenchmarkBaseline.load(baseline)
        self._baseline = baseline
        self._report_cache = None

    @property
    def baseline(self) -> BenchmarkBaseline | None:
        return self._baseline

    def save_baseline(self, path: str | os.PathLike[str], *, label: str = "") -> Path:
        """Save the current results as a baseline file (atomic write)."""
        if not self._results:
            raise BenchmarkError("no results to save as a baseline", hint="run or add results first")
        return BenchmarkBaseline.from_results(self._results, label=label).save(path)

    def compare_to_baseline(self, *, policy: EnvironmentPolicy | None = None) -> RegressionReport | None:
        """Judge every result against the baseline (``None`` when there is no baseline)."""
        if self._baseline is None:
            return None
        policy = policy or self.environment_policy
        if not isinstance(policy, EnvironmentPolicy):
            raise ConfigurationError(
                f"policy must be an EnvironmentPolicy, got {policy!r}", hint="pass e.g. policy=EnvironmentPolicy.REFUSE"
            )
        # everything the report depends on (a count and the baseline's id were not: a changed
        # threshold or a replaced result returned the old verdict; an adversarial trial)
        cfg = self.config
        key = (tuple(map(id, self._results)), id(self._baseline), tuple(map(id, self._baseline.results)), policy,
               cfg.regression_threshold, cfg.confidence, cfg.alpha)  # fmt: skip
        if self._report_cache is not None and self._report_cache[0] == key:
            return self._report_cache[1]
        report = compare_results(
            self._baseline.results,
            self._results,
            threshold=self.config.regression_threshold,
            confidence=self.config.confidence,
            alpha=self.config.alpha,
            baseline_environment=self._baseline.environment,
            current_environment=self.environment,
            policy=policy,
        )
        self._report_cache = (key, report)
        return report

    # -- scaling ----------------------------------------------------------------------
    def scaling(self, name: str) -> ScalingMetrics:
        """Scaling exponent of benchmark ``name`` over its workload sizes (needs >= 3)."""
        rs = [r for r in self._results if r.name == name]
        if len({r.workload_size for r in rs}) < 3:
            raise BenchmarkError(
                f"benchmark '{name}' has {len({r.workload_size for r in rs})} distinct sizes; scaling needs 3 or more"
            )
        return Statistics.scaling_exponent(
            [r.workload_size for r in rs], [r.throughput for r in rs], self.config.confidence
        )

    def scaling_all(self) -> dict[str, ScalingMetrics]:
        """Scaling of every benchmark measured at three or more sizes."""
        names = dict.fromkeys(r.name for r in self._results)
        out = {}
        for name in names:
            if len({r.workload_size for r in self._results if r.name == name}) >= 3:
                out[name] = self.scaling(name)
        return out

    # -- reports ----------------------------------------------------------------------
    def generate_markdown_report(self, title: str = "Benchmark report") -> str:
        return markdown_report(self, title)

    def generate_html_report(self, title: str = "Benchmark report") -> str:
        return html_report(self, title)

    def generate_json_export(self) -> str:
        return json_export(self)

    def generate_latex_table(self, caption: str = "Benchmark results", label: str = "tab:benchmarks") -> str:
        return latex_table(self, caption, label)

    def write_reports(
        self, directory: str | os.PathLike[str], formats: Sequence[str] = tuple(REPORT_FORMATS), *, title: str = "Benchmark report"
    ) -> dict[str, Path]:
        """Write the chosen report formats into ``directory`` (atomic writes); returns the paths.

        Files get the mode ``open()`` would give (0o644 under umask 0o022), and an existing
        report is replaced whole. Raises ``BenchmarkError`` when a file cannot be written,
        ``ConfigurationError`` for an unknown format.
        """
        if isinstance(formats, str):
            formats = [formats]
        unknown = [f for f in formats if f not in REPORT_FORMATS]
        if unknown:
            raise ConfigurationError(f"unknown report format(s) {unknown}", hint=f"choose from {list(REPORT_FORMATS)}")
        if not self._results:
            raise BenchmarkError("no results to report", hint="run or add results first")
        directory = Path(directory)
        makers = {
            "markdown": lambda: self.generate_markdown_report(title),
            "html": lambda: self.generate_html_report(title),
            "json": self.generate_json_export,
            "latex": self.generate_latex_table,
        }
        texts = {f: makers[f]() for f in formats}  # every report made before any is written (none half-replaced)
        return {f: atomic_write_text(directory / REPORT_FORMATS[f], texts[f]) for f in formats}

    # -- loading ----------------------------------------------------------------------
    @classmethod
    def from_json(cls, source: str | os.PathLike[str], *, config: BenchmarkConfig | None = None) -> "BenchmarkSuite":
        """A suite holding the results of a JSON export (a path, or the JSON text itself).

        The export's ``config`` is used unless ``config`` is given (or it is not a valid
        ``BenchmarkConfig``). Raises ``BenchmarkError`` naming the file and the field when
        the file is missing or malformed.
        """
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = Path(source)
            doc = _read_export(path, role="results")
            where = _where(path, "results")
        else:
            where = "the JSON text"
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{where} is not valid JSON: {exc}", hint=_fields.SCHEMA_HINT) from exc
            _check_schema(doc, where)
        baseline = _baseline_from_doc(doc, where)
        if config is None and isinstance(doc.get("config"), dict):
            try:
                config = BenchmarkConfig(**doc["config"])
            except (TypeError, ConfigurationError):
                config = None
        suite = cls(config)
        for r in baseline.results:
            suite.add_result(r)
        return suite
