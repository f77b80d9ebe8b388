"""``LaunchCapture.CUPTI``: captured launches made from CUPTI's kernel and driver-call records.

No Python runs at a launch in this mode; when a profiler resolves, :func:`adopt_records` turns
the records its CUPTI timer collected (``_cupti.KernelRecord``) into the profiler's captured
launches, as the launch hook would have: the kernel's Python name, the launching thread's
track, the innermost range open on that thread during the call, the stream's label.
"""

from __future__ import annotations

import threading
from typing import Any

from ..kernel.hooks import LaunchEvent
from .events import EventKind

__all__ = ["adopt_records", "readable_symbol"]


def adopt_records(prof: Any, records: list[Any], timer: Any) -> None:
    """Add ``records`` (in launch order) to ``prof``'s captured launches with their GPU times.
    ``timer`` maps CUPTI's stream ids to the handles the profiler knows (``stream_ids``)."""
    if not records:
        return
    from ..compile.compiler import ENTRY_NAMES

    # CUPTI's thread ids are pthread_self() in 32 bits (its default type) or the OS's id: both
    # looked up among live threads, then among those the profiler saw (ranges, activation)
    for t in threading.enumerate():
        if t.ident is not None:
            prof._thread_names[t.ident] = t.name
    threads: dict[int, tuple[int, str]] = {ident & 0xFFFFFFFF: (ident, name) for ident, name in prof._thread_names.items()}
    for t in threading.enumerate():
        if t.ident is not None and t.native_id is not None:
            threads.setdefault(int(t.native_id), (t.ident, t.name))
    # each thread's ranges (all its tracks: the thread's and its asyncio tasks') as a sweep:
    # starts push, ends pop, a launch's parent is the innermost range open at its call
    ident_of = {tid: (key if isinstance(key, int) else key[0]) for key, (tid, _) in list(prof._tracks.items())}
    alive = {t.ident for t in threading.enumerate()}
    retired: dict[int, tuple[int, str]] = {}  # ident -> its latest retired track
    for rkey, tr in sorted(((rk, tr) for rk, tr in list(prof._tracks.items()) if isinstance(rk, tuple) and len(rk) == 2
                           and isinstance(rk[1], tuple) and rk[1][:1] == ("ended",)), key=lambda kv: kv[0][1][1]):  # fmt: skip
        retired[rkey[0]] = tr
    # (ranges still open count as open from their start: a launch inside `with prof.range(...)`
    # whose events are read before the range ends still has its parent)
    spans: dict[int, tuple[int, int, int | None]] = {}  # range id -> (track id, start, end or None)
    for op in list(prof._open_ranges.values()):
        spans[op.id] = (op.track_id, op.start_ns, None)
    for e in prof._events:
        if e.kind is EventKind.RANGE:
            spans[e.id] = (e.track_id, e.start_ns, e.end_ns)  # (ended meanwhile: its end wins)
    sweep: dict[int, list[tuple[int, int, int, int]]] = {}  # ident -> (time, order, kind, id): 0 start, 2 end
    for rid, (track_id, start, end) in spans.items():
        if track_id in ident_of:
            lst = sweep.setdefault(ident_of[track_id], [])
            lst.append((start, 0, rid, 0))
            if end is not None:
                lst.append((end, 2, rid, 0))
    handles = sorted({0, *(k for k in prof._stream_names if k >= 0), *(k for _, k in prof._stream_cache.values() if k >= 0)})
    by_cupti = timer.stream_ids(handles)
    per_thread: dict[int, list[Any]] = {}
    for rec in records:
        per_thread.setdefault(rec.thread_id, []).append(rec)
    with prof._lock:
        for cupti_tid, recs in per_thread.items():
            thread = threads.get(cupti_tid)
            if thread is not None:
                key: Any = thread[0]
                # a live thread's track; an ended thread's retired one (its key moved to
                # (ident, ("ended", n)); a review: its kernels got a second track, which a later
                # thread at the same id then took over); else one of its own under a key no
                # thread's lookup uses
                track = prof._tracks.get(key) if key in alive else None
                if track is None:
                    track = retired.get(key)
                if track is None:
                    track = prof._tracks.setdefault(("cupti thread", key), (next(prof._track_ids), thread[1]))
            else:  # a thread that started and ended unseen: its own track, named by CUPTI's id
                key = ("cupti thread", cupti_tid)
                track = prof._tracks.setdefault(key, (next(prof._track_ids), f"thread {cupti_tid:#x}"))
            marks = list(sweep.get(thread[0], ()) if thread is not None else ())
            marks += [(r.call_start_ns, 1, i, 1) for i, r in enumerate(recs)]
            marks.sort()
            open_: list[int] = []
            parent: dict[int, int | None] = {}
            for _, kind, ident, _ in marks:
                if kind == 0:
                    open_.append(ident)
                elif kind == 2:
                    for k in range(len(open_) - 1, -1, -1):  # (ranges of two tasks may interleave)
                        if open_[k] == ident:
                            del open_[k]
                            break
                else:
                    parent[ident] = open_[-1] if open_ else None
            last_end: int | None = None
            for i, r in enumerate(recs):
                if prof._count >= prof.max_events:
                    prof._dropped += 1
                    continue
                handle = by_cupti.get(r.stream_id)
                if handle is None:
                    handle = -(10**9 + r.stream_id)  # a stream ringkernel does not know: CUPTI's number
                    prof._stream_names.setdefault(handle, f"CUDA stream {r.stream_id} (CUPTI id)")
                sid = prof._stream_id(handle)
                name = ENTRY_NAMES.get(r.symbol) or readable_symbol(r.symbol)
                ev = LaunchEvent(name, r.grid, r.block, r.shared_mem, None, "cupti", -1, r.call_start_ns)
                rid = next(prof._ids)
                gap = None if last_end is None else r.call_start_ns - last_end
                prof._launches.append((ev, rid, handle, sid, gap, track[0], parent.get(i), r.call_end_ns))
                prof._times[rid] = (r.start_ns, r.end_ns, False, None)
                prof._count += 1
                last_end = r.call_end_ns


def readable_symbol(symbol: str) -> str:
    """A C++ (Itanium-mangled) kernel symbol's qualified name, ``_ZN6cudapy8__main__5saxpyB2v1E...``
    -> ``__main__.saxpy`` (numba's ``cudapy`` prefix and ABI tags dropped), ``_Z9vectorAddPKfS0_Pfi``
    -> ``vectorAdd`` (argument types dropped); other symbols (``extern "C"``) as they are."""
    if symbol.startswith("_Z") and len(symbol) > 2 and symbol[2].isdigit():  # a plain function: _Z9vectorAddPKf...
        j = 2
        while j < len(symbol) and symbol[j].isdigit():
            j += 1
        name = symbol[j:j + int(symbol[2:j])]
        return name or symbol
    if not symbol.startswith("_ZN"):
        return symbol
    parts, i = [], 3
    while i < len(symbol) and symbol[i].isdigit():
        j = i
        while j < len(symbol) and symbol[j].isdigit():
            j += 1
        n = int(symbol[i:j])
        parts.append(symbol[j:j + n])
        i = j + n
        while i < len(symbol) and symbol[i] == "B" and i + 1 < len(symbol) and symbol[i + 1].isdigit():  # an ABI tag
            j = i + 1
            while j < len(symbol) and symbol[j].isdigit():
                j += 1
            i = j + int(symbol[i + 1:j])
    if parts and parts[0] == "cudapy":
        parts = parts[1:]
    return ".".join(parts) if parts else symbol
