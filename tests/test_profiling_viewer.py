"""The offline trace viewer (ringkernel.profiling.viewer): a trace of real launches on the simulator
rendered to HTML (lanes, slices, flows, counters, escaping), and the page in headless Chromium."""

from __future__ import annotations

import json
import re
import struct
import threading
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from numba import cuda

from ringkernel import GpuMemoryPool, GpuProfiler, ProfileCategory, gpu_kernel
from ringkernel.errors import ConfigurationError
from ringkernel.profiling import reset
from ringkernel.profiling.viewer import main, screenshot, trace_html

pytestmark = pytest.mark.usefixtures("launch_reports")

ROOT = Path(__file__).resolve().parents[1]
EVIL = "<script>alert(1)</script>"


@gpu_kernel
def triple(a, out):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < out.size:
        out[i] = 3 * a[i]


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    reset()
    yield
    reset()


def _trace(rng: np.random.Generator) -> dict[str, Any]:
    """Ranges on two threads, launches on two streams, a mark, pool counters; checked by the format's rules."""
    from tests.test_profiling import validate_trace

    p = GpuProfiler("viewer & <co>")
    x = rng.random(300).astype(np.float32)
    a, outs = cuda.to_device(x), [cuda.device_array(300, np.float32) for _ in range(2)]
    s1, s2 = cuda.stream(), cuda.stream()
    p.name_stream(s1, "stream <A>")
    p.name_stream(s2, "stream B")
    pool = GpuMemoryPool()
    p.track_pool(pool, "scratch")

    def worker() -> None:
        with p.range("worker step", ProfileCategory.IO):
            triple(a, outs[1], stream=s2)

    with p:
        with p.range(EVIL, ProfileCategory.ALGORITHM):
            triple(a, outs[0], stream=s1)
            buf = pool.device_array(256, np.float32)
            t = threading.Thread(target=worker, name="worker-1")
            t.start()
            t.join()
            p.mark("halfway", ProfileCategory.SYNC)
        with p.range("second", ProfileCategory.ALGORITHM):
            with p.range("inner", ProfileCategory.MEMORY):
                triple(a, outs[0], stream=s1)
            triple(a, outs[1], stream=s2)
        del buf
    np.testing.assert_allclose(outs[1].copy_to_host(), 3 * x, rtol=1e-6)
    trace = validate_trace(p.export_chrome_tracing())
    p.close()
    return trace


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def _classes(tags: list[tuple[str, dict[str, str | None]]], cls: str) -> list[dict[str, str | None]]:
    return [attrs for _, attrs in tags if attrs.get("class") == cls]


def test_trace_of_real_launches_renders_every_track_slice_and_flow(rng: np.random.Generator, tmp_path: Path) -> None:
    trace = _trace(rng)
    events = trace["traceEvents"]
    page = trace_html(trace)
    tags = _tags(page)
    named = {(e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    used = {(e["pid"], e["tid"]) for e in events if e["ph"] in ("X", "i")}
    lanes = {(int(str(a["data-pid"])), int(str(a["data-tid"]))) for a in _classes(tags, "lane")}
    assert used <= named == lanes, "one lane per named track, and every track with events has one"
    assert len({pid for pid, _ in lanes}) == 2 and len({t for p, t in lanes if p >= 100}) == 2  # host, GPU; 2 streams
    assert len({t for p, t in lanes if p == 1}) == 2, "two host threads"
    assert len(_classes(tags, "slice")) == sum(e["ph"] == "X" for e in events) == 4 + 2 * 4  # ranges, launch + kernel
    assert len(_classes(tags, "flow")) == sum(e["ph"] == "s" for e in events) == 4
    assert len(_classes(tags, "mark")) == 1 + 2  # the mark; the pool's allocation and free (instants)
    assert [a["data-name"] for a in _classes(tags, "counter")] == ["scratch bytes"]
    # names from user code are escaped: no script element, the text shows as text
    assert [t for t, _ in tags if t in ("script", "iframe", "img", "object")] == []
    assert "<script>" not in page.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "stream &lt;A&gt;" in page and "<h1>viewer &amp; &lt;co&gt;</h1>" in page
    assert "host (simulator)" in page and "worker-1" in page and "MainThread" in page
    assert not re.search(r"https?:|src=|href=|@import", page), "self-contained: nothing to fetch"
    # deterministic, and the same from the object, its JSON text and its file
    path = tmp_path / "t.json"
    path.write_text(json.dumps(trace))
    assert trace_html(json.dumps(trace)) == trace_html(path) == page == trace_html(trace)
    # a window: an overview of the whole trace and fewer slices in the detail
    first = min(e["ts"] for e in events if e["ph"] == "X")
    zoomed = _tags(trace_html(trace, window=(first, first + 1.0)))
    assert len(_classes(zoomed, "window")) == 1 and len(_classes(zoomed, "ov")) == len(_classes(tags, "slice"))
    assert 1 <= len(_classes(zoomed, "slice")) < len(_classes(tags, "slice"))
    with pytest.raises(ConfigurationError, match="window"):
        trace_html(trace, window=(5.0, 5.0))


def test_begin_end_pairs_nest_and_unnamed_tracks_get_a_lane() -> None:
    trace = {"traceEvents": [
        {"ph": "B", "name": "outer", "ts": 0, "pid": 7, "tid": 3}, {"ph": "B", "name": "in<ner>", "ts": 2, "pid": 7, "tid": 3},
        {"ph": "E", "ts": 4, "pid": 7, "tid": 3}, {"ph": "E", "ts": 9, "pid": 7, "tid": 3},
        {"ph": "X", "name": "x", "ts": 1, "dur": 2, "pid": 7, "tid": 4}, {"ph": "B", "name": "open", "ts": 5, "pid": 7, "tid": 4},
        {"ph": "C", "name": "load", "ts": 0, "pid": 7, "args": {"a": 1, "b": 3}}, {"ph": "C", "name": "load", "ts": 6, "pid": 7, "args": {"a": 2}},
    ]}  # fmt: skip
    page = trace_html(trace, width=900)
    tags = _tags(page)
    assert {(a["data-pid"], a["data-tid"]) for a in _classes(tags, "lane")} == {("7", "3"), ("7", "4")}
    slices = _classes(tags, "slice")
    assert len(slices) == 4, "two B/E pairs, an X, and a B never ended (open to the trace's end)"
    ys = sorted({float(str(a["y"])) for a in slices})
    assert len(ys) == 3, "the nested slice sits one row below its parent"
    assert "in&lt;ner&gt;" in page and "process 7" in page and "thread 3" in page
    assert [a["data-name"] for a in _classes(tags, "counter")] == ["load"]
    assert len([t for t, _ in tags if t == "polyline"]) == 2, "one step line per series"
    assert page.startswith("<!DOCTYPE html>") and 'data-size="900x' in page


def test_the_h200_example_trace_renders() -> None:
    path = ROOT / "benchmarks" / "results" / "profiling" / "example_trace.json"
    trace = json.loads(path.read_text())
    tags = _tags(trace_html(path))
    assert len(_classes(tags, "slice")) == sum(e["ph"] == "X" for e in trace["traceEvents"]) == 126
    assert len(_classes(tags, "flow")) == 40 and len(_classes(tags, "lane")) == 3


def _png(path: Path) -> tuple[int, int, np.ndarray]:
    """Width, height and RGB(A) pixels of an 8-bit, non-interlaced PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", (0, 0, 0, 0, 0, 0, 0)
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", data[pos + 8 : pos + 8 + n])
        elif kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + n]
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, ihdr
    bpp, raw = 3 if ctype == 2 else 4, zlib.decompress(idat)
    stride = w * bpp
    rows, prev = np.zeros((h, stride), np.uint8), [0] * stride
    for r in range(h):
        kind, cur = raw[r * (stride + 1)], list(raw[r * (stride + 1) + 1 : (r + 1) * (stride + 1)])
        for i in range(stride) if kind else ():
            a = cur[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                cur[i] = (cur[i] + a) & 255
            elif kind == 2:
                cur[i] = (cur[i] + b) & 255
            elif kind == 3:
                cur[i] = (cur[i] + ((a + b) >> 1)) & 255
            else:  # Paeth
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows[r], prev = cur, cur
    return w, h, rows.reshape(h, w, bpp)[:, :, :3]


def test_trace_page_in_headless_chromium(rng: np.random.Generator, tmp_path: Path) -> None:
    from tests.benchmark.test_bench_cli import _chromium

    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium not installed (capability probe failed); .ci/run installs it where it can")
    page = tmp_path / "trace.html"
    page.write_text(trace_html(_trace(rng), width=1000), encoding="utf-8")
    found = re.search(r'data-size="(\d+)x(\d+)"', page.read_text())
    assert found is not None
    png = screenshot(page, tmp_path / "trace.png", browser=browser)
    w, h, px = _png(png)
    assert (w, h) == (1000, int(found[2])) and 150 < h < 600
    colours = np.unique(px.reshape(-1, 3), axis=0)
    assert len(colours) > 20, "not a blank page"
    for rgb in (ProfileCategory.ALGORITHM.color, ProfileCategory.IO.color):  # the two threads' ranges were drawn
        n = int((px == np.array([rgb >> 16, (rgb >> 8) & 255, rgb & 255], np.uint8)).all(axis=2).sum())
        assert n > 100, f"colour #{rgb:06x}: {n} pixels"
    # the command line: the page and its screenshot at twice the pixels
    trace_file = tmp_path / "t.json"
    trace_file.write_text(json.dumps(_trace(rng)))
    out = tmp_path / "cli.html"
    assert main([str(trace_file), "--html", str(out), "--png", str(tmp_path / "cli.png"), "--width", "700",
                 "--scale", "2", "--browser", browser]) == 0  # fmt: skip
    w2, h2, _ = _png(tmp_path / "cli.png")
    assert w2 == 1400 and f'data-size="700x{h2 // 2}"' in out.read_text()


def test_the_command_line_refuses_bad_input_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Non-JSON, a wrong structure, a missing file, a folder as --html gave tracebacks (and a
    name no UTF-8 can hold left a 0-byte page): now a message and exit status 2, the page whole
    or not at all."""
    from ringkernel.profiling.viewer import main

    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"traceEvents": 5}')
    good = tmp_path / "good.json"
    good.write_text('{"traceEvents": [{"name": "k\\udc80", "ph": "X", "ts": 0, "dur": 5, "pid": 1, "tid": 1}]}')
    for argv in ([str(bad)], [str(wrong)], [str(tmp_path / "missing.json")], [str(good), "--html", str(tmp_path)]):
        assert main(argv) == 2, argv
        assert "cannot draw" in capsys.readouterr().err
    assert not (tmp_path / "bad.html").exists()
    assert main([str(good), "--html", str(tmp_path / "g.html")]) == 0  # a lone surrogate: drawn as "?"
    assert ">k?<" in (tmp_path / "g.html").read_text(encoding="utf-8")
