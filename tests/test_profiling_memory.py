"""GpuProfiler.track_pool: each allocation and free of a tracked pool recorded while the
profiler is active, through wrappers on the pool instance that leaving removes."""

from __future__ import annotations

import gc
import logging
from typing import Iterator

import numpy as np
import pytest

from ringkernel import GpuMemoryPool, GpuProfiler, ResourceClosedError
from ringkernel.errors import ConfigurationError
from ringkernel.profiling import EventKind, reset
from tests.test_profiling import validate_trace

pytestmark = pytest.mark.usefixtures("launch_reports")

WRAPPED = ("allocate", "deallocate", "_close_buffer", "_release")


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    reset()
    yield
    reset()


def _memory(p: GpuProfiler) -> list[tuple[str, int | None]]:
    return [(e.name, e.nbytes) for e in p.events() if e.kind is EventKind.MEMORY]


def test_allocations_and_frees_are_recorded_with_sizes_and_counters() -> None:
    pool = GpuMemoryPool()
    p = GpuProfiler("memory")
    p.track_pool(pool, "scratch")
    assert not any(m in vars(pool) for m in WRAPPED), "nothing is installed before the profiler is active"
    with p:
        assert all(m in vars(pool) for m in WRAPPED)
        with p.range("step") as step:
            buf = pool.allocate(1000)
            arr = pool.device_array((10, 20), np.float64)  # allocates through pool.allocate
            buf.free()
            with pool.allocate(64) as b2:  # PooledBuffer.close
                pass
            b2.close()  # closed already: not a second free
            raw = pool.allocate(300)
            pool.deallocate(raw.ptr)  # a raw pointer: no size
            del arr  # collected: freed through the pool's finalizer path
            gc.collect()
    assert not any(m in vars(pool) for m in WRAPPED), "leaving removes the wrappers"
    assert _memory(p) == [("allocate", 1000), ("allocate", 1600), ("free", 1000), ("allocate", 64), ("free", 64),
                          ("allocate", 300), ("free", None), ("free", 1600)]  # fmt: skip
    mem = [e for e in p.events() if e.kind is EventKind.MEMORY]
    assert all(e.parent_id == step.id and e.args["pool"] == "scratch" and e.args["ptr"] > 0 for e in mem)
    assert mem[0].args["op"] == "allocate" and mem[0].track == "MainThread"
    counters = [e for e in p.events() if e.kind is EventKind.COUNTER and e.name == "scratch bytes"]
    # entry, each op but the finalizer's free, the range end, exit
    assert len(counters) == 1 + 7 + 1 + 1
    in_use = [c.args["in use"] for c in counters]
    assert in_use[0] == 0 and in_use[1] >= 1000 and in_use[2] >= in_use[1] + 1600 and in_use[-1] == 0
    trace = validate_trace(p.export_chrome_tracing())
    instants = [e for e in trace["traceEvents"] if e["ph"] == "i" and e["cat"] == "memory"]
    assert [(e["name"], e["args"]["bytes"]) for e in instants] == _memory(p)
    p.close()


def test_without_an_active_profiler_the_pool_is_untouched() -> None:
    pool = GpuMemoryPool()
    p = GpuProfiler("idle")
    p.track_pool(pool)
    pool.allocate(128).free()  # tracked, but not active: nothing recorded, nothing installed
    assert "allocate" not in vars(pool) and _memory(p) == []
    assert type(pool).allocate is GpuMemoryPool.allocate
    with p:
        with p:  # re-entered: installed once, removed at the outer exit
            pool.allocate(8).free()
        assert "allocate" in vars(pool)
    assert not any(m in vars(pool) for m in WRAPPED)
    pool.allocate(8).free()
    assert _memory(p) == [("allocate", 8), ("free", 8)]
    untracked = GpuMemoryPool()
    with p:
        untracked.allocate(8).free()
        assert vars(untracked).keys().isdisjoint(WRAPPED)
    assert len(_memory(p)) == 2
    p.close()
    assert not any(m in vars(pool) for m in WRAPPED)


def test_tracked_while_active_closed_pool_and_two_profilers(caplog: pytest.LogCaptureFixture) -> None:
    pool = GpuMemoryPool()
    p, q = GpuProfiler("p"), GpuProfiler("q")
    with p:
        p.track_pool(pool, "late")  # tracked while active: recorded from now on
        keep = pool.allocate(256)
        with pytest.raises(ConfigurationError, match="tracked by this profiler already"):
            p.track_pool(pool)
        q.track_pool(pool, "also")
        with caplog.at_level(logging.WARNING), q:  # another profiler records it already: q only samples
            pool.allocate(16).free()
        assert "recorded by another active profiler" in caplog.text
        assert "allocate" in vars(pool), "q's exit leaves p's wrappers"
        pool.close()  # closed while tracked
        with pytest.raises(ResourceClosedError):
            pool.allocate(8)
        keep.free()  # a block still in use goes back after close
    assert not any(m in vars(pool) for m in WRAPPED)
    assert _memory(p) == [("allocate", 256), ("allocate", 16), ("free", 16), ("free", 256)]
    assert _memory(q) == []
    validate_trace(p.export_chrome_tracing())
    p.close()
    q.close()
