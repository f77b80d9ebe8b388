"""An offline viewer for Chrome trace-event JSON: one HTML page of inline SVG, no network, no script.

Perfetto UI and chrome://tracing need a browser session and a file picker; this renders a
trace (the layout ringkernel writes, or any trace of ``X``/``B``/``E``/``i``/``C``/``s``/``f``
and ``M`` events) to a static page: a header (session, device, timing source), a time axis,
one lane per track grouped by process (names from the ``M`` events), slices as coloured
rectangles stacked by nesting depth, flow arrows from each launch call to its kernel,
instant events as ticks and counters as step charts. Every name is HTML-escaped (trace names
come from user code). The output is deterministic. For large traces use Perfetto; this is for
reading small ones and for screenshots::

    python -m ringkernel.profiling.viewer trace.json --html trace.html [--png trace.png] [--window 150000 160000]
"""

from __future__ import annotations

import argparse
import bisect
import html
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping

from .._fileio import atomic_write_bytes, shared_file_mode
from ..errors import ConfigurationError

__all__ = ["trace_html", "screenshot", "find_chromium", "main"]

#: Slices without a colour of their own (kernels, launches) get one by name; these stay clear of the
#: built-in categories' hues (green, blue, orange, purple, red), which ranges carry in ``args.color``.
PALETTE = ("#17becf", "#e377c2", "#8c564b", "#bcbd22", "#6b6ecf", "#1f9e89",
           "#b5651d", "#7f7f7f", "#ad494a", "#637939", "#de9ed6", "#393b79")  # fmt: skip
RIGHT_PAD, AXIS_H, PROC_H, ROW_H, PAD, COUNTER_H, CHAR_W = 12, 26, 22, 20, 4, 40, 6.6
_HEX = re.compile(r"#[0-9a-fA-F]{6}")
_SIZE = re.compile(r'data-size="(\d+)x(\d+)"')


def _load(trace: Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
    if isinstance(trace, Mapping):
        return trace
    text = trace if isinstance(trace, str) and trace.lstrip().startswith("{") else Path(trace).read_text(encoding="utf-8")
    data = json.loads(text)
    return data if isinstance(data, Mapping) else {"traceEvents": data}  # the bare-array form


def _colour(name: str, args: Any) -> str:
    if isinstance(args, Mapping) and isinstance(args.get("color"), str) and _HEX.fullmatch(args["color"]):
        return str(args["color"])
    return PALETTE[zlib.crc32(name.removeprefix("launch ").encode("utf-8", "replace")) % len(PALETTE)]  # a launch shares its kernel's colour


def _ink(fill: str) -> str:
    r, g, b = (int(fill[i : i + 2], 16) for i in (1, 3, 5))
    return "#111" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#fff"


def _fit(text: str, px: float) -> str:
    n = int((px - 6) / CHAR_W)
    return "" if n < 2 else text if len(text) <= n else text[: n - 1] + "\u2026"


def _fmt(us: float, step: float, end: float) -> str:
    unit, scale = ("ms", 1e3) if end >= 1000 else ("\u00b5s", 1.0)
    return f"{us / scale:.{max(0, -math.floor(math.log10(step / scale) + 1e-9))}f} {unit}"


def _nice_step(span: float, target: int) -> float:
    raw = span / target
    mag = 10.0 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * (1 - 1e-9))


class _Model:
    """The trace's tracks, slices (with nesting depth), instants, counters and flows."""

    def __init__(self, trace: Mapping[str, Any]) -> None:
        self.meta: Mapping[str, Any] = trace.get("metadata") or {}
        self.proc_name: dict[int, str] = {}
        self.proc_sort: dict[int, float] = {}
        self.track_name: dict[tuple[int, int], str] = {}
        self.track_sort: dict[tuple[int, int], float] = {}
        self.slices: dict[tuple[int, int], list[tuple[float, float, str, Any]]] = {}
        self.instants: dict[tuple[int, int], list[tuple[float, str, Any]]] = {}
        self.counters: dict[tuple[int, str], list[tuple[float, dict[str, float]]]] = {}
        flows: dict[Any, dict[str, tuple[int, int, float]]] = {}
        open_b: dict[tuple[int, int], list[tuple[float, str, Any]]] = {}
        events = trace.get("traceEvents") or []
        for ev in events:
            ph, pid, tid = ev.get("ph"), int(ev.get("pid", 0)), int(ev.get("tid", 0))
            track, ts, name, args = (pid, tid), float(ev.get("ts", 0.0)), str(ev.get("name", "")), ev.get("args")
            if ph == "M":
                margs = args if isinstance(args, Mapping) else {}
                if name == "process_name":
                    self.proc_name[pid] = str(margs.get("name", pid))
                elif name == "thread_name":
                    self.track_name[track] = str(margs.get("name", tid))
                elif name == "process_sort_index":
                    self.proc_sort[pid] = float(margs.get("sort_index", 0))
                elif name == "thread_sort_index":
                    self.track_sort[track] = float(margs.get("sort_index", 0))
            elif ph == "X":
                self.slices.setdefault(track, []).append((ts, ts + float(ev.get("dur", 0.0)), name, args))
            elif ph == "B":
                open_b.setdefault(track, []).append((ts, name, args))
            elif ph == "E" and open_b.get(track):
                b_ts, b_name, b_args = open_b[track].pop()
                self.slices.setdefault(track, []).append((b_ts, ts, b_name, b_args))
            elif ph in ("i", "I"):
                self.instants.setdefault(track, []).append((ts, name, args))
            elif ph == "C" and isinstance(args, Mapping):
                values = {str(k): float(v) for k, v in args.items() if isinstance(v, (int, float))}
                self.counters.setdefault((pid, name), []).append((ts, values))
            elif ph in ("s", "f"):
                flows.setdefault((ev.get("cat"), ev.get("id")), {})[ph] = (pid, tid, ts)
        times = [t for s in self.slices.values() for a, b, *_ in s for t in (a, b)]
        times += [t for i in self.instants.values() for t, *_ in i] + [t for c in self.counters.values() for t, _ in c]
        end = max(times, default=1.0)
        for track, stack in open_b.items():  # a B never ended: open to the end of the trace
            self.slices.setdefault(track, []).extend((t, end, n, a) for t, n, a in stack)
        lo = min(times, default=0.0)
        margin = max(end - lo, 1e-3) * 0.01
        self.extent = (lo - margin, max(end, lo) + margin)
        self.flows = sorted((v["s"], v["f"]) for v in flows.values() if set(v) == {"s", "f"})
        self.depth: dict[tuple[int, int], list[int]] = {}
        for track, spans in self.slices.items():  # nesting depth: a stack of end times
            spans.sort(key=lambda s: (s[0], -s[1], s[2]))
            ends: list[float] = []
            depths = []
            for a, b, *_ in spans:
                while ends and ends[-1] <= a:
                    ends.pop()
                depths.append(len(ends))
                ends.append(b)
            self.depth[track] = depths
        self.starts = {track: [s[0] for s in spans] for track, spans in self.slices.items()}
        for track in [*self.slices, *self.instants]:
            self.track_name.setdefault(track, f"thread {track[1]}")
        for pid in {p for p, _ in self.track_name} | {p for p, _ in self.counters}:
            self.proc_name.setdefault(pid, f"process {pid}")

    def rows(self, track: tuple[int, int]) -> int:
        return max((d + 1 for d in self.depth.get(track, [])), default=1)

    def deepest(self, track: tuple[int, int], t: float) -> int:
        """The nesting depth of the innermost slice of ``track`` that contains ``t`` (0 if none)."""
        spans = self.slices.get(track, [])
        i = bisect.bisect_right(self.starts.get(track, []), t)
        for j in range(i - 1, -1, -1):
            if spans[j][1] >= t:
                return self.depth[track][j]
        return 0


def trace_html(trace: Mapping[str, Any] | str | Path, *, width: int = 1600,
               window: tuple[float, float] | None = None) -> str:  # fmt: skip
    """One self-contained HTML page showing ``trace`` (a trace object, its JSON text, or a file path).

    ``width``: the page's width in CSS pixels. ``window``: the time range shown, in the trace's
    microseconds (default: all of it); with a window, an overview of the whole trace above
    marks the range shown. The page's size is in its body's ``data-size`` (``WxH``).
    """
    m = _Model(_load(trace))
    t0, t1 = window if window is not None else m.extent
    if not t1 > t0:
        raise ConfigurationError(f"the window must end after it starts: {window}", hint="window=(start_us, end_us)")
    names = [*m.track_name.values(), *(n for _, n in m.counters)]
    lw = int(min(250, max(110, CHAR_W * max(map(len, names), default=0) + 24)))
    esc, meta = html.escape, m.meta
    dev: Mapping[str, Any] = meta["device"] if isinstance(meta.get("device"), Mapping) else {}
    session = str(meta.get("session", "trace"))
    facts = [f"device: {dev.get('name', 'unknown')}" + (f" ({dev['compute_capability']}, {dev['sm_count']} SMs)"
             if "compute_capability" in dev and "sm_count" in dev else ""),  # fmt: skip
             f"timing: {meta.get('timing_source', 'unknown')}"]
    if "clock_sync_uncertainty_us" in meta:
        facts.append(f"clock alignment \u00b1{meta['clock_sync_uncertainty_us']} \u00b5s")
    counts = (f"slices: {sum(map(len, m.slices.values()))}, flows: {len(m.flows)}, marks: "
              f"{sum(map(len, m.instants.values()))}, counter samples: {sum(map(len, m.counters.values()))}")  # fmt: skip
    lines = [" \u00b7 ".join(facts), counts]
    parts = [f'<div class="facts">{esc(line)}</div>' for line in lines]
    height = 36 + sum(19 * math.ceil(len(line) * 7 / (width - 20)) for line in lines)  # h1, then wrapped lines
    if window is not None:
        span = m.extent[1] - m.extent[0]
        svg, h = _svg(m, m.extent, lw, width, compact=True, highlight=(t0, t1))
        parts.append(f'<div class="label">the whole trace ({esc(_fmt(span, span, span))}); '
                     f"shown below: {esc(_fmt(t0, (t1 - t0) / 10, t1))} to {esc(_fmt(t1, (t1 - t0) / 10, t1))}</div>{svg}")  # fmt: skip
        height += h + 23
    svg, h = _svg(m, (t0, t1), lw, width)
    parts.append(svg)
    height += h + 8
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{esc(session)} \u2014 trace</title>\n<style>'
            "body{margin:0;padding:8px 0 0;font:13px system-ui,sans-serif;background:#fff;color:#222}"
            "h1{font-size:17px;margin:0 10px 3px}.facts,.label{color:#444;margin:0 10px 4px;line-height:19px}"
            ".label{font-size:12px;margin-top:6px}"
            "svg{display:block}svg text{font:11px system-ui,sans-serif}</style></head>\n"
            f'<body data-size="{width}x{height}"><h1>{esc(session)}</h1>\n'
            + "\n".join(parts) + "\n</body></html>\n")  # fmt: skip


def _svg(m: _Model, win: tuple[float, float], lw: int, width: int, *, compact: bool = False,
         highlight: tuple[float, float] | None = None) -> tuple[str, int]:  # fmt: skip
    """The timeline of ``win`` (label column ``lw`` pixels wide) as an SVG element, and its height."""
    t0, t1 = win
    esc, plot_w = html.escape, width - lw - RIGHT_PAD
    row_h, pad, cls = (5, 1, "ov") if compact else (ROW_H, PAD, "slice")

    def x(t: float) -> float:
        return lw + (min(max(t, t0), t1) - t0) / (t1 - t0) * plot_w

    body: list[str] = []
    y = 0 if compact else AXIS_H
    lane_y: dict[tuple[int, int], float] = {}
    for pid in sorted(m.proc_name, key=lambda p: (m.proc_sort.get(p, p), p)):
        if not compact:
            body.append(f'<rect x="0" y="{y}" width="{width}" height="{PROC_H}" fill="#eef1f5"/>'
                        f'<text x="8" y="{y + 15}" font-weight="bold">{esc(m.proc_name[pid])}</text>')  # fmt: skip
            y += PROC_H
        tracks = sorted((t for t in m.track_name if t[0] == pid), key=lambda t: (m.track_sort.get(t, t[1]), t[1]))
        for track in tracks:
            lane_h = m.rows(track) * row_h + 2 * pad
            lane_y[track] = y + pad
            body.append("<g>" if compact else f'<g class="lane" data-pid="{pid}" data-tid="{track[1]}">')
            body.append(f'<line x1="0" x2="{width}" y1="{y + lane_h}" y2="{y + lane_h}" stroke="#e3e3e3"/>')
            if not compact:
                body.append(f'<text x="16" y="{y + pad + 14}">{esc(_fit(m.track_name[track], lw - 16))}</text>')
            for (a, b, name, args), depth in zip(m.slices.get(track, []), m.depth.get(track, [])):
                if b < t0 or a > t1:
                    continue
                xa, w = x(a), max(x(b) - x(a), 0.6)
                fill, sy = _colour(name, args), y + pad + depth * row_h
                tip = f"{name}: {a:.3f} \u00b5s, {b - a:.3f} \u00b5s"
                body.append(f'<rect class="{cls}" x="{xa:.2f}" y="{sy}" width="{w:.2f}" height="{row_h - 1}" '
                            f'fill="{fill}"><title>{esc(tip)}</title></rect>')  # fmt: skip
                label = "" if compact else _fit(name, w)
                if label:
                    body.append(f'<text x="{xa + 3:.2f}" y="{sy + 14}" fill="{_ink(fill)}">{esc(label)}</text>')
            for ts, name, args in [] if compact else m.instants.get(track, []):
                if t0 <= ts <= t1:
                    fill, xi, yi = _colour(name, args), x(ts), y + pad
                    body.append(f'<path class="mark" d="M{xi - 4:.2f},{yi} h8 l-4,7 z" fill="{fill}" stroke="#333" '
                                f'stroke-width="0.5"><title>{esc(name)}: {ts:.3f} \u00b5s</title></path>')  # fmt: skip
            body.append("</g>")
            y += lane_h
        for (cpid, cname), samples in [] if compact else sorted(m.counters.items()):
            if cpid == pid:
                body.append(_counter(cname, samples, y, x, t1, lw, width))
                y += COUNTER_H
    for (sp, stid, sts), (fp, ftid, fts) in [] if compact else m.flows:
        if (sp, stid) in lane_y and (fp, ftid) in lane_y and not (max(sts, fts) < t0 or min(sts, fts) > t1):
            ys = lane_y[(sp, stid)] + m.deepest((sp, stid), sts) * ROW_H + ROW_H / 2
            yf = lane_y[(fp, ftid)] + m.deepest((fp, ftid), fts) * ROW_H + ROW_H / 2
            body.append(f'<line class="flow" x1="{x(sts):.2f}" y1="{ys:.1f}" x2="{x(fts):.2f}" y2="{yf:.1f}" '
                        'stroke="#222" stroke-opacity="0.6" marker-end="url(#arrow)"/>')  # fmt: skip
    height = y + 4
    grid: list[str] = []
    step = _nice_step(t1 - t0, max(2, plot_w // (140 if compact else 110)))
    tick = math.ceil(t0 / step) * step
    while tick <= t1 + 1e-9:
        xt = x(tick)
        grid.append(f'<line x1="{xt:.2f}" x2="{xt:.2f}" y1="{0 if compact else AXIS_H - 6}" y2="{height}" stroke="#ddd"/>')
        if not compact and xt < width - 70:
            grid.append(f'<text x="{xt + 3:.2f}" y="{AXIS_H - 10}" fill="#555">{esc(_fmt(tick, step, t1))}</text>')
        tick += step
    if highlight is not None:
        ha, hb = x(highlight[0]), x(highlight[1])
        body.append(f'<rect class="window" x="{ha:.2f}" y="0" width="{max(hb - ha, 2):.2f}" height="{height}" '
                    'fill="#1f77b4" fill-opacity="0.15" stroke="#1f77b4"/>')  # fmt: skip
    defs = ('<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" markerHeight="7" '
            'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#222"/></marker></defs>')  # fmt: skip
    return (f'<svg width="{width}" height="{height}">{defs}'
            + "".join(grid) + "".join(body) + "</svg>", height)  # fmt: skip


def _counter(name: str, samples: list[tuple[float, dict[str, float]]], y: float, x: Callable[[float], float],
             t1: float, lw: int, width: int) -> str:  # fmt: skip
    """A counter's series as step lines in a lane of COUNTER_H pixels."""
    esc = html.escape
    series = sorted({k for _, v in samples for k in v})
    top = max((v for _, vals in samples for v in vals.values()), default=0.0) or 1.0
    out = [f'<g class="counter" data-name="{esc(name)}"><line x1="0" x2="{width}" y1="{y + COUNTER_H}" '
           f'y2="{y + COUNTER_H}" stroke="#e3e3e3"/><text x="16" y="{y + 14}">{esc(_fit(name, lw - 16))}</text>'
           f'<text x="16" y="{y + 30}" fill="#666">{esc(_fit(f"max {top:,.0f}: " + ", ".join(series), lw - 16))}</text>']  # fmt: skip
    for k, key in enumerate(series):
        pts: list[str] = []
        prev: float | None = None
        for ts, vals in sorted(samples, key=lambda s: s[0]):
            if key in vals:
                vy = y + COUNTER_H - 3 - vals[key] / top * (COUNTER_H - 8)
                pts += ([f"{x(ts):.2f},{prev:.1f}"] if prev is not None else []) + [f"{x(ts):.2f},{vy:.1f}"]
                prev = vy
        if prev is not None:
            pts.append(f"{x(t1):.2f},{prev:.1f}")
            out.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{PALETTE[k % len(PALETTE)]}" '
                       'stroke-width="1.5"/>')  # fmt: skip
    return "".join(out) + "</g>"


def find_chromium() -> str | None:
    """The first of ``chromium``, ``chromium-browser``, ``google-chrome`` on ``PATH``."""
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def screenshot(page: str | Path, png: str | Path, *, browser: str, size: tuple[int, int] | None = None,
               scale: float = 1.0, timeout: float = 120) -> Path:  # fmt: skip
    """Render the HTML file ``page`` to ``png`` with headless Chromium: ``size`` CSS pixels (default:
    the page's ``data-size``) at ``scale`` device pixels each (the PNG is ``size * scale``)."""
    page, png = Path(page).resolve(), Path(png).resolve()
    if size is None:
        found = _SIZE.search(page.read_text())
        size = (int(found[1]), int(found[2])) if found else (1600, 900)
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", f"--force-device-scale-factor={scale}",
                 f"--window-size={size[0]},{size[1]}", f"--screenshot={png}"]  # fmt: skip
        subprocess.run([browser, *flags, page.as_uri()], capture_output=True, text=True, timeout=timeout, check=True)
    return png


def main(argv: list[str] | None = None) -> int:
    """``python -m ringkernel.profiling.viewer trace.json [--html out.html] [--png out.png] ...``"""
    p = argparse.ArgumentParser(prog="python -m ringkernel.profiling.viewer", description=__doc__.split("\n")[0])
    p.add_argument("trace", help="a Chrome trace-event JSON file")
    p.add_argument("--html", help="write the page there (default: the trace's path with .html)")
    p.add_argument("--png", help="also a headless-Chromium screenshot of the page there")
    p.add_argument("--window", nargs=2, type=float, metavar=("START_US", "END_US"), help="the time range shown")
    p.add_argument("--width", type=int, default=1600, help="page width in CSS pixels (default 1600)")
    p.add_argument("--scale", type=float, default=1.0, help="device pixels per CSS pixel in the PNG (default 1)")
    p.add_argument("--browser", help="Chromium's path (default: chromium, chromium-browser or google-chrome)")
    args = p.parse_args(argv)
    out = Path(args.html) if args.html else Path(args.trace).with_suffix(".html")
    window = (args.window[0], args.window[1]) if args.window else None
    # bad input is a message and exit status 2, not a traceback (an adversarial trial: non-JSON,
    # {"traceEvents": 5}, a missing file, a folder as --html, a name no UTF-8 can hold); the page
    # is written whole or not at all
    try:
        page = trace_html(Path(args.trace), width=args.width, window=window)
        if out.is_dir():
            raise IsADirectoryError(f"--html {out} is a folder: name a file")
        # (a lone surrogate in a name is valid JSON but no UTF-8: drawn as "?")
        atomic_write_bytes(out, page.encode("utf-8", errors="replace"), mode=shared_file_mode())
    except (OSError, ValueError, TypeError, KeyError, AttributeError, UnicodeError) as exc:
        print(f"cannot draw {args.trace}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    if args.png:
        browser = args.browser or find_chromium()
        if browser is None:
            print("no Chromium found: pass --browser", file=sys.stderr)
            return 1
        print(f"wrote {screenshot(out, args.png, browser=browser, scale=args.scale)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
