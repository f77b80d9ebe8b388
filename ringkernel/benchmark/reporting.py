"""Reports of a suite: Markdown, self-contained HTML with inline SVG charts, JSON, LaTeX.

The HTML report has no scripts and no external resources: two SVG charts (throughput of
every result with its confidence interval, and throughput against size on log-log axes
with the fitted scaling line) plus the tables of the Markdown report.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
from typing import TYPE_CHECKING, Any, Sequence

from . import _fields
from .regression import SCHEMA, RegressionReport, md_cell, percent
from .results import BenchmarkResult, format_rate, format_time_ms
from .statistics import ScalingMetrics

if TYPE_CHECKING:
    from .suite import BenchmarkSuite

__all__ = ["markdown_report", "html_report", "json_export", "latex_table"]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


def _env_line(suite: "BenchmarkSuite") -> str:
    env = suite.environment
    return env.describe() if env is not None else "environment not recorded"


def _throughput_ci(r: BenchmarkResult, confidence: float) -> tuple[float, float]:
    ci = r.summary(confidence).median_ci
    # throughput = size / time: the time interval's ends swap places
    return r.workload_size / (ci.high * 1e-3), r.workload_size / (ci.low * 1e-3)


# -- Markdown ------------------------------------------------------------------------------
def markdown_report(suite: "BenchmarkSuite", title: str = "Benchmark report") -> str:
    conf = suite.config.confidence
    lines = [f"# {title}", "", f"- environment: {_env_line(suite)}", f"- generated: {_now()}"]
    lines.append(
        f"- config: {suite.config.measurement_iterations} samples, {suite.config.warmup_iterations} warm-up, "
        f"{percent(conf)} intervals, regression threshold {percent(suite.config.regression_threshold)}"
    )
    lines += ["", "## Results", ""]
    lines.append(f"| benchmark | size | median | {percent(conf)} CI (median) | mean ± sd | throughput | n | outliers |")
    lines.append("|---|---:|---:|---|---:|---:|---:|---:|")
    for r in suite.results:
        s = r.summary(conf)
        lines.append(
            f"| {md_cell(r.name)} | {r.workload_size:,} | {format_time_ms(s.median)} | "
            f"{format_time_ms(s.median_ci.low)} .. {format_time_ms(s.median_ci.high)} | "
            f"{format_time_ms(s.mean)} ± {format_time_ms(s.stddev)} | {format_rate(r.throughput, r.throughput_unit)} | "
            f"{s.n} | {s.outliers.count()} |"
        )
    scaling = suite.scaling_all()
    if scaling:
        lines += ["", "## Scaling", "", "Throughput ~ size^exponent (log-log least squares).", ""]
        lines.append(f"| benchmark | exponent | {percent(conf)} CI | R² | sizes |")
        lines.append("|---|---:|---|---:|---:|")
        for name, m in scaling.items():
            lines.append(
                f"| {name} | {m.exponent:.3f} | {m.exponent_ci.low:.3f} .. {m.exponent_ci.high:.3f} | "
                f"{m.r_squared:.4f} | {m.n} |"
            )
    report = suite.compare_to_baseline()
    if report is not None:
        lines += ["", report.to_markdown()]
    return "\n".join(lines) + "\n"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# -- JSON ----------------------------------------------------------------------------------
def json_export(suite: "BenchmarkSuite") -> str:
    """The suite as JSON (schema ``ringkernel.benchmark/1``, documented in docs/benchmark.md)."""
    conf = suite.config.confidence
    report = suite.compare_to_baseline()
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "suite",
        "generated": _now(),
        "config": suite.config.to_dict(),
        "environment": suite.environment.to_dict() if suite.environment else None,
        "results": [r.to_dict(conf) for r in suite.results],
        "scaling": {name: m.to_dict() for name, m in suite.scaling_all().items()},
        "regression": report.to_dict() if report is not None else None,
    }
    return _fields.json_text(doc)


# -- LaTeX ---------------------------------------------------------------------------------
_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip


def _tex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(c, c) for c in str(text))


def latex_table(suite: "BenchmarkSuite", caption: str = "Benchmark results", label: str = "tab:benchmarks") -> str:
    """A ``booktabs`` table of the results (needs ``\\usepackage{booktabs}``)."""
    conf = suite.config.confidence
    rows = []
    for r in suite.results:
        s = r.summary(conf)
        rows.append(
            f"{_tex(r.name)} & {r.workload_size:,} & {_tex(format_time_ms(s.median))} & "
            f"[{_tex(format_time_ms(s.median_ci.low))}, {_tex(format_time_ms(s.median_ci.high))}] & "
            f"{_tex(format_rate(r.throughput, r.throughput_unit))} & {s.n} \\\\"
        )
    body = "\n".join(rows)
    return (
        "\\begin{table}[ht]\n\\centering\n"
        f"\\caption{{{_tex(caption)} ({_tex(_env_line(suite))})}}\n\\label{{{label}}}\n"
        "\\begin{tabular}{lrrlrr}\n\\toprule\n"
        f"Benchmark & Size & Median & {percent(conf)[:-1]}\\% CI & Throughput & $n$ \\\\\n\\midrule\n"
        f"{body}\n\\bottomrule\n\\end{{tabular}}\n\\end{{table}}\n"
    )


# -- HTML + SVG ----------------------------------------------------------------------------
def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _results_chart(results: Sequence[BenchmarkResult], confidence: float) -> str:
    """Horizontal bars: throughput of each result, whiskers = CI of the median."""
    if not results:
        return ""
    row_h, left, right, top = 26, 260, 80, 30
    width = 900
    plot_w = width - left - right
    height = top + row_h * len(results) + 40
    cis = [_throughput_ci(r, confidence) for r in results]
    vmax = max(max(hi for _, hi in cis), max(r.throughput for r in results)) * 1.05
    unit = results[0].throughput_unit
    groups = list(dict.fromkeys(r.name for r in results))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="throughput per benchmark" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" class="chart" id="results-chart">',
        f'<text x="{left}" y="18" class="title">Throughput ({_e(unit)}), median with {percent(confidence)} CI</text>',
    ]
    for t in range(6):
        v = vmax * t / 5
        x = left + plot_w * t / 5
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 36}" class="grid"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 20}" class="tick" text-anchor="middle">{_e(format_rate(v, unit))}</text>')
    for i, (r, (lo, hi)) in enumerate(zip(results, cis)):
        y = top + i * row_h
        color = _COLORS[groups.index(r.name) % len(_COLORS)]
        w = plot_w * r.throughput / vmax
        out.append(f'<text x="{left - 8}" y="{y + 16}" class="label" text-anchor="end">{_e(r.name)} @ {r.workload_size:,}</text>')
        out.append(
            f'<rect x="{left}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" fill="{color}" opacity="0.8">'
            f"<title>{_e(r.name)} @ {r.workload_size:,}: {_e(format_rate(r.throughput, r.throughput_unit))}</title></rect>"
        )
        x1, x2 = left + plot_w * lo / vmax, left + plot_w * hi / vmax
        ym = y + row_h / 2
        out.append(f'<line x1="{x1:.1f}" y1="{ym:.1f}" x2="{x2:.1f}" y2="{ym:.1f}" class="whisker"/>')
        for x in (x1, x2):
            out.append(f'<line x1="{x:.1f}" y1="{ym - 5:.1f}" x2="{x:.1f}" y2="{ym + 5:.1f}" class="whisker"/>')
    out.append("</svg>")
    return "\n".join(out)


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks at 1, 2, 5 x 10^k inside [lo, hi]; powers of ten only when there are many."""
    def within(mults: tuple[int, ...]) -> list[float]:
        out = []
        e = math.floor(math.log10(lo))
        while 10.0**e <= hi:
            out += [m * 10.0**e for m in mults if lo <= m * 10.0**e <= hi]
            e += 1
        return out

    ticks = within((1,))
    if len(ticks) < 3:
        ticks = within((1, 2, 5))
    return ticks if len(ticks) >= 2 else [lo, hi]


def _scaling_chart(groups: dict[str, list[BenchmarkResult]], fits: dict[str, ScalingMetrics]) -> str:
    """Log-log scatter of throughput against size per benchmark, with the fitted line."""
    series = {k: v for k, v in groups.items() if len({r.workload_size for r in v}) >= 2}
    if not series:
        return ""
    width, left, right, top, bottom = 900, 140, 30, 30, 50
    height = 420 + 20 * len(series)
    legend_top = 420 - 10
    pw, ph = width - left - right, 420 - top - bottom
    xs = [r.workload_size for rs in series.values() for r in rs]
    ys = [r.throughput for rs in series.values() for r in rs]
    x0, x1 = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
    y0, y1 = math.log10(min(ys)) - 0.15, math.log10(max(ys)) + 0.15

    def px(v: float) -> float:
        return left + pw * (math.log10(v) - x0) / (x1 - x0)

    def py(v: float) -> float:
        return top + ph * (1 - (math.log10(v) - y0) / (y1 - y0))

    unit = next(iter(series.values()))[0].throughput_unit
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="scaling" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" class="chart" id="scaling-chart">',
        f'<text x="{left}" y="18" class="title">Scaling: throughput ({_e(unit)}) against workload size, log-log</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>',
    ]
    for t in _log_ticks(10**x0, 10**x1):
        out.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + ph}" class="grid"/>')
        out.append(f'<text x="{px(t):.1f}" y="{top + ph + 18}" class="tick" text-anchor="middle">{t:.3g}</text>')
    for t in _log_ticks(10**y0, 10**y1):
        out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + pw}" y2="{py(t):.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" class="tick" text-anchor="end">{_e(format_rate(t, unit))}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{top + ph + 36}" class="tick" text-anchor="middle">workload size</text>')
    for i, (name, rs) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        pts = sorted(rs, key=lambda r: r.workload_size)
        for r in pts:
            out.append(
                f'<circle cx="{px(r.workload_size):.1f}" cy="{py(r.throughput):.1f}" r="4" fill="{color}">'
                f"<title>{_e(name)} @ {r.workload_size:,}: {_e(format_rate(r.throughput, r.throughput_unit))}</title></circle>"
            )
        fit = fits.get(name)
        label = _e(name)
        if fit is not None:
            a, b = min(fit.sizes), max(fit.sizes)
            out.append(
                f'<line x1="{px(a):.1f}" y1="{py(fit.predict(a)):.1f}" x2="{px(b):.1f}" y2="{py(fit.predict(b)):.1f}" '
                f'stroke="{color}" stroke-dasharray="5,3" stroke-width="1.5"/>'
            )
            label += f" (k={fit.exponent:.2f}, R²={fit.r_squared:.3f})"
        ly = legend_top + 20 * (i + 1)
        out.append(f'<rect x="{left}" y="{ly - 9}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{left + 14}" y="{ly}" class="legend">{label}</text>')
    out.append("</svg>")
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; max-width: 1000px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.chart { background: #fff; border: 1px solid #ddd; margin: 1em 0; display: block; }
.chart .title { font-size: 14px; font-weight: 600; }
.chart .tick, .chart .legend, .chart .label { font-size: 12px; fill: #333; }
.chart .grid { stroke: #e5e5e5; stroke-width: 1; }
.chart .frame { fill: none; stroke: #999; }
.chart .whisker { stroke: #222; stroke-width: 1.5; }
.regressed { color: #b00020; font-weight: 600; } .improved { color: #1b7f3b; font-weight: 600; }
.meta { color: #555; font-size: 14px; }
"""


def html_report(suite: "BenchmarkSuite", title: str = "Benchmark report") -> str:
    conf = suite.config.confidence
    fits = suite.scaling_all()
    groups: dict[str, list[BenchmarkResult]] = {}
    for r in suite.results:
        groups.setdefault(r.name, []).append(r)
    rows = []
    for r in suite.results:
        s = r.summary(conf)
        rows.append(
            "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in (
                r.name, f"{r.workload_size:,}", format_time_ms(s.median),
                f"{format_time_ms(s.median_ci.low)} .. {format_time_ms(s.median_ci.high)}",
                f"{format_time_ms(s.mean)} ± {format_time_ms(s.stddev)}",
                format_rate(r.throughput, r.throughput_unit), s.n, s.outliers.count(),
            )) + "</tr>"  # fmt: skip
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{_e(_env_line(suite))}<br>generated {_e(_now())}; '
        f"{suite.config.measurement_iterations} samples per benchmark, {percent(conf)} intervals</p>",
        "<h2>Results</h2>",
        _results_chart(suite.results, conf),
        "<table><thead><tr><th>benchmark</th><th>size</th><th>median</th>"
        f"<th>{percent(conf)} CI (median)</th><th>mean ± sd</th><th>throughput</th><th>n</th><th>outliers</th></tr></thead>",
        "<tbody>" + "".join(rows) + "</tbody></table>",
    ]
    chart = _scaling_chart(groups, fits)
    if chart:
        parts += ["<h2>Scaling</h2>", chart]
        if fits:
            parts.append("<table><thead><tr><th>benchmark</th><th>exponent</th>"
                         f"<th>{percent(conf)} CI</th><th>R²</th><th>sizes</th></tr></thead><tbody>")  # fmt: skip
            for name, m in fits.items():
                parts.append(
                    f"<tr><td>{_e(name)}</td><td>{m.exponent:.3f}</td><td>{m.exponent_ci.low:.3f} .. "
                    f"{m.exponent_ci.high:.3f}</td><td>{m.r_squared:.4f}</td><td>{m.n}</td></tr>"
                )
            parts.append("</tbody></table>")
    report = suite.compare_to_baseline()
    if report is not None:
        parts.append(_regression_html(report))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _regression_html(report: RegressionReport) -> str:
    rows = []
    for r in report.results:
        lo, hi = r.ratio_ci
        rows.append(
            f"<tr><td>{_e(r.name)}</td><td>{r.workload_size:,}</td><td>{_e(format_time_ms(r.baseline_median_ms))}</td>"
            f"<td>{_e(format_time_ms(r.current_median_ms))}</td><td>{r.change * 100:+.1f}%</td>"
            f"<td>{(lo - 1) * 100:+.1f}% .. {(hi - 1) * 100:+.1f}%</td><td>{r.p_value:.3g}</td>"
            f'<td class="{r.status.value}">{_e(r.status.value)}</td></tr>'
        )
    for key, what in [*((k, "missing in current") for k in report.missing_in_current),
                      *((k, "new (no baseline)") for k in report.new_in_current)]:  # fmt: skip
        rows.append(f"<tr><td>{_e(key[0])}</td><td>{key[1]:,}</td><td></td><td></td><td></td><td></td><td></td>"
                    f"<td>{_e(what)}</td></tr>")  # fmt: skip
    env = ""
    if report.environment_differences:
        env = "<p><strong>Environment differs from the baseline:</strong> " + _e(
            "; ".join(f"{f}: {a} -> {b}" for f, a, b in report.environment_differences)) + "</p>"  # fmt: skip
    return (
        f"<h2>Regression check (threshold {percent(report.threshold)})</h2>{env}"
        "<table><thead><tr><th>benchmark</th><th>size</th><th>baseline</th><th>current</th><th>change</th>"
        "<th>CI of change</th><th>p</th><th>status</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )
