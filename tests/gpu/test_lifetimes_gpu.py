"""On a real GPU: every streams resource used after close() raises ResourceClosedError, never crashes.

``StreamManager.sync_all()`` after ``close()`` ended the process with a segmentation fault on
the H200 (a destroyed stream handle reached the driver). The checks run in a subprocess, so
a crash shows as its exit code instead of taking pytest down; each check prints one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import asyncio
    import gc

    import numpy as np
    from numba import cuda

    from ringkernel import ResourceClosedError
    from ringkernel.kernels import vector_add
    from ringkernel.streams import CapturedGraph, Event, StreamConfig, StreamId, StreamManager, StreamPool, run_pipeline

    SID = StreamId.compute(0)
    GRAPHS = StreamConfig(num_compute_streams=1, enable_graph_capture=True)


    def say(*words):
        print(" ".join(str(w) for w in words).replace(chr(10), " "), flush=True)


    def expect_closed(label, fn, resource):
        try:
            fn()
        except ResourceClosedError as exc:
            say("CLOSED" if exc.resource == resource else "WRONG-RESOURCE", label, exc.resource)
        except BaseException as exc:  # noqa: BLE001 - reported, not raised: the other checks still run
            say("WRONG", label, type(exc).__name__, exc)
        else:
            say("NOT-RAISED", label)


    def check(label, fn):
        try:
            ok = fn()
        except BaseException as exc:  # noqa: BLE001
            say("WRONG", label, type(exc).__name__, exc)
        else:
            say("OK" if ok else "WRONG", label)


    # -- the crash first: sync_all after close ----------------------------------------------------
    m = StreamManager(StreamConfig(num_compute_streams=2))
    m.record_event("a", SID)
    m.sync_all()
    m.close()
    expect_closed("StreamManager.sync_all", m.sync_all, "StreamManager")
    m.close()  # a second close does nothing

    # -- every public method of every resource, closed --------------------------------------------
    n = 4096
    a = cuda.to_device(np.arange(n, dtype=np.float32))
    b = cuda.device_array(n, np.float32)
    pinned = cuda.pinned_array(4, np.float64)


    def closed_event():
        e = Event(simulated=False)
        e.record(0)
        e.close()
        return e


    def closed_pool():
        p = StreamPool(StreamManager(StreamConfig(num_compute_streams=2)))
        p.track(SID)
        p.close()
        return p


    def pool_of_closed_manager():
        mgr = StreamManager(StreamConfig(num_compute_streams=2))
        p = StreamPool(mgr)
        p.track(SID)
        mgr.close()
        return p


    def closed_graph():
        mgr = StreamManager(GRAPHS)
        s = mgr.stream(SID)
        vector_add(a, a, b, stream=s)  # load the kernel outside the capture
        s.synchronize()
        with mgr.capture(SID) as g:
            vector_add(a, a, b, stream=s)
        g.replay()
        mgr.sync_all()
        g.close()
        return g


    CALLS = {
        StreamManager: {
            "priority_range": lambda m: m.priority_range(),
            "stream": lambda m: m.stream(SID),
            "stream_handle": lambda m: m.stream_handle(SID),
            "stream_for_workload": lambda m: m.stream_for_workload(3),
            "stream_ids": lambda m: m.stream_ids,
            "sync_stream": lambda m: m.sync_stream(SID),
            "sync_all": lambda m: m.sync_all(),
            "wait": lambda m: m.wait(SID),
            "capture": lambda m: m.capture(SID),
            "record_event": lambda m: m.record_event("a", SID),
            "event": lambda m: m.event("a"),
            "stream_wait_event": lambda m: m.stream_wait_event(SID, "a"),
            "event_elapsed_ms": lambda m: m.event_elapsed_ms("a", "a"),
            "async_memcpy_htod": lambda m: m.async_memcpy_htod(cuda.device_array(4), pinned),
            "async_memcpy_dtoh": lambda m: m.async_memcpy_dtoh(pinned, cuda.device_array(4)),
            "__enter__": lambda m: m.__enter__(),
        },
        Event: {
            "record": lambda e: e.record(0),
            "query": lambda e: e.query(),
            "synchronize": lambda e: e.synchronize(),
            "wait_on": lambda e: e.wait_on(0),
            "elapsed_ms": lambda e: e.elapsed_ms(e),
            "__await__": lambda e: e.__await__(),
            "__enter__": lambda e: e.__enter__(),
        },
        StreamPool: {
            "assign_workload": lambda p: p.assign_workload(1, SID),
            "stream_for": lambda p: p.stream_for(1),
            "track": lambda p: p.track(SID),
            "least_utilized_stream": lambda p: p.least_utilized_stream(),
            "utilization_stats": lambda p: p.utilization_stats(),
            "__enter__": lambda p: p.__enter__(),
        },
        CapturedGraph: {
            "replay": lambda g: g.replay(),
            "__enter__": lambda g: g.__enter__(),
        },
    }
    CASES = [
        (StreamManager, lambda: m, "StreamManager"),
        (Event, closed_event, "Event"),
        (StreamPool, closed_pool, "StreamPool"),
        (StreamPool, pool_of_closed_manager, "StreamManager"),
        (CapturedGraph, closed_graph, "CapturedGraph"),
    ]
    for cls, make, resource in CASES:
        names = {x for x in dir(cls) if not x.startswith("_")} - {"close", "closed"}
        names |= {x for x in ("__enter__", "__await__") if x in dir(cls)}
        obj = make()
        for name in sorted(names):
            label = f"{make.__name__ if make.__name__ != '<lambda>' else 'closed_manager'}:{cls.__name__}.{name}"
            if name not in CALLS[cls]:
                say("MISSING", label)
                continue
            expect_closed(label, lambda: CALLS[cls][name](obj), resource)

    # -- what outlives a closed manager -------------------------------------------------------------
    m = StreamManager(StreamConfig(num_compute_streams=1))
    start = m.record_event("start", SID)
    vector_add(a, a, b, stream=m.stream(SID))
    end = m.record_event("end", SID)
    m.close()
    check("events-outlive-their-manager", lambda: (end.synchronize(), end.query() and start.elapsed_ms(end) >= 0)[1])

    m, other = StreamManager(GRAPHS), StreamManager(StreamConfig(num_compute_streams=1))
    s = m.stream(SID)
    vector_add(a, a, b, stream=s)
    s.synchronize()
    b.copy_to_device(np.zeros(n, np.float32))
    with m.capture(SID) as g:
        vector_add(a, a, b, stream=s)  # b = 2a
    m.close()
    expect_closed("graph-replay-on-destroyed-stream", g.replay, "StreamManager")


    def replay_elsewhere():
        g.replay(other.stream(SID))
        other.sync_all()
        return np.allclose(b.copy_to_host(), 2 * np.arange(n, dtype=np.float32))


    check("graph-replays-on-another-managers-stream", replay_elsewhere)
    g.close()
    other.close()

    m = StreamManager(GRAPHS)
    s = m.stream(SID)


    def close_inside_capture():
        with m.capture(SID):
            vector_add(a, a, b, stream=s)
            m.close()


    expect_closed("manager-closed-inside-capture", close_inside_capture, "StreamManager")

    # -- async ---------------------------------------------------------------------------------------
    m = StreamManager(StreamConfig(num_compute_streams=1))
    asyncio.run(m.wait(SID))
    m.close()
    expect_closed("await-wait-after-close", lambda: asyncio.run(m.wait(SID)), "StreamManager")
    ev = Event(simulated=False)
    ev.record(0)
    ev.close()


    async def await_closed():
        await ev


    expect_closed("await-closed-event", lambda: asyncio.run(await_closed()), "Event")

    # -- pipeline, garbage collection ------------------------------------------------------------------
    host = cuda.pinned_array(64, np.float32)
    expect_closed("run_pipeline-closed-manager",
                  lambda: run_pipeline(host, host.copy(), lambda *x: None, chunks=2, manager=m), "StreamManager")
    for _ in range(20):  # dropped, not closed: the finalizer destroys the streams
        StreamManager(StreamConfig(num_compute_streams=4))
    gc.collect()
    with StreamManager(StreamConfig(num_compute_streams=2)) as m:
        vector_add(a, a, b, stream=m.stream(SID))
        m.sync_all()
    check("works-after-finalizers", lambda: np.allclose(b.copy_to_host(), 2 * np.arange(n, dtype=np.float32)))
    say("DONE")
    """
)

EXPECTED = [
    "CLOSED StreamManager.sync_all StreamManager",  # the segmentation fault on the H200
    "CLOSED closed_manager:StreamManager.sync_stream StreamManager",
    "CLOSED closed_manager:StreamManager.async_memcpy_htod StreamManager",
    "CLOSED closed_event:Event.synchronize Event",
    "CLOSED closed_pool:StreamPool.track StreamPool",
    "CLOSED pool_of_closed_manager:StreamPool.track StreamManager",
    "CLOSED closed_graph:CapturedGraph.replay CapturedGraph",
    "OK events-outlive-their-manager",
    "CLOSED graph-replay-on-destroyed-stream StreamManager",
    "OK graph-replays-on-another-managers-stream",
    "CLOSED manager-closed-inside-capture StreamManager",
    "CLOSED await-wait-after-close StreamManager",
    "CLOSED await-closed-event Event",
    "CLOSED run_pipeline-closed-manager StreamManager",
    "OK works-after-finalizers",
    "DONE",
]


def test_every_streams_resource_refuses_use_after_close_without_crashing(tmp_path: Path) -> None:
    path = tmp_path / "lifetimes.py"
    path.write_text(SCRIPT)
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env.pop("RINGKERNEL_SIMULATOR", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    report = r.stdout + r.stderr
    assert r.returncode == 0, f"exit code {r.returncode} (-11: a segmentation fault)\n{report}"
    lines = r.stdout.splitlines()
    bad = [line for line in lines if not line.startswith(("CLOSED ", "OK ", "DONE"))]
    assert not bad, "\n".join(bad) + "\n---\n" + report
    for line in EXPECTED:
        assert line in lines, f"missing {line!r}\n{report}"
    assert sum(line.startswith("CLOSED closed_") or line.startswith("CLOSED pool_") for line in lines) >= 30


MEMORY_SCRIPT = textwrap.dedent(
    """
    import gc

    import numpy as np
    from numba import cuda

    import ringkernel
    from ringkernel import GpuContext, GpuMemoryPool, ManagedBuffer, ResourceClosedError

    def expect(name, fn):
        try:
            fn()
        except ResourceClosedError as exc:
            print("OK", name, exc.resource, flush=True)
        except Exception as exc:
            print("WRONG", name, type(exc).__name__, exc, flush=True)
        else:
            print("NOERROR", name, flush=True)

    pool = GpuMemoryPool()
    held = pool.device_array(1000, np.float32)
    buf = pool.allocate(4096)
    view = buf.as_array(16, np.float32)
    pool.close()
    expect("pool.allocate", lambda: pool.allocate(64))
    expect("pool.device_array", lambda: pool.device_array(10))
    expect("pool.compact", lambda: pool.compact())
    expect("buffer.as_array", lambda: buf.as_array(4, np.float32))
    held.copy_to_device(np.arange(1000, dtype=np.float32))  # memory still held stays valid
    assert (held.copy_to_host() == np.arange(1000)).all()
    view.copy_to_device(np.ones(16, np.float32))
    del held, view
    gc.collect()
    buf.free()

    mb = ManagedBuffer(100, np.float32, data=np.ones(100, np.float32))
    mb.close()
    expect("managed.read", lambda: mb.read())
    expect("managed.write", lambda: mb.write(np.zeros(100, np.float32)))
    expect("managed.device_view", lambda: mb.device_view())

    ctx = GpuContext(streams=1)
    a = ctx.allocate(8)
    ctx.close()
    expect("context.allocate", lambda: ctx.allocate(8))
    expect("context.synchronize", lambda: ctx.synchronize())
    expect("context.streams", lambda: ctx.streams)
    print("DONE", flush=True)
    """
)


def test_memory_and_context_after_close_raise_never_crash(tmp_path: Path) -> None:
    script = tmp_path / "memory_after_close.py"
    script.write_text(MEMORY_SCRIPT)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, f"exit code {r.returncode} (-11 is a segfault)\n{r.stdout}\n{r.stderr[-3000:]}"
    lines = r.stdout.splitlines()
    assert "DONE" in lines, r.stdout + r.stderr[-2000:]
    bad = [line for line in lines if line.startswith(("WRONG", "NOERROR"))]
    assert not bad, "\n".join(bad)
    assert sum(line.startswith("OK") for line in lines) == 10, r.stdout


KERNEL_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from numba import cuda
    from numba.core import types

    from ringkernel import ConfigurationError, ResourceClosedError, gpu_kernel
    from ringkernel.compile import CachingCompiler
    from ringkernel.compile.launcher import describe_arg

    @gpu_kernel
    def inc(a):
        i = cuda.grid(1)
        if i < a.size:
            a[i] += 1.0

    a = cuda.to_device(np.zeros(1000))
    for _ in range(3):
        inc(a)  # the third is a memo hit
    ck = inc.compiled(a)
    try:
        ck.close()
        print("WRONG owned close allowed")
    except ConfigurationError:
        print("OK owned")
    inc.close()
    for name, fn in (("call", lambda: inc(a)), ("explicit", lambda: inc[4, 256](a)), ("launcher", lambda: ck.launcher.launch([describe_arg(a)], (4, 1, 1), (256, 1, 1), 0, 0))):
        try:
            fn()
            print("NOERROR", name)
        except ResourceClosedError:
            print("OK", name)
    cuda.synchronize()
    assert (a.copy_to_host() == 3).all()

    comp = CachingCompiler()
    k2 = comp.compile(inc.py_func, (types.float64[::1],))
    b = cuda.to_device(np.zeros(10))
    k2.launcher.launch([describe_arg(b)], (1, 1, 1), (32, 1, 1), 0, 0)
    with k2:
        pass
    try:
        k2.launcher.launch([describe_arg(b)], (1, 1, 1), (32, 1, 1), 0, 0)
        print("NOERROR standalone")
    except ResourceClosedError:
        print("OK standalone")
    cuda.synchronize()
    assert (b.copy_to_host() == 1).all()
    print("DONE")
    """
)


def test_kernels_after_close_raise_never_crash(tmp_path: Path) -> None:
    script = tmp_path / "kernel_after_close.py"
    script.write_text(KERNEL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               RINGKERNEL_CACHE_DIR=str(tmp_path / "kc"))  # fmt: skip
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, f"exit code {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    lines = r.stdout.splitlines()
    assert "DONE" in lines and sum(line.startswith("OK") for line in lines) == 5, r.stdout + r.stderr[-2000:]
