"""``GpuProfiler``'s results: captured launches and copies resolved into events, metadata, summary, Chrome trace."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, NoReturn

from ..errors import ConfigurationError
from ..kernel.hooks import LaunchEvent
from . import capture
from .categories import ProfileCategory
from .cupti_capture import adopt_records
from .events import EventKind, ProfileEvent
from .ranges import Open
from .summary import ProfilingSummary
from .timing import LaunchCapture, Span, Timer

__all__ = ["ResultsMixin"]

_UNKNOWN: Span = (None, None, False, None)


class ResultsMixin:
    """Methods ``GpuProfiler`` gets for its results (see the module docstring)."""

    # Set by GpuProfiler.__init__ (declared here for the type checker).
    session_name: str
    launches: LaunchCapture
    _closed: bool
    _lock: threading.RLock
    _stacks: dict[Any, tuple[Open, ...]]
    _open_ranges: dict[int, Open]
    _track: Callable[[], tuple[Any, int]]
    _events: list[ProfileEvent]
    _launches: list[tuple[LaunchEvent, int, int, int, int | None, int, int | None, int]]
    _copies: list[tuple[str, int, int, int, int, int, int | None, int, int]]
    _times: dict[int, Span]
    _dropped: int
    _t0: int
    _wall0: float
    _tracks: dict[Any, tuple[int, str]]
    _streams: dict[int, tuple[int, str]]
    _kernel_bytes: dict[str, tuple[int | None, int | None]]
    _timer: Timer | None
    _recorder: Any
    _timing_meta: dict[str, Any]
    _simulated: bool | None
    _refuse: Callable[[str], NoReturn]

    def _take_recorded(self) -> None:
        """Move the launches the compiled launch hook kept (``_native.c`` Recorder) to
        ``_launches``, and the CUPTI timer's entries it owes to that timer."""
        rec = self._recorder
        if rec is not None and rec.waiting:
            launches, pending = rec.take()
            self._launches += launches
            if pending and self._timer is not None:
                self._timer._pending += pending  # type: ignore[attr-defined]  # (a CuptiTimer: launched_appends_pending)

    def _resolve(self) -> None:
        self._take_recorded()
        timer = self._timer
        if timer is not None:
            with capture.quiet():  # the timer's own wait for the GPU is not the user's synchronisation
                timer.resolve(block=True)
            self._times.update(timer.times)
            timer.times.clear()
            self._timing_meta = timer.metadata()
            if self.launches is LaunchCapture.CUPTI:
                collector: Any = timer  # a CuptiTimer made by make_cupti_collector
                records, dropped = collector.take_launches()
                self._adopt(records, collector)
                self._dropped += dropped  # (launches past max_events: not kept in memory either)

    def _adopt(self, records: list[Any], timer: Any) -> None:
        """Launches read from CUPTI's records (``LaunchCapture.CUPTI``) made into captured launches."""
        adopt_records(self, records, timer)

    def _kernel_nbytes(self, le: LaunchEvent) -> int | None:
        nb = self._kernel_bytes.get(le.kernel_name)
        if nb is None:
            return None
        per_launch, per_element = nb[1], nb[0]
        if per_launch is None and le.elements < 0:  # captured from CUPTI: elements unknown
            return None
        return per_launch if per_launch is not None else (per_element or 0) * le.elements

    def events(self) -> list[ProfileEvent]:
        """Every recorded event in start order; waits for the GPU to finish captured launches."""
        if self._closed:
            self._refuse("events")
        with self._lock:
            self._resolve()
            # copies first, then the tables (C-level copies: other threads launching meanwhile add
            # to them; a Python loop over them raised 'dictionary changed size during iteration',
            # an adversarial trial), launches before streams: a launch's stream is added before it
            launches, copies = self._launches[:], self._copies[:]
            out = list(self._events)
            names = {tid: name for tid, name in list(self._tracks.values())}
            streams = dict(self._streams)
            times = self._times
            for le, rid, skey, sid, gap, tid, parent, hook_end in launches:
                start, end, estimated, note = times.get(rid, _UNKNOWN)
                args: dict[str, Any] = {"grid": list(le.grid), "block": list(le.block), "elements": le.elements,
                                        "launch": le.kind, "shared_mem": le.shared_mem}  # fmt: skip
                if le.elements < 0:
                    del args["elements"]  # (LaunchCapture.CUPTI: not known)
                if note:
                    args["note"] = note
                out.append(ProfileEvent(
                    EventKind.KERNEL, le.kernel_name, ProfileCategory.KERNEL, le.timestamp_ns, hook_end,
                    names.get(tid, ""), tid, rid, parent, args, stream=streams[skey][1], stream_id=sid,
                    gpu_start_ns=start, gpu_end_ns=end, gpu_start_estimated=estimated, host_ns=gap,
                    nbytes=self._kernel_nbytes(le),
                ))  # fmt: skip
            for direction, nbytes, rid, skey, sid, tid, parent, t0, t1 in copies:
                start, end, estimated, note = times.get(rid, _UNKNOWN)
                cargs: dict[str, Any] = {"direction": direction, "bytes": nbytes}
                if note:
                    cargs["note"] = note
                out.append(ProfileEvent(
                    EventKind.TRANSFER, f"memcpy {direction}", ProfileCategory.MEMORY, t0, t1, names.get(tid, ""),
                    tid, rid, parent, cargs, stream=streams[skey][1], stream_id=sid, gpu_start_ns=start,
                    gpu_end_ns=end, gpu_start_estimated=estimated, nbytes=nbytes,
                ))  # fmt: skip
        out.sort(key=lambda e: (e.start_ns, -e.duration_ns))
        return out

    @property
    def timing_source(self) -> str:
        """How kernel times were obtained (``"host (simulator)"``, ``"cuda events ..."``, ``"cupti ..."``)."""
        return str(self._timing_meta.get("timing_source", "none (no launch captured)"))

    def metadata(self) -> dict[str, Any]:
        """The facts the trace carries: session, device, versions, timing source."""
        if self._closed:
            self._refuse("metadata")
        from .._versions import library_versions

        meta: dict[str, Any] = {"session": self.session_name, "clock": "time.perf_counter_ns, shown relative to the session start",
                                "session_start_unix": self._wall0, "timing_source": self.timing_source}  # fmt: skip
        meta.update({k: v for k, v in self._timing_meta.items() if k != "timing_source"})
        if self._simulated is not None:
            try:
                from ..device import GpuArchitecture

                arch = GpuArchitecture.current()
                meta["device"] = {"index": 0, "name": arch.name, "compute_capability": arch.cc_string,
                                  "sm_count": arch.sm_count, "simulated": arch.simulated}  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - the trace is still worth writing
                meta["device"] = {"index": 0, "name": f"unknown ({exc})"}
        meta["versions"] = library_versions()
        from .ranges import _task

        task = _task()  # (the caller's key, without making it a track: a review)
        here = len(self._stacks.get(threading.get_ident() if task is None else (threading.get_ident(), id(task)), ()))
        # open_ranges: every range begun and not ended, in any thread or task (an adversarial
        # trial: a worker's open range was counted nowhere; the trace has no event for them)
        meta.update(dropped_events=self._dropped, open_ranges_in_this_context=here, open_ranges=len(self._open_ranges))
        return meta

    def summary(self, *, copy_ceiling_gbps: float | None = None) -> ProfilingSummary:
        """Per-kernel statistics, stream idle gaps and range totals (``print(profiler.summary())``).

        ``copy_ceiling_gbps``: the device's copy bandwidth to judge kernels against; default:
        measured once per process on a GPU (a device-to-device copy), none on the simulator.
        """
        if self._closed:
            self._refuse("summary")
        if copy_ceiling_gbps is not None and (isinstance(copy_ceiling_gbps, bool) or not isinstance(copy_ceiling_gbps, (int, float))
                                              or not 0 < copy_ceiling_gbps < float("inf")):  # fmt: skip
            raise ConfigurationError(f"copy_ceiling_gbps must be a positive number of GB/s, got {copy_ceiling_gbps!r}",
                                     hint="e.g. 4000 for an H200's device-to-device copy, or None to measure it")  # fmt: skip
        events = self.events()
        if copy_ceiling_gbps is None and self._simulated is False and any(e.nbytes for e in events if e.kind is EventKind.KERNEL):
            from .summary import measured_copy_ceiling_gbps

            copy_ceiling_gbps = measured_copy_ceiling_gbps()
        return ProfilingSummary.from_events(events, session=self.session_name, timing_source=self.timing_source,
                                            copy_ceiling_gbps=copy_ceiling_gbps, dropped_events=self._dropped)  # fmt: skip

    def chrome_trace(self) -> dict[str, Any]:
        """The session as a Chrome trace-event JSON object (see docs/profiling.md, "Trace layout")."""
        from .tracing import build_trace

        if self._closed:
            self._refuse("chrome_trace")
        events = self.events()
        return build_trace(events, host_tracks={tid: name for tid, name in list(self._tracks.values())},
                           streams={sid: label for sid, label in list(self._streams.values())},
                           metadata=self.metadata(), t0_ns=self._t0)  # fmt: skip

    def export_chrome_tracing(self, path: str | Path | None = None) -> str:
        """The trace as JSON text; written atomically to ``path`` when given, its missing parent
        folders made (open it in https://ui.perfetto.dev or chrome://tracing)."""
        import json

        if self._closed:
            self._refuse("export_chrome_tracing")
        if path is not None and Path(path).is_dir():
            raise ConfigurationError(f"trace path {str(path)!r} is a folder", hint=f"name a file, e.g. {str(Path(path) / 'trace.json')!r}")
        text = json.dumps(self.chrome_trace(), separators=(",", ":"))
        if path is not None:
            from .._fileio import atomic_write_bytes, shared_file_mode

            atomic_write_bytes(Path(path), text.encode(), mode=shared_file_mode())  # a trace is for sharing
        return text
