"""GpuContext(profiling=True): its GpuProfiler (ctx.profiler) captures the launches made while
the context is current and its pool's allocations; closing the context closes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from numba import cuda

from ringkernel import ConfigurationError, GpuContext, GpuContextBuilder, ResourceClosedError, gpu_kernel, launch_hooks
from ringkernel.profiling import EventKind, reset
from tests.test_profiling import validate_trace

pytestmark = pytest.mark.usefixtures("launch_reports")


@gpu_kernel
def twice(a, out):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < out.size:
        out[i] = 2 * a[i]


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    reset()
    yield
    reset()


def test_profiling_context_records_its_launches_and_pool(tmp_path: Path) -> None:
    ctx = GpuContextBuilder().with_profiling(True).with_streams(2).build()
    assert not ctx.profiler.active, "active from the first time the context is current"
    a, out = cuda.to_device(np.ones(64, np.float32)), cuda.device_array(64, np.float32)
    with ctx:
        p = ctx.profiler
        assert p.active
        x = ctx.allocate(64, np.float32)
        twice(a, out)
        ctx.launch(twice, x, out)
        with ctx.use():  # nested: still the same, active profiler
            twice(a, out)
        del x
        with GpuContext() as other:  # launches while another context is current are not this one's
            twice(a, out)
        assert other.closed
        kernels = [e for e in p.events() if e.kind is EventKind.KERNEL]
        assert [e.name for e in kernels] == ["twice"] * 3 == [e.kernel_name for e in ctx.launches()]
        memory = [(e.name, e.nbytes) for e in p.events() if e.kind is EventKind.MEMORY]
        assert memory == [("allocate", 256), ("free", 256)]
        assert any(e.kind is EventKind.COUNTER and e.name == "context pool bytes" for e in p.events())
        text = ctx.export_chrome_tracing(tmp_path / "ctx.json")
        validate_trace(text)
        assert json.loads((tmp_path / "ctx.json").read_text()) == json.loads(text)
        assert ctx.profiling_summary().kernels[0].launches == 3
        pool = ctx.pool
        assert "allocate" in vars(pool)
    twice(a, out)  # outside: not recorded
    assert ctx.closed and p.closed and not p.active and launch_hooks() == []
    assert "allocate" not in vars(pool), "closing the context unwraps its pool"
    assert len(ctx.launches()) == 3
    for call in (lambda: ctx.profiler, ctx.profiling_summary, lambda: ctx.export_chrome_tracing()):
        with pytest.raises(ResourceClosedError):
            call()


def test_profiler_of_a_context_used_without_with() -> None:
    ctx = GpuContext(profiling=True)
    a, out = cuda.to_device(np.ones(8, np.float32)), cuda.device_array(8, np.float32)
    ctx.launch(twice, a, out)  # current for the launch: starts the profiler
    twice(a, out)  # not current: not captured
    assert ctx.profiler.active
    assert [e.name for e in ctx.profiler.events() if e.kind is EventKind.KERNEL] == ["twice"]
    p = ctx.profiler
    ctx.close()
    assert p.closed and launch_hooks() == []


def test_no_profiler_without_profiling() -> None:
    with GpuContext() as ctx:
        for call in (lambda: ctx.profiler, ctx.profiling_summary, lambda: ctx.export_chrome_tracing()):
            with pytest.raises(ConfigurationError, match="with_profiling"):
                call()
        assert "allocate" not in vars(ctx.pool) and launch_hooks() == []


def test_a_collected_context_closes_its_profiler() -> None:
    import gc

    ctx = GpuContext(profiling=True)
    ctx.launch(twice, cuda.to_device(np.ones(8, np.float32)), cuda.device_array(8, np.float32))
    p = ctx.profiler
    assert p.active and launch_hooks()
    del ctx
    gc.collect()
    assert p.closed and launch_hooks() == []
