"""The CUPTI timer's matching of activity records to launches, against a fake ``cupti.cupti``.

NVIDIA's ``cupti-python`` is not installed anywhere this project runs yet (docs/profiling.md),
so ``ringkernel/profiling/_cupti.py`` has never met real records. This checks its own logic with
records shaped as the bindings document them (``kind``, ``start``, ``end``, ``correlation_id``;
a DRIVER record per API call and a CONCURRENT_KERNEL record per kernel, sharing the correlation
id), on a CUPTI clock offset from ``perf_counter_ns``: which launch gets which kernel's times,
with foreign calls and kernels interleaved and records arriving over several flushes.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from typing import Any, Iterator

import pytest

OFFSET = 1_234_567_890  # CUPTI's clock = perf_counter_ns - OFFSET


class _Record:
    def __init__(self, kind: int, start: int, end: int, corr: int) -> None:
        self.kind, self.start, self.end, self.correlation_id = kind, start, end, corr


class _FakeCupti(types.ModuleType):
    class ActivityKind:
        DRIVER = 5
        CONCURRENT_KERNEL = 10

    def __init__(self) -> None:
        super().__init__("cupti.cupti")
        self.enabled: set[int] = set()
        self.pending: list[_Record] = []
        self.completed: Any = None

    def activity_register_callbacks(self, requested: Any, completed: Any) -> None:
        assert requested() == (8 << 20, 0)
        self.completed = completed

    def activity_enable(self, kind: int) -> None:
        self.enabled.add(int(kind))

    def activity_disable(self, kind: int) -> None:
        self.enabled.discard(int(kind))

    def activity_flush_all(self, flag: int) -> None:
        records, self.pending = self.pending, []
        if records:
            self.completed(records)

    def get_timestamp(self) -> int:
        return time.perf_counter_ns() - OFFSET


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FakeCupti]:
    c = _FakeCupti()
    pkg = types.ModuleType("cupti")
    pkg.cupti = c  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupti", pkg)
    monkeypatch.setitem(sys.modules, "cupti.cupti", c)
    yield c


def _launch(c: _FakeCupti, corr: int, kernel_us: int, *, deliver: bool = True) -> tuple[int, tuple[int, int]]:
    """A launch call of ~3 us whose kernel runs kernel_us after it; returns (report host time, kernel span in host ns)."""
    t0 = time.perf_counter_ns()
    time.sleep(0)  # the call
    t1 = t0 + 3_000
    k0, k1 = t1 + 1_000, t1 + 1_000 + kernel_us * 1_000
    rec = [_Record(c.ActivityKind.DRIVER, t0 - OFFSET, t1 - OFFSET, corr),
           _Record(c.ActivityKind.CONCURRENT_KERNEL, k0 - OFFSET, k1 - OFFSET, corr)]  # fmt: skip
    if deliver:
        c.pending += rec
    return t1 + 500, (k0, k1)  # the hook reports right after the call returned


def test_each_launch_gets_its_kernels_times(fake: _FakeCupti) -> None:
    from ringkernel.profiling._cupti import CuptiTimer

    timer = CuptiTimer()
    try:
        assert fake.enabled == {fake.ActivityKind.DRIVER, fake.ActivityKind.CONCURRENT_KERNEL}
        want = {}
        corr = 100
        for rid in range(1, 9):
            corr += 1
            # a foreign driver call (a copy, another library's launch) between ours
            fake.pending.append(_Record(fake.ActivityKind.DRIVER, 0, time.perf_counter_ns() - OFFSET, corr + 1000))
            report, span = _launch(fake, corr, kernel_us=rid * 7)
            timer.launched(rid, report, None, 0)
            want[rid] = span
            time.sleep(0.0002)
        timer.resolve(block=False)
        for rid, (k0, k1) in want.items():
            start, end, estimated, note = timer.times[rid]
            assert note is None and not estimated
            assert abs(start - k0) < 50_000 and abs(end - k1) < 50_000, (rid, start - k0, end - k1)
            assert end - start == k1 - k0  # durations exact: one clock, one offset
    finally:
        timer.close()
    assert fake.enabled == set()


def test_records_arriving_late_and_launches_never_matched(fake: _FakeCupti) -> None:
    from ringkernel.profiling._cupti import CuptiTimer

    timer = CuptiTimer()
    try:
        report1, span1 = _launch(fake, 1, kernel_us=10, deliver=False)  # its records come later
        timer.launched(1, report1, None, 0)
        timer.resolve(block=False)
        assert 1 not in timer.times  # not yet: still pending
        fake.pending += [_Record(fake.ActivityKind.DRIVER, report1 - 3_500 - OFFSET, report1 - 500 - OFFSET, 1),
                         _Record(fake.ActivityKind.CONCURRENT_KERNEL, span1[0] - OFFSET, span1[1] - OFFSET, 1)]  # fmt: skip
        timer.launched(2, time.perf_counter_ns(), None, 0)  # a launch CUPTI never reports
        timer.resolve(block=True)
        assert timer.times[1][:2] is not None and timer.times[1][1] - timer.times[1][0] == span1[1] - span1[0]
        assert timer.times[2][:2] == (None, None) and "no CUPTI kernel record" in str(timer.times[2][3])
        assert timer.metadata()["unmatched_launches"] == 1
    finally:
        timer.close()


def test_one_cupti_user_at_a_time(fake: _FakeCupti) -> None:
    from ringkernel.profiling._cupti import CuptiTimer

    first = CuptiTimer()
    with pytest.raises(RuntimeError, match="another active profiler"):
        CuptiTimer()
    first.close()
    CuptiTimer().close()  # released


def test_a_launch_is_matched_to_its_own_threads_call(fake: _FakeCupti) -> None:
    """Records carrying the calling thread: a launch's own call is the last its thread made
    before the report, so a launch queued during a graph capture (a call, no kernel record) is
    not given another launch's kernel, and another thread's launch in between is not taken."""
    import threading

    from ringkernel.profiling._cupti import CuptiTimer

    me = threading.get_ident() & 0xFFFFFFFF

    def call(corr: int, t0: int, thread: int) -> _Record:
        r = _Record(fake.ActivityKind.DRIVER, t0 - OFFSET, t0 + 2_000 - OFFSET, corr)
        r.thread_id = thread  # type: ignore[attr-defined]
        return r

    timer = CuptiTimer()
    try:
        t = time.perf_counter_ns()
        # launch 1 (ours, timed), another thread's launch 2 right before our launch 3, which
        # was queued during a graph capture: its call has no kernel record
        fake.pending += [call(1, t, me), _Record(fake.ActivityKind.CONCURRENT_KERNEL, t + 3_000 - OFFSET, t + 9_000 - OFFSET, 1),
                         call(2, t + 20_000, me ^ 1), _Record(fake.ActivityKind.CONCURRENT_KERNEL, t + 23_000 - OFFSET,
                                                                 t + 30_000 - OFFSET, 2),
                         call(3, t + 24_000, me)]  # fmt: skip
        timer._pending += [(1, t + 2_500, me), (3, t + 26_500, me)]
        timer.resolve(block=True)
        s1, e1, _, _ = timer.times[1]
        assert abs(s1 - (t + 3_000)) < 1_000 and e1 - s1 == 6_000  # (the clocks' offset is sampled)
        start, end, _, note = timer.times[3]
        assert (start, end) == (None, None) and "graph" in str(note)  # not launch 2's kernel
    finally:
        timer.close()


def test_a_report_right_after_its_call_matches_though_the_clocks_disagree(fake: _FakeCupti) -> None:
    """The compiled launch hook reports ~30 ns after the launch call returns, less than the
    error of aligning CUPTI's clock with perf_counter_ns: a report that appears 300 ns *before*
    its call ended (the alignment off by 330 ns) is still that call's, and the next call (a
    quick non-launching one 400 ns after the report) is not taken for it. (Records with the
    launching thread's id, as CUPTI's DRIVER records carry; without one, calls are matched by
    their ends: another thread's call may overlap the report.)"""
    from ringkernel.profiling._cupti import CuptiTimer

    timer = CuptiTimer()
    try:
        skew = 330  # the timer's offset is off by this much (CUPTI's records look later)
        want = {}
        t = time.perf_counter_ns()
        for rid, corr in enumerate(range(500, 508), start=1):
            c0, c1 = t, t + 2_000  # the launch call
            report = c1 + 30
            k0, k1 = c1 + 800, c1 + 800 + 5_000 * rid
            q0, q1 = report + 400, report + 450  # a quick call right after (cuCtxGetCurrent, say)
            call = _Record(fake.ActivityKind.DRIVER, c0 - OFFSET + skew, c1 - OFFSET + skew, corr)
            quick = _Record(fake.ActivityKind.DRIVER, q0 - OFFSET + skew, q1 - OFFSET + skew, corr + 100)
            call.thread_id = quick.thread_id = threading.get_ident() & 0xFFFFFFFF  # type: ignore[attr-defined]
            fake.pending += [call, _Record(fake.ActivityKind.CONCURRENT_KERNEL, k0 - OFFSET + skew, k1 - OFFSET + skew, corr),
                             quick]  # fmt: skip
            timer.launched(rid, report, None, 0)
            want[rid] = k1 - k0
            t += 4_000
        timer.resolve(block=True)
        for rid, dur in want.items():
            start, end, _, note = timer.times[rid]
            assert note is None and end - start == dur, (rid, timer.times[rid])
    finally:
        timer.close()
