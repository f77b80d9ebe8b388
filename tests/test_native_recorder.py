"""The compiled launch reports (ringkernel/_native.c ``Notifier`` and ``Recorder``, issue 13)
against the Python ``notify`` and ``GpuProfiler._on_launch`` they stand for.

Every profiling test runs with both (the ``launch_reports`` fixture); these tests check that
the compiled recorder takes the usual case itself and hands every other case to the Python
hook, with the same result: the same events, ids, parents, tracks, streams and counts for
one scripted session with threads, asyncio tasks, a child task that inherits its creator's
range, named streams, a disabled stretch and the event limit."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from typing import Any, Iterator

import numpy as np
import pytest
from numba import cuda

from ringkernel import GpuProfiler, ProfileCategory, add_launch_hook, gpu_kernel, native, remove_launch_hook
from ringkernel.kernel import hooks

ALG = ProfileCategory.ALGORITHM


@pytest.fixture
def reports(mod: Any) -> Iterator[None]:
    native.HOOKS = True
    hooks.use_native(mod)
    try:
        yield
    finally:
        hooks.use_python()


@gpu_kernel
def bump(x, out, s):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < x.size:
        out[i] = x[i] + s


def test_the_clock_is_perf_counter_ns(mod: Any) -> None:
    for _ in range(100):
        a = time.perf_counter_ns()
        b = mod.now_ns()
        c = time.perf_counter_ns()
        assert a <= b <= c


def _session(use_native: bool, mod: Any) -> tuple[list[Any], list[Any], int, Any]:
    """One scripted session; its launches (without times), events, dropped count and the recorder's counts."""
    native.HOOKS = use_native
    if use_native:
        hooks.use_native(mod)
    else:
        hooks.use_python()
    x = cuda.to_device(np.arange(37, dtype=np.float32))
    out = cuda.device_array_like(x)
    s1, s2 = cuda.stream(), cuda.stream()
    p = GpuProfiler("script", max_events=60)
    counts: list[int] = []
    with p:
        recorder = p._recorder
        assert (recorder is not None) == use_native
        p.name_stream(s1, "first")
        bump(x, out, 1.0)  # a new stream (the default): the Python hook's case
        for k in range(4):
            bump(x, out, float(k))  # the usual case
        with p.range("outer", ALG):
            bump[1, 64](x, out, 2.0)  # explicit configuration
            with p.range("inner", ALG):
                bump(x, out, 3.0, stream=s1)
                bump(x, out, 4.0, stream=s1)
            bump(x, out, 5.0, stream=s2)
            bump(x, out, 6.0, stream=s2)

            def worker() -> None:
                bump(x, out, 7.0)  # a new thread: its track is made by the Python hook
                with p.range("in thread", ALG):
                    bump(x, out, 8.0)
                    bump(x, out, 9.0)

            t = threading.Thread(target=worker, name="worker")
            t.start()
            t.join()

            async def main() -> None:
                async def child(n: int) -> None:
                    bump(x, out, 10.0 + n)  # a task with no range of its own: its creator's
                    bump(x, out, 10.0 + n)
                    with p.range(f"task {n}", ALG):
                        bump(x, out, 20.0 + n)
                        await asyncio.sleep(0)
                        bump(x, out, 20.0 + n)

                with p.range("loop", ALG):
                    await asyncio.gather(child(1), child(2))

            asyncio.run(main())
        p.enabled = False
        bump(x, out, 30.0)  # not recorded
        p.enabled = True
        for k in range(40):
            bump(x, out, float(k))  # beyond max_events: dropped (counted)
        counts = [recorder.fast, recorder.slow] if recorder is not None else []
    launches = [(ev._replace(timestamp_ns=0, stream=str(ev.stream)[:8]), rid, sid, gap is None, tid, parent)
                for ev, rid, _skey, sid, gap, tid, parent, _end in sorted(p._launches, key=lambda r: r[1])]  # fmt: skip
    events = [(e.kind, e.name, e.id, e.parent_id, e.track_id, re.sub(r"Task-\d+", "Task", e.track), e.stream, e.stream_id)
              for e in p.events()]  # (asyncio numbers tasks per process)
    dropped = p.summary().dropped_events if hasattr(p.summary(), "dropped_events") else p._dropped
    return launches, events, dropped, counts


def test_the_compiled_recorder_records_what_the_python_hook_does(mod: Any) -> None:
    try:
        py = _session(False, mod)
        nat = _session(True, mod)
    finally:
        native.HOOKS = True
        hooks.use_python()
    assert nat[0] == py[0]
    assert nat[1] == py[1]
    assert nat[2] == py[2] > 0
    fast, slow = nat[3]
    # the usual case is taken in C; the new stream, thread and tasks, the events past the limit go to Python
    assert fast >= 15 and slow >= 4, nat[3]


def test_a_fast_timer_gets_what_its_launched_would_append(mod: Any, reports: None) -> None:
    class Appending:
        launched_appends_pending = True
        source = "test"

        def __init__(self) -> None:
            self.times: dict[int, Any] = {}
            self._pending: list[tuple[int, int, int]] = []

        def launched(self, launch_id: int, host_ns: int, gap: Any, stream_key: int) -> None:
            self._pending.append((launch_id, host_ns, threading.get_ident() & 0xFFFFFFFF))

        def before_copy(self, *a: Any) -> None: ...
        def copied(self, *a: Any) -> None: ...
        def resolve(self, block: bool) -> None: ...
        def metadata(self) -> dict[str, Any]:
            return {"timing_source": self.source}
        def close(self) -> None: ...

    x = cuda.to_device(np.arange(5, dtype=np.float32))
    out = cuda.device_array_like(x)
    p = GpuProfiler("fast timer")
    with p:
        timer = Appending()
        p._timer = timer
        p._hook and remove_launch_hook(p._hook)
        rec = mod.Recorder(p.__dict__, p._on_launch, timer, p._ctx, p._ids, hooks.LaunchEvent)
        p._recorder = rec
        handle = add_launch_hook(rec)
        for k in range(6):
            bump(x, out, float(k))
        assert rec.fast >= 4 and rec.waiting == rec.fast
        assert len(timer._pending) == rec.slow  # the records' entries wait in the Recorder
        p._take_recorded()
        assert rec.waiting == 0
        ids = [r[1] for r in p._launches[-6:]]
        assert [q[0] for q in timer._pending] == ids
        assert {q[2] for q in timer._pending} == {threading.get_ident() & 0xFFFFFFFF}
        assert [q[1] for q in timer._pending] == [r[0].timestamp_ns for r in p._launches[-6:]]
        # a launched() replaced on the instance is called, not bypassed
        seen: list[int] = []
        timer.launched = lambda rid, *a: seen.append(rid)  # type: ignore[method-assign]
        bump(x, out, 9.0)
        p._take_recorded()
        assert seen == [p._launches[-1][1]] and len(timer._pending) == 6
        remove_launch_hook(handle)
        p._hook = None


def test_a_failing_hook_is_logged_once_and_the_launch_goes_on(reports: None, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def bad(ev: Any) -> None:
        calls.append(ev.kernel_name)
        raise RuntimeError("hook bug")

    x = cuda.to_device(np.arange(9, dtype=np.float32))
    out = cuda.device_array_like(x)
    p = GpuProfiler("with a bad neighbour")
    handle = add_launch_hook(bad)
    try:
        with p, caplog.at_level(logging.ERROR, logger="ringkernel.kernel.hooks"):
            for k in range(5):
                bump(x, out, float(k))
            assert p._recorder is not None and p._recorder.fast >= 3
    finally:
        remove_launch_hook(handle)
    np.testing.assert_array_equal(out.copy_to_host(), np.arange(9, dtype=np.float32) + 4)
    assert calls == ["bump"] * 5
    assert sum("hook bug" in (r.exc_text or "") or "raised" in r.getMessage() for r in caplog.records) == 1
    assert len(p._launches) == 5


def test_a_keyboard_interrupt_in_a_hook_is_not_swallowed(reports: None) -> None:
    def stop(ev: Any) -> None:
        raise KeyboardInterrupt

    x = cuda.to_device(np.arange(3, dtype=np.float32))
    out = cuda.device_array_like(x)
    bump(x, out, 1.0)
    handle = add_launch_hook(stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            bump(x, out, 2.0)
    finally:
        remove_launch_hook(handle)


def test_a_timer_that_raises_is_a_hook_failure_not_a_crash(reports: None, caplog: pytest.LogCaptureFixture) -> None:
    x = cuda.to_device(np.arange(3, dtype=np.float32))
    out = cuda.device_array_like(x)
    p = GpuProfiler("broken timer")
    with p, caplog.at_level(logging.ERROR, logger="ringkernel.kernel.hooks"):
        bump(x, out, 1.0)
        bump(x, out, 1.0)

        def boom(*a: Any) -> None:
            raise ValueError("timer bug")

        p._timer.launched = boom  # type: ignore[union-attr]
        bump(x, out, 3.0)
        bump(x, out, 4.0)
    np.testing.assert_array_equal(out.copy_to_host(), np.arange(3, dtype=np.float32) + 4)
    assert len(p._launches) == 2 and any("raised" in r.getMessage() for r in caplog.records)


def test_hooks_added_and_removed_by_a_hook_take_effect_at_the_next_launch(reports: None) -> None:
    seen: list[str] = []
    handles: list[int] = []

    def second(ev: Any) -> None:
        seen.append("second")

    def first(ev: Any) -> None:
        seen.append("first")
        if not handles:
            handles.append(add_launch_hook(second))

    x = cuda.to_device(np.arange(3, dtype=np.float32))
    out = cuda.device_array_like(x)
    h = add_launch_hook(first)
    try:
        bump(x, out, 1.0)
        assert seen == ["first"]  # the list was read before the launch's hooks ran
        bump(x, out, 1.0)
        assert seen == ["first", "first", "second"]
    finally:
        remove_launch_hook(h)
        for k in handles:
            remove_launch_hook(k)


def test_bad_arguments_are_refused(mod: Any) -> None:
    from contextvars import ContextVar

    with pytest.raises(TypeError):
        mod.Recorder([], print, None, ContextVar("v"), iter(()), hooks.LaunchEvent)
    with pytest.raises(TypeError):
        mod.Recorder({}, print, None, "not a ContextVar", iter(()), hooks.LaunchEvent)
    with pytest.raises(TypeError):
        mod.Recorder({}, print, None, ContextVar("v"), iter(()), dict)
    with pytest.raises(TypeError):
        mod.Notifier((), hooks.LaunchEvent, print)
    with pytest.raises(TypeError):
        mod.Notifier([], dict, print)
    n = mod.Notifier([], hooks.LaunchEvent, print)
    with pytest.raises(TypeError, match="4 positional"):
        n("k", None)
    assert n("k", None, None, "auto") is None  # no hooks: nothing is read


def test_the_python_hook_is_used_when_the_compiled_module_is_off(mod: Any) -> None:
    native.HOOKS = False
    try:
        hooks.use_native(mod)
        assert hooks.notify is hooks._py_notify
        x = cuda.to_device(np.arange(3, dtype=np.float32))
        with GpuProfiler("off") as p:
            assert p._recorder is None
            bump(x, x, 1.0)
        assert len(p._launches) == 1
    finally:
        native.HOOKS = True
        hooks.use_python()
