"""Kernel GPU times from CUPTI activity records (optional extra: ``pip install cupti-python``).

Run on the H200 with ``cupti-python`` 13.2 (CUPTI 13.0.85, driver 13.0): every launch matched,
+1.8 us a launch enabled (CUDA events: +7.7 us). The matching logic below is also tested in CI
against a fake ``cupti.cupti`` (tests/test_cupti_matching.py). The API used is the one of
NVIDIA's ``cupti.cupti`` bindings: ``activity_register_callbacks``, ``activity_enable``,
``activity_flush_all``, ``activity_disable``, ``get_timestamp`` and the records' ``kind``,
``start``, ``end``, ``correlation_id``.

Matching a record to a launch: CUPTI's ``DRIVER`` records carry the launching call's host
interval and a correlation id shared with the ``CONCURRENT_KERNEL`` record of the kernel it
queued. The launch seam reports right after the launch call returned, so a launch is the
latest driver call of its thread whose middle came before its report (host clocks aligned by
sampling ``get_timestamp`` against ``perf_counter_ns``). Launches from several threads at
the same microsecond may be swapped.
"""

from __future__ import annotations

import importlib
import threading
import time
from bisect import bisect_right
from collections import OrderedDict
from threading import get_ident as _get_ident
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .timing import Span

__all__ = ["CuptiTimer", "KernelRecord"]


class KernelRecord(NamedTuple):
    """A kernel launch read from CUPTI's records alone (``LaunchCapture.CUPTI``), times on the
    ``perf_counter_ns`` clock: the launching driver call's interval and thread, the kernel's."""

    symbol: str  # the kernel's entry symbol (mangled)
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int  # dynamic + static bytes
    stream_id: int  # CUPTI's stream id
    thread_id: int  # CUPTI's thread id of the launching call (pthread_self, 32 bits, by default)
    call_start_ns: int
    call_end_ns: int
    start_ns: int
    end_ns: int

#: Driver calls held while they wait for a kernel record (collecting): most launch nothing.
_CALLS_HELD = 1 << 20

#: CUPTI delivers activity buffers to one set of callbacks per process.
_in_use = threading.Lock()


class CuptiTimer:
    source = "cupti activity records"
    #: ``launched`` only appends ``(id, host time, thread & 0xFFFFFFFF)`` to ``_pending``: the
    #: profiler's compiled launch hook (``_native.c`` Recorder) appends it itself.
    launched_appends_pending = True
    _events: Any = None  # copies: CUDA events around each (an EventTimer, made at the first copy)

    def __init__(self, copy_timer: Any = None, *, collect: bool = False, limit: int = 1_000_000) -> None:
        #: Makes the timer of copies (timing.EventTimer; passed in: timing imports this module)
        self._make_copy_timer = copy_timer
        #: Keep every kernel with its launching call (:meth:`take_launches`): no launch is reported
        self._collect = collect
        #: Launches kept until taken (collecting); later ones are counted in ``dropped``
        self._limit = limit
        self.dropped = 0
        c = importlib.import_module("cupti.cupti")  # ImportError without the extra
        if not _in_use.acquire(blocking=False):
            raise RuntimeError("another active profiler holds CUPTI")
        try:
            self._c = c
            self._offset = 0  # CUPTI's clock -> perf_counter_ns (measured below, before any record arrives)
            self._offset_error = 0
            self._lock = threading.Lock()
            self._kernels: dict[int, tuple[Any, ...]] = {}  # correlation id -> (start, end, details or None)
            #: (middle, correlation id, thread, end) of driver calls: a launch is matched by its call's
            #: middle (below), so that the clocks' alignment may be off by up to half a call
            self._calls: list[tuple[int, int, int, int]] = []
            # collecting: records paired on arrival by correlation id. A call waits for its kernels
            # and kernels for their call (they come in separate buffers, in either order) until the
            # blocking resolve after next; a call stays after pairing for the other kernels of a
            # graph launch (one id, many kernels); at most _CALLS_HELD calls are held.
            self._call_info: OrderedDict[int, tuple[int, int, int, int]] = OrderedDict()  # corr -> (start, end, thread, gen)
            self._waiting: dict[int, tuple[int, list[tuple[Any, ...]]]] = {}  # corr -> (gen, kernels without their call)
            self._paired: list[KernelRecord] = []
            self._generation = 0  # blocking resolves so far: what waits from an older one will not pair
            #: host time -> True where a launch then is not to be kept (the profiler was disabled)
            self.skip: Any = None
            self.times: dict[int, "Span"] = {}
            self._pending: list[tuple[int, int, int]] = []  # (launch id, its report's host time, its thread)
            self._unmatched = 0
            self._kernel_kind = int(c.ActivityKind.CONCURRENT_KERNEL)
            self._kinds = [c.ActivityKind.CONCURRENT_KERNEL, c.ActivityKind.DRIVER]
            c.activity_register_callbacks(self._requested, self._completed)
            for kind in self._kinds:
                c.activity_enable(kind)
            # the offset from the sample with the shortest round trip (its error at most half of it)
            best = None
            for _ in range(25):
                t0 = time.perf_counter_ns()
                ts = int(c.get_timestamp())
                t1 = time.perf_counter_ns()
                if best is None or t1 - t0 < best[0]:
                    best = (t1 - t0, (t0 + t1) // 2 - ts)
            assert best is not None
            self._offset = best[1]
            #: The offset's error is at most half that round trip: calls matched by their ends
            #: (records without the launching thread) allow for it
            self._offset_error = best[0] // 2 + 1
            self._closed = False
        except BaseException:
            _in_use.release()
            raise

    @staticmethod
    def _requested() -> tuple[int, int]:
        return 8 << 20, 0  # 8 MiB buffers, no record limit

    def _completed(self, activities: list[Any]) -> None:
        if self._collect:
            self._collect_records(activities)
            return
        with self._lock:
            for a in activities:
                if int(a.kind) == self._kernel_kind:
                    self._kernels[int(a.correlation_id)] = (int(a.start), int(a.end), None)
                else:
                    end = int(a.end)
                    mid = (int(getattr(a, "start", end)) + end) // 2
                    self._calls.append((mid, int(a.correlation_id), int(getattr(a, "thread_id", 0)), end))

    def _collect_records(self, activities: list[Any]) -> None:
        with self._lock:
            calls, waiting, gen = self._call_info, self._waiting, self._generation
            for a in activities:
                corr = int(a.correlation_id)
                if int(a.kind) == self._kernel_kind:
                    k = (str(a.name), (int(a.grid_x), int(a.grid_y), int(a.grid_z)),
                         (int(a.block_x), int(a.block_y), int(a.block_z)),
                         int(a.dynamic_shared_memory) + int(a.static_shared_memory), int(a.stream_id), int(a.start),
                         int(a.end))  # fmt: skip
                    call = calls.get(corr)
                    if call is None:
                        w = waiting.get(corr)
                        if w is None:
                            waiting[corr] = (gen, [k])
                        else:
                            w[1].append(k)
                    else:
                        self._pair(call, k)
                else:
                    call = calls[corr] = (int(a.start), int(a.end), int(a.thread_id), gen)
                    w = waiting.pop(corr, None)
                    if w is not None:
                        for k in w[1]:
                            self._pair(call, k)
                    if len(calls) > _CALLS_HELD:  # most driver calls launch nothing: the oldest go first
                        calls.popitem(last=False)

    def _pair(self, call: tuple[int, ...], k: tuple[Any, ...]) -> None:
        off = self._offset
        if self.skip is not None and self.skip(call[0] + off):
            return  # launched while the profiler was disabled: neither kept nor counted
        if len(self._paired) >= self._limit:
            self.dropped += 1
            return
        symbol, grid, block, shared, stream_id, start, end = k
        self._paired.append(KernelRecord(symbol, grid, block, shared, stream_id, call[2], call[0] + off, call[1] + off,
                                         start + off, end + off))  # fmt: skip

    def _age(self) -> None:
        """After a blocking resolve (the GPU idle, every buffer flushed): what waited since the
        resolve before cannot pair any more. Kernels left without their call are counted as
        unmatched; calls that launched nothing are let go."""
        with self._lock:
            gen = self._generation
            old = [c for c, (g, _) in self._waiting.items() if g < gen]
            for c in old:
                self._unmatched += len(self._waiting.pop(c)[1])
            calls = self._call_info
            while calls and next(iter(calls.values()))[3] < gen:
                calls.popitem(last=False)
            self._generation = gen + 1

    def launched(self, launch_id: int, host_ns: int, host_gap_ns: int | None, stream_key: int) -> None:
        self._pending.append((launch_id, host_ns, _get_ident() & 0xFFFFFFFF))  # (CUPTI's thread id: 32 bits)

    # Copies are timed by CUDA events around each (timing.EventTimer): kernels are the many
    # calls whose host cost matters; a copy's two events cost little beside the copy.
    def _copy_timer(self) -> Any:
        if self._events is None:
            if self._make_copy_timer is None:
                return None
            self._events = self._make_copy_timer()
        return self._events

    def before_copy(self, stream_key: int, host_ns: int) -> None:
        t = self._copy_timer()
        if t is not None:
            t.before_copy(stream_key, host_ns)

    def copied(self, launch_id: int, start_ns: int, end_ns: int, stream_key: int) -> None:
        t = self._copy_timer()
        if t is None:
            self.times[launch_id] = (None, None, False, "copies are not timed (no copy timer given)")
        else:
            t.copied(launch_id, start_ns, end_ns, stream_key)

    def resolve(self, block: bool) -> None:
        ev = self._events
        if ev is not None:
            ev.resolve(block)
            self.times.update(ev.times)
            ev.times.clear()
        if block:
            from numba import cuda

            cuda.synchronize()
        self._c.activity_flush_all(1)
        if self._collect:
            if block:
                self._age()
            return
        with self._lock:
            off = self._offset
            # A launch's own driver call is the last one of its thread before the launch was
            # reported (the seam reports right after the call; nothing calls the driver between):
            # exact, also where that call has no kernel record (queued while its stream captured
            # a CUDA graph). "Before" by the call's middle: the report falls between the call's
            # end and the thread's next call's start, and the compiled launch hook reports ~30 ns
            # after the call, less than the clocks' alignment error (the first matching by ends
            # missed launches there). Where the records carry no thread (or not this one), the
            # latest kernel-launching call of any thread that ended before the report.
            per_thread: dict[int, list[tuple[int, int]]] = {}
            for mid, corr, thread, _ in self._calls:
                per_thread.setdefault(thread, []).append((mid + off, corr))
            for lst in per_thread.values():
                lst.sort()
            thread_ends = {t: [e for e, _ in lst] for t, lst in per_thread.items()}
            # (no thread to tell calls apart: by ends, as a call of another thread still running at
            # the report may have the later middle; ends up to the clocks' alignment error after
            # the report count as before it: the compiled hook reports ~30 ns after its call)
            launches = sorted((end + off, corr) for _, corr, _, end in self._calls if corr in self._kernels)
            slack = self._offset_error
            ends = [e for e, _ in launches]
            used: set[int] = set()
            left: list[tuple[int, int, int]] = []
            no_kernel: list[tuple[int, int, int]] = []
            for launch_id, host_ns, thread in sorted(self._pending, key=lambda p: p[1]):
                own = per_thread.get(thread)
                if own:
                    i = bisect_right(thread_ends[thread], host_ns) - 1
                    while i >= 0 and own[i][1] in used:
                        i -= 1
                    if i < 0 or own[i][1] not in self._kernels:
                        # its call not seen yet, or no kernel record (yet): wait, then say so
                        (left if i < 0 else no_kernel).append((launch_id, host_ns, thread))
                        continue
                    corr = own[i][1]
                else:
                    i = bisect_right(ends, host_ns + slack) - 1
                    while i >= 0 and launches[i][1] in used:
                        i -= 1
                    if i < 0:
                        left.append((launch_id, host_ns, thread))
                        continue
                    corr = launches[i][1]
                used.add(corr)
                start, end, _ = self._kernels.pop(corr)
                self.times[launch_id] = (start + off, end + off, False, None)
            # Calls and kernels nobody claimed (other driver calls, launches outside ringkernel)
            # are kept for 10 s: a launch's records may arrive in different buffers.
            horizon = time.perf_counter_ns() - off - 10**10
            self._calls = [(m, c, t, e) for m, c, t, e in self._calls if c not in used and e > horizon]
            self._kernels = {c: se for c, se in self._kernels.items() if se[1] > horizon}
            if block:
                for launch_id, _, _ in left:
                    self.times[launch_id] = (None, None, False, "no CUPTI kernel record matched this launch")
                for launch_id, _, _ in no_kernel:
                    self.times[launch_id] = (None, None, False, "its launch call has no CUPTI kernel record (queued "
                                             "while its stream captured a CUDA graph?): not timed")  # fmt: skip
                self._unmatched += len(left) + len(no_kernel)
                left, no_kernel = [], []
            self._pending = left + no_kernel

    def take_launches(self) -> tuple[list[KernelRecord], int]:
        """The kernels whose launching call's record has arrived (collecting timers; call after
        :meth:`resolve`), in launch order, each returned once. A kernel launched by another
        library (CuPy, numba's own launches) is there too: CUPTI sees the whole process. With
        them, how many were dropped past ``limit`` since the last call."""
        with self._lock:
            out, self._paired = self._paired, []
            dropped, self.dropped = self.dropped, 0
        out.sort(key=lambda r: (r.call_start_ns, r.start_ns))
        return out, dropped

    def stream_ids(self, handles: list[int]) -> dict[int, int]:
        """CUPTI's stream id -> the stream handle, for the given handles of the current context
        (0: the legacy default stream); handles CUPTI cannot map are left out."""
        from .. import driver

        try:
            ctx = driver.ctx_current()
            if not ctx:  # none current on this thread: numba's, where the launches were made
                from numba import cuda

                cuda.current_context()
                ctx = driver.ctx_current()
        except Exception:  # noqa: BLE001 - no context here: every stream keeps CUPTI's number
            return {}
        out = {}
        for h in handles:
            try:  # (handle 2 is CU_STREAM_PER_THREAD: CUPTI asks for 0 and the per-thread flag)
                sid = self._c.get_stream_id_ex(ctx, 0, 1) if h == 2 else self._c.get_stream_id_ex(ctx, h, 0)
                out[int(sid)] = h
            except Exception:  # noqa: BLE001 - a destroyed or foreign stream: left unnamed
                continue
        return out

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"timing_source": self.source, "unmatched_launches": self._unmatched}
        if self._collect:
            meta["launch_capture"] = "cupti records"
        if self._events is not None:
            meta["copy_timing"] = self._events.source
            meta["copy_clock_sync_uncertainty_us"] = self._events.metadata().get("clock_sync_uncertainty_us")
        return meta

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._events is not None:
            self._events.close()
        try:
            self._c.activity_flush_all(1)
            for kind in self._kinds:
                self._c.activity_disable(kind)
            # Detach CUPTI (cuptiFinalize; it attaches again lazily on the next profiler's first
            # call): with its driver hooks left in, every later launch would still pay for them,
            # and a closed profiler must cost nothing.
            finalize = getattr(self._c, "finalize", None)
            if finalize is not None:
                try:
                    finalize()
                except Exception:  # noqa: BLE001 - an older CUPTI that cannot detach: launches keep its hooks
                    pass
        finally:
            _in_use.release()
