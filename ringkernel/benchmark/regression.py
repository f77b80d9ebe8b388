"""Regression detection against a baseline: a significance test *and* an effect size.

A change is called only when both hold:

1. the two samples differ significantly (two-sided Mann-Whitney U test, ``p < alpha``), and
2. the bootstrap confidence interval of ``median(current) / median(baseline)`` (times)
   lies entirely beyond the threshold: above ``1 + threshold`` (Regressed) or below
   ``1 - threshold`` (Improved).

If the interval lies entirely inside ``[1 - threshold, 1 + threshold]`` the result is
Unchanged (possibly a real but small change); anything else (an interval straddling a
threshold, or too few samples) is Inconclusive: measure more. The threshold is therefore
the smallest change you want to be *sure* of; to catch 10% shifts reliably, use a
threshold below 10% (docs/benchmark.md has the measured detection rates).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .._fileio import atomic_write_bytes, shared_file_mode
from ..errors import BenchmarkError, ConfigurationError, EnvironmentMismatchError
from . import _fields
from .environment import EnvironmentFingerprint, _environment_from_dict
from .results import BenchmarkResult, _result_from_dict
from .statistics import _check_confidence, _check_fraction, _check_resamples

__all__ = [
    "RegressionStatus",
    "EnvironmentPolicy",
    "RegressionResult",
    "RegressionReport",
    "BenchmarkBaseline",
    "compare_samples",
    "compare_results",
    "MIN_SAMPLES",
]

log = logging.getLogger(__name__)

#: Fewer samples per side than this are always Inconclusive.
MIN_SAMPLES = 5


class RegressionStatus(Enum):
    IMPROVED = "improved"
    UNCHANGED = "unchanged"
    REGRESSED = "regressed"
    INCONCLUSIVE = "inconclusive"


class EnvironmentPolicy(Enum):
    """What to do when baseline and current environments differ."""

    WARN = "warn"  # compare, log a warning, list the differences in the report
    REFUSE = "refuse"  # raise EnvironmentMismatchError
    IGNORE = "ignore"  # compare silently (differences still listed in the report)


@dataclass(frozen=True)
class RegressionResult:
    """The verdict on one benchmark (``name`` at ``workload_size``)."""

    name: str
    workload_size: int
    status: RegressionStatus
    baseline_median_ms: float
    current_median_ms: float
    ratio: float
    ratio_ci: tuple[float, float]
    p_value: float
    threshold: float
    confidence: float
    message: str

    @property
    def change(self) -> float:
        """Relative change of the median time (+0.12 = 12% slower)."""
        return self.ratio - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "workload_size": self.workload_size,
            "status": self.status.value,
            "baseline_median_ms": self.baseline_median_ms,
            "current_median_ms": self.current_median_ms,
            "ratio": self.ratio,
            "ratio_ci": list(self.ratio_ci),
            "p_value": self.p_value,
            "threshold": self.threshold,
            "confidence": self.confidence,
            "message": self.message,
        }


def _bootstrap_ratio_ci(
    base: np.ndarray, cur: np.ndarray, confidence: float, n_resamples: int, rng: np.random.Generator
) -> tuple[float, float]:
    # Percentile bootstrap of the ratio of medians, resampling each side independently.
    bi = rng.integers(0, base.size, size=(n_resamples, base.size))
    ci = rng.integers(0, cur.size, size=(n_resamples, cur.size))
    ratios = np.median(cur[ci], axis=1) / np.median(base[bi], axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


def compare_samples(
    baseline_ms: Sequence[float],
    current_ms: Sequence[float],
    *,
    threshold: float = 0.10,
    confidence: float = 0.95,
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int | np.random.Generator | None = 0,
    name: str = "",
    workload_size: int = 0,
) -> RegressionResult:
    """Judge ``current_ms`` against ``baseline_ms`` (times: larger is worse).

    Parameters
    ----------
    baseline_ms, current_ms:
        Per-call times in milliseconds (positive and finite), at least one each; fewer than
        :data:`MIN_SAMPLES` on either side is always Inconclusive.
    threshold:
        Smallest relative change of the median to call, strictly between 0 and 1 (0.10 = 10%).
    confidence:
        Level of the bootstrap interval of the ratio of medians, strictly between 0 and 1.
    alpha:
        Significance level of the Mann-Whitney U test, strictly between 0 and 1.
    n_resamples:
        Bootstrap resamples, an int of at least 100 (``statistics.MIN_RESAMPLES``): fewer
        leave almost nothing in the interval's tails.
    seed:
        Seed or generator of the bootstrap; the default makes verdicts reproducible.
    name, workload_size:
        Copied into the result, and ``name`` into error messages.

    Raises
    ------
    ConfigurationError
        A parameter is out of range, or a sample is empty, non-numeric, or not positive and finite.
    """
    from scipy import stats

    _check_comparison(threshold, confidence, alpha)
    _check_resamples(n_resamples)
    _check_seed(seed)
    label = f"'{name}': " if name else ""
    base = _times(baseline_ms, f"{label}baseline_ms")
    cur = _times(current_ms, f"{label}current_ms")
    if base.size == 0 or cur.size == 0:
        raise ConfigurationError(
            f"{label}both samples need measurements (baseline {base.size}, current {cur.size})",
            hint="pass at least one time per side; 30 each give reliable verdicts",
        )
    if np.any(base <= 0) or np.any(cur <= 0) or not (np.all(np.isfinite(base)) and np.all(np.isfinite(cur))):
        raise ConfigurationError(
            f"{label}times must be positive and finite", hint="drop failed or zero-length measurements first"
        )
    bmed, cmed = float(np.median(base)), float(np.median(cur))
    ratio = cmed / bmed
    common: dict[str, Any] = dict(
        name=name, workload_size=workload_size, baseline_median_ms=bmed, current_median_ms=cmed,
        ratio=ratio, threshold=threshold, confidence=confidence,
    )  # fmt: skip
    if base.size < MIN_SAMPLES or cur.size < MIN_SAMPLES:
        return RegressionResult(
            status=RegressionStatus.INCONCLUSIVE, ratio_ci=(float("nan"), float("nan")), p_value=float("nan"),
            message=f"too few samples ({base.size} baseline, {cur.size} current; need {MIN_SAMPLES} each)",
            **common,
        )
    p = float(stats.mannwhitneyu(cur, base, alternative="two-sided").pvalue)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    low, high = _bootstrap_ratio_ci(base, cur, confidence, n_resamples, rng)
    significant = p < alpha
    pct = f"{(ratio - 1) * 100:+.1f}% (CI {(low - 1) * 100:+.1f}%..{(high - 1) * 100:+.1f}%, p={p:.3g})"
    if significant and low > 1 + threshold:
        status, msg = RegressionStatus.REGRESSED, f"slower by {pct}, beyond the {percent(threshold)} threshold"
    elif significant and high < 1 - threshold:
        status, msg = RegressionStatus.IMPROVED, f"faster by {pct}, beyond the {percent(threshold)} threshold"
    elif low >= 1 - threshold and high <= 1 + threshold:
        status = RegressionStatus.UNCHANGED
        msg = f"within ±{percent(threshold)}: {pct}" + (" (a small but significant change)" if significant else "")
    else:
        status = RegressionStatus.INCONCLUSIVE
        msg = f"{pct}: the interval crosses the ±{percent(threshold)} threshold; take more samples"
    return RegressionResult(status=status, ratio_ci=(low, high), p_value=p, message=msg, **common)  # type: ignore[arg-type]


def _times(values: Sequence[float], what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{what} must be numbers (milliseconds), got {values!r:.80}", hint="pass a sequence of floats or a NumPy array"
        ) from exc
    if arr.ndim != 1:
        raise ConfigurationError(f"{what} must be one-dimensional, got shape {arr.shape}")
    return arr


def _check_seed(seed: object) -> None:
    ok = seed is None or isinstance(seed, np.random.Generator) or (
        isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0
    )
    if not ok:
        raise ConfigurationError(
            f"seed must be an int >= 0, a numpy.random.Generator or None, got {seed!r}",
            hint="pass e.g. seed=0 (reproducible verdicts, the default) or seed=None (fresh randomness)",
        )


def _check_comparison(threshold: object, confidence: object, alpha: object) -> None:
    _check_fraction("threshold", threshold, "0.10 for 10%")
    _check_confidence(confidence)
    _check_fraction("alpha", alpha, "0.05")


@dataclass
class RegressionReport:
    """Verdicts for every benchmark present in both runs, plus what could not be matched."""

    results: list[RegressionResult]
    threshold: float
    environment_differences: list[tuple[str, Any, Any]] = field(default_factory=list)
    missing_in_current: list[tuple[str, int]] = field(default_factory=list)
    new_in_current: list[tuple[str, int]] = field(default_factory=list)
    #: The confidence of the intervals (the table's header says it: it always said 95%)
    confidence: float = 0.95

    def by_status(self, status: RegressionStatus) -> list[RegressionResult]:
        return [r for r in self.results if r.status is status]

    @property
    def has_regressions(self) -> bool:
        return any(r.status is RegressionStatus.REGRESSED for r in self.results)

    def counts(self) -> dict[str, int]:
        return {s.value: len(self.by_status(s)) for s in RegressionStatus}

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "counts": self.counts(),
            "results": [r.to_dict() for r in self.results],
            "environment_differences": [list(d) for d in self.environment_differences],
            "missing_in_current": [list(k) for k in self.missing_in_current],
            "new_in_current": [list(k) for k in self.new_in_current],
        }

    def to_markdown(self) -> str:
        lines = [f"### Regression check (threshold {percent(self.threshold)})", ""]
        c = self.counts()
        lines.append(", ".join(f"{v} {k}" for k, v in c.items()))
        lines.append("")
        if self.environment_differences:
            lines.append("**Environment differs from the baseline:** " + "; ".join(
                f"{f}: {a} -> {b}" for f, a, b in self.environment_differences))  # fmt: skip
            lines.append("")
        lines.append(f"| benchmark | size | baseline | current | change | {percent(self.confidence)} CI | p | status |")
        lines.append("|---|---:|---:|---:|---:|---|---:|---|")
        for r in self.results:
            lo, hi = r.ratio_ci
            lines.append(
                f"| {md_cell(r.name)} | {r.workload_size} | {r.baseline_median_ms:.4g} ms | {r.current_median_ms:.4g} ms | "
                f"{r.change * 100:+.1f}% | {(lo - 1) * 100:+.1f}%..{(hi - 1) * 100:+.1f}% | {r.p_value:.3g} | "
                f"**{r.status.value}** |"
            )
        for key in self.missing_in_current:
            lines.append(f"| {md_cell(key[0])} | {key[1]} | | | | | | missing in current |")
        for key in self.new_in_current:
            lines.append(f"| {md_cell(key[0])} | {key[1]} | | | | | | new (no baseline) |")
        return "\n".join(lines) + "\n"


def md_cell(text: str) -> str:
    """``text`` safe in a Markdown table cell: ``|`` escaped (a name with one split the row into
    extra columns; an adversarial trial) and line breaks as spaces. The name is otherwise shown
    as it is (the HTML report escapes HTML)."""
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def compare_results(
    baseline: Iterable[BenchmarkResult],
    current: Iterable[BenchmarkResult],
    *,
    threshold: float = 0.10,
    confidence: float = 0.95,
    alpha: float = 0.05,
    baseline_environment: EnvironmentFingerprint | None = None,
    current_environment: EnvironmentFingerprint | None = None,
    policy: EnvironmentPolicy = EnvironmentPolicy.WARN,
    seed: int = 0,
) -> RegressionReport:
    """Match results by ``(name, workload_size)`` and judge each pair with :func:`compare_samples`.

    ``threshold``, ``confidence`` and ``alpha`` are as for :func:`compare_samples` and are
    checked even when no pair matches; ``policy`` must be an :class:`EnvironmentPolicy`.

    Raises
    ------
    ConfigurationError
        A parameter is out of range or of the wrong type.
    EnvironmentMismatchError
        The environments differ and ``policy`` is ``EnvironmentPolicy.REFUSE``.
    """
    _check_comparison(threshold, confidence, alpha)
    if not isinstance(policy, EnvironmentPolicy):
        raise ConfigurationError(
            f"policy must be an EnvironmentPolicy, got {policy!r}",
            hint="pass EnvironmentPolicy.WARN, EnvironmentPolicy.REFUSE or EnvironmentPolicy.IGNORE",
        )
    base = _keyed(baseline, "baseline")
    cur = _keyed(current, "current")
    diffs: list[tuple[str, Any, Any]] = []
    b_env = baseline_environment or next((r.environment for r in base.values() if r.environment), None)
    c_env = current_environment or next((r.environment for r in cur.values() if r.environment), None)
    # Each pair is judged in its own results' environments (a file may hold results from
    # several machines: only the first one's was compared before, so an A100 result was judged
    # against an H200 baseline; an adversarial trial), the file's where a result has none.
    unknown: list[str] = []
    for k in cur:
        if k not in base:
            continue
        be, ce = base[k].environment or b_env, cur[k].environment or c_env
        if be is None or ce is None:
            unknown.append(f"{k[0]} (no environment in the {'baseline' if be is None else 'current results'})")
            continue
        for d in be.differences(ce):
            if d not in diffs:
                diffs.append(d)
    if unknown and policy is not EnvironmentPolicy.IGNORE:
        names = "; ".join(sorted(set(unknown))[:5]) + (" ..." if len(set(unknown)) > 5 else "")
        text = f"whether these ran on the same machine cannot be checked: {names}"
        if policy is EnvironmentPolicy.REFUSE:
            raise EnvironmentMismatchError(
                text, hint="measure with ringkernel's runner (it records the environment), or compare with "
                "policy=EnvironmentPolicy.IGNORE if you know they match",
                details={"unknown": sorted(set(unknown))},
            )  # fmt: skip
        log.warning("benchmark comparison: %s", text)
    if diffs:
        text = "; ".join(f"{f}: baseline {a!r}, current {b!r}" for f, a, b in diffs)
        if policy is EnvironmentPolicy.REFUSE:
            raise EnvironmentMismatchError(
                f"the baseline was measured in a different environment: {text}",
                hint="re-measure the baseline here, or compare with policy=EnvironmentPolicy.WARN",
                details={"differences": diffs},
            )
        if policy is EnvironmentPolicy.WARN:
            log.warning("benchmark baseline environment differs: %s", text)
    results = [
        compare_samples(
            base[k].measurement_times, cur[k].measurement_times, threshold=threshold, confidence=confidence,
            alpha=alpha, seed=seed, name=k[0], workload_size=k[1],
        )  # fmt: skip
        for k in cur
        if k in base
    ]
    return RegressionReport(
        results=results,
        threshold=threshold,
        confidence=confidence,
        environment_differences=diffs,
        missing_in_current=[k for k in base if k not in cur],
        new_in_current=[k for k in cur if k not in base],
    )


def percent(fraction: float) -> str:
    """A fraction as a percentage with the digits it has: 0.95 -> "95%", 0.999 -> "99.9%", 0.025 ->
    "2.5%" (``:.0%`` showed 0.999 as "100%" and 0.025 as "2%"; an adversarial trial)."""
    return f"{round(float(fraction) * 100, 6):g}%"


def _keyed(results: Iterable[Any], side: str) -> dict[tuple[str, int], Any]:
    """Results by (name, workload size); two of one key are refused (an adversarial trial: a
    merged file's second entry silently replaced the first, and the verdict followed it)."""
    out: dict[tuple[str, int], Any] = {}
    for r in results:
        k = _checked_key(r, side)
        if k in out:
            raise BenchmarkError(
                f"the {side} results hold {k[0]!r} at workload size {k[1]} twice: which one to compare is not clear",
                hint="keep one result per benchmark and size (e.g. re-run, or remove the older entry from the file)",
                details={"name": k[0], "workload_size": k[1], "side": side},
            )
        out[k] = r
    return out


def _checked_key(r: object, side: str) -> tuple[str, int]:
    if not isinstance(r, BenchmarkResult):
        raise ConfigurationError(
            f"{side} must hold BenchmarkResult objects, got {type(r).__name__}",
            hint="pass suite.results, or BenchmarkBaseline.load(path).results",
        )
    return r.key


SCHEMA = "ringkernel.benchmark/1"


@dataclass
class BenchmarkBaseline:
    """Saved results to compare later runs against (stored as the suite's JSON export)."""

    results: list[BenchmarkResult]
    environment: EnvironmentFingerprint | None = None
    created: str = ""
    label: str = ""

    @classmethod
    def from_results(cls, results: Iterable[BenchmarkResult], *, label: str = "") -> "BenchmarkBaseline":
        results = list(results)
        env = next((r.environment for r in results if r.environment), None)
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        return cls(results=results, environment=env, created=now, label=label)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file + ``os.replace``): a crash never leaves half a file.

        The file gets the mode ``open()`` would give (0o644 under umask 0o022). Raises
        ``BenchmarkError`` when it cannot be written.
        """
        doc = {
            "schema": SCHEMA,
            "kind": "baseline",
            "label": self.label,
            "generated": self.created,
            "environment": self.environment.to_dict() if self.environment else None,
            "results": [r.to_dict() for r in self.results],
        }
        return atomic_write_text(Path(path), _fields.json_text(doc))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, role: str = "baseline") -> "BenchmarkBaseline":
        """Read a baseline or any JSON export of a suite.

        Parameters
        ----------
        path:
            The file.
        role:
            What the file is to the caller (``"baseline"``, ``"current results"``); error
            messages call it that.

        Raises
        ------
        BenchmarkError
            The file is missing, unreadable, not JSON, not a ringkernel benchmark export, or
            a field is missing or has the wrong type; the message names the file and the
            field (``details['path']``, ``details['field']``).
        """
        path = Path(path)
        return _baseline_from_doc(_read_export(path, role=role), _where(path, role))


def _shown(path: Path) -> str:
    """The path as given and, if relative, where that is: the reader may not know the cwd."""
    return str(path) if path.is_absolute() else f"{path} (absolute: {path.absolute()})"


def _where(path: Path, role: str) -> str:
    return f"{role} file {_shown(path)}"


def _read_export(path: Path, *, role: str = "baseline") -> dict[str, Any]:
    """The parsed JSON of a benchmark export at ``path``, its schema checked (not its fields).

    Raises ``BenchmarkError`` naming ``role`` and the path.
    """
    where = _where(path, role)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchmarkError(
            f"no {role} file at {_shown(path)}",
            hint="check the path; benchmark files are the results.json that `ringkernel bench run --out DIR` "
                 "writes, or files written by BenchmarkSuite.save_baseline()",
            details={"path": str(path), "role": role},
        ) from None
    except IsADirectoryError:
        raise BenchmarkError(
            f"{where} is a directory, not a file", hint="pass the results.json inside it",
            details={"path": str(path), "role": role},
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchmarkError(
            f"{where} is not readable: {exc}", hint="check its permissions and that it is a JSON export",
            details={"path": str(path), "role": role},
        ) from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchmarkError(
            f"{where} is not readable JSON: {exc}", hint=_fields.SCHEMA_HINT, details={"path": str(path), "role": role}
        ) from exc
    _check_schema(doc, where, details={"path": str(path), "role": role})
    assert isinstance(doc, dict)
    return doc


def _check_schema(doc: Any, where: str, details: dict[str, Any] | None = None) -> None:
    if not isinstance(doc, dict):
        problem = f"its top level is {_fields.describe(doc)}, not an object"
    elif "schema" not in doc:
        problem = "it has no \"schema\" field"
    elif doc["schema"] != SCHEMA:
        problem = f"its schema is {_fields.describe(doc['schema'])}"
    else:
        return
    raise BenchmarkError(
        f"{where} is not a ringkernel benchmark file: {problem} (expected \"schema\": \"{SCHEMA}\")",
        hint=_fields.SCHEMA_HINT,
        details=details,
    )


def _baseline_from_doc(doc: dict[str, Any], where: str) -> BenchmarkBaseline:
    """Validate every field of a parsed export; errors say ``where`` (the file) and the field."""
    try:
        raw = _fields.get(doc, "results", "", "a list of benchmark results", lambda v: isinstance(v, list))
        results = [_result_from_dict(r, f"results[{i}]") for i, r in enumerate(raw)]
        env = doc.get("environment")
        environment = None if env is None else _environment_from_dict(env, "environment")
        created = _fields.get(doc, "generated", "", "a string (ISO 8601)", _fields.is_str, optional=True)
        label = _fields.get(doc, "label", "", "a string", _fields.is_str, optional=True)
    except ConfigurationError as exc:
        raise BenchmarkError(f"{where}: {exc.message}", hint=exc.hint, details=exc.details) from exc
    return BenchmarkBaseline(results=results, environment=environment, created=created or "", label=label or "")


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file + ``os.replace``), readable as the umask allows.

    Reports and baselines are for people and CI to read, so they get the mode ``open()``
    would give (0o644 under the usual umask), not the temp file's private 0o600. An
    ``OSError`` (read-only directory, a file where a directory should be, a full disk)
    becomes ``BenchmarkError`` naming the path.
    """
    try:
        return atomic_write_bytes(path, text.encode("utf-8"), mode=shared_file_mode())
    except OSError as exc:
        reason = exc.strerror or str(exc)
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            reason = f"{blocker} is a file, not a directory"
        raise BenchmarkError(
            f"could not write {path}: {reason}",
            hint="choose a directory you can write to (`--out DIR` on the command line)",
            details={"path": str(path), "errno": exc.errno},
        ) from exc
