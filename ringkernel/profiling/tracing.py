"""Chrome trace-event JSON (Perfetto UI, chrome://tracing) from a profiler's events.

Layout: process 1 is the host, one track (``tid``) per thread, and per asyncio task that
opened ranges, holding ranges (``X``; synchronisations are ``SYNC`` ranges), launch and copy
calls (``X``), marks and pool operations (``i``), plus the pool counters (``C``); process
``100 + device`` is a GPU, one track per stream holding its kernels and copies (``X``, category
``kernel`` or ``memcpy``). A flow arrow (``s`` on the call, ``f`` with ``"bp": "e"`` on the
GPU slice) joins each launch or copy to its GPU span. ``M`` events name processes and tracks; the
top-level ``"metadata"`` carries the session, device, versions and timing source.
Timestamps are microseconds from the session start.
"""

from __future__ import annotations

from typing import Any, Mapping

from .events import EventKind, ProfileEvent

__all__ = ["build_trace", "HOST_PID", "GPU_PID_BASE"]

HOST_PID = 1
GPU_PID_BASE = 100
#: The tid of the pool counters on the host process (no thread has it: thread tracks start at 1).
COUNTER_TID = 0


def _us(ns: int, t0: int) -> float:
    return round((ns - t0) / 1e3, 3)


def _dur(start: int, end: int, t0: int) -> float:
    return max(round(_us(end, t0) - _us(start, t0), 3), 0.0)


def build_trace(events: list[ProfileEvent], *, host_tracks: Mapping[int, str], streams: Mapping[int, str],
                metadata: Mapping[str, Any], t0_ns: int) -> dict[str, Any]:  # fmt: skip
    """The trace-event object for ``events`` (see the module docstring for the layout)."""
    starts = [e.start_ns for e in events] + [e.gpu_start_ns for e in events if e.gpu_start_ns is not None]
    t0 = min([t0_ns, *starts])
    out: list[dict[str, Any]] = []
    devices: set[int] = set()
    used_streams: set[tuple[int, int]] = set()
    for e in events:
        if e.kind is EventKind.RANGE:
            args = {"category": e.category.name, "color": e.category.hex, **dict(e.args)}
            if e.parent_id is not None:
                args["parent_id"] = e.parent_id
            out.append({"ph": "X", "name": e.name, "cat": e.category.name, "ts": _us(e.start_ns, t0),
                        "dur": _dur(e.start_ns, e.end_ns, t0), "pid": HOST_PID,
                        "tid": e.track_id, "args": args})  # fmt: skip
        elif e.kind is EventKind.MARK:
            out.append({"ph": "i", "s": "t", "name": e.name, "cat": e.category.name, "ts": _us(e.start_ns, t0),
                        "pid": HOST_PID, "tid": e.track_id, "args": {"category": e.category.name}})  # fmt: skip
        elif e.kind is EventKind.MEMORY:
            args = {"category": e.category.name, **dict(e.args), "bytes": e.nbytes}
            out.append({"ph": "i", "s": "t", "name": e.name, "cat": e.category.name, "ts": _us(e.start_ns, t0),
                        "pid": HOST_PID, "tid": e.track_id, "args": args})  # fmt: skip
        elif e.kind is EventKind.COUNTER:
            out.append({"ph": "C", "name": e.name, "cat": e.category.name, "ts": _us(e.start_ns, t0),
                        "pid": HOST_PID, "tid": COUNTER_TID, "args": dict(e.args)})  # fmt: skip
        elif e.kind is EventKind.KERNEL or e.kind is EventKind.TRANSFER:
            out.extend(_kernel(e, t0))
            if e.gpu_start_ns is not None and e.stream_id is not None:
                devices.add(e.device)
                used_streams.add((e.device, e.stream_id))
    meta: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": HOST_PID, "tid": 0, "args": {"name": f"host: {metadata.get('session', '')}"}},
        {"ph": "M", "name": "process_sort_index", "pid": HOST_PID, "tid": 0, "args": {"sort_index": 0}},
    ]  # fmt: skip
    for tid, name in sorted(host_tracks.items()):
        meta.append({"ph": "M", "name": "thread_name", "pid": HOST_PID, "tid": tid, "args": {"name": name}})
        meta.append({"ph": "M", "name": "thread_sort_index", "pid": HOST_PID, "tid": tid, "args": {"sort_index": tid}})
    device = metadata.get("device") or {}
    for dev in sorted(devices):
        pid = GPU_PID_BASE + dev
        dev_name = device.get("name", "GPU") if isinstance(device, Mapping) else "GPU"
        meta.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": f"GPU {dev}: {dev_name}"}})
        meta.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": 1 + dev}})
    for dev, sid in sorted(used_streams):
        meta.append({"ph": "M", "name": "thread_name", "pid": GPU_PID_BASE + dev, "tid": sid,
                     "args": {"name": streams.get(sid, f"stream {sid}")}})  # fmt: skip
    # Per track, timestamps must not go back and an enclosing slice must come before what it
    # encloses: sort by time, longer first, and flow ends after the slice they bind to.
    order = {"X": 0, "i": 1, "C": 1, "s": 2, "f": 2}
    out.sort(key=lambda ev: (ev["ts"], -ev.get("dur", 0.0), order[ev["ph"]]))
    return {"traceEvents": meta + out, "displayTimeUnit": "ns", "metadata": dict(metadata)}


def _kernel(e: ProfileEvent, t0: int) -> list[dict[str, Any]]:
    """The launch (or copy) call on the host track, the kernel (or copy) on its stream's track,
    and the flow between."""
    copy = e.kind is EventKind.TRANSFER
    args = dict(e.args)
    args.update(stream=e.stream, launch_id=e.id)
    if e.nbytes is not None:
        args["bytes"] = e.nbytes
    ts = _us(e.start_ns, t0)
    host: dict[str, Any] = {"ph": "X", "name": e.name if copy else f"launch {e.name}", "cat": "launch", "ts": ts,
            "dur": max(_dur(e.start_ns, e.end_ns, t0), 0.001), "pid": HOST_PID, "tid": e.track_id, "args": args}  # fmt: skip
    if e.gpu_start_ns is None or e.gpu_end_ns is None or e.stream_id is None:
        return [host]
    pid = GPU_PID_BASE + e.device
    gts = _us(e.gpu_start_ns, t0)
    gpu_args = {**args, "start_estimated": e.gpu_start_estimated}
    if e.parent_id is not None:
        gpu_args["range_id"] = e.parent_id
    kernel: dict[str, Any] = {"ph": "X", "name": e.name, "cat": "memcpy" if copy else "kernel", "ts": gts, "dur": _dur(e.gpu_start_ns, e.gpu_end_ns, t0),
              "pid": pid, "tid": e.stream_id, "args": gpu_args}  # fmt: skip
    # Both ends inside their slices (not on an edge), so every viewer binds them to those slices.
    flow = {"name": "launch", "cat": "launch", "id": e.id}
    return [host, kernel, {"ph": "s", "ts": round(ts + host["dur"] / 2, 4), "pid": HOST_PID, "tid": e.track_id, **flow},
            {"ph": "f", "bp": "e", "ts": round(gts + kernel["dur"] / 2, 4), "pid": pid, "tid": e.stream_id, **flow}]  # fmt: skip
