"""GpuContext and its builder on the simulator (the per-context kernel cache is a GPU test)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from numba import cuda

from ringkernel import (
    ConfigurationError,
    GpuContext,
    GpuContextBuilder,
    PoolConfig,
    ResourceClosedError,
    StreamId,
    current_context,
    gpu_kernel,
)


@gpu_kernel
def scale(a, out, s):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < out.size:
        out[i] = s * a[i]


def test_builder_and_current_context(tmp_path: Path, rng: np.random.Generator) -> None:
    ctx = (
        GpuContextBuilder()
        .with_memory_pool(PoolConfig.for_compute())
        .with_streams(2)
        .with_profiling(True)
        .with_ptx_cache_dir(tmp_path / "k")
        .build()
    )
    assert current_context() is None
    with ctx:
        assert current_context() is ctx
        a = ctx.allocate(37, np.float64)
        a.copy_to_device(rng.random(37))
        out = ctx.allocate(37, np.float64)
        scale(a, out, 3.0)  # inside `with ctx:`: the context's kernel state
        d = ctx.launch(scale, a, out, 2.0, stream=StreamId.compute(1))
        ctx.synchronize()
        np.testing.assert_allclose(out.copy_to_host(), 2.0 * a.copy_to_host())
        assert d.elements == 37
        assert [e.kernel_name for e in ctx.launches()] == ["scale", "scale"]
        assert ctx.compiler.cache.cache_dir == tmp_path / "k"
    assert current_context() is None and ctx.closed
    scale(cuda.to_device(np.ones(4)), cuda.device_array(4), 1.0)  # outside: not recorded
    assert len(ctx.launches()) == 2


def test_use_keeps_the_context_open() -> None:
    ctx = GpuContext(streams=1)
    for _ in range(2):
        with ctx.use():
            assert current_context() is ctx
    assert not ctx.closed
    ctx.close()
    ctx.close()  # idempotent


def test_launch_async_gathers(rng: np.random.Generator) -> None:
    x = rng.random(50)

    async def main(ctx: GpuContext) -> None:
        a = cuda.to_device(x)
        o1, o2 = cuda.device_array(50), cuda.device_array(50)
        await asyncio.gather(ctx.launch_async(scale, a, o1, 2.0), ctx.launch_async(scale, a, o2, 5.0))
        np.testing.assert_allclose(o1.copy_to_host(), 2 * x)
        np.testing.assert_allclose(o2.copy_to_host(), 5 * x)

    with GpuContext(streams=2) as ctx:
        asyncio.run(main(ctx))
        with pytest.raises(ConfigurationError, match="StreamId"):
            asyncio.run(ctx.launch_async(scale, cuda.to_device(x), cuda.device_array(50), 1.0, stream=0))


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.allocate(4),
        lambda c: c.pool,
        lambda c: c.streams,
        lambda c: c.arch,
        lambda c: c.synchronize(),
        lambda c: c.launch(scale, cuda.to_device(np.ones(2)), cuda.device_array(2), 1.0),
        lambda c: c.compile_kernel(lambda a: None),
        lambda c: c.use().__enter__(),
        lambda c: c.__enter__(),
    ],
)
def test_closed_context_refuses(call) -> None:  # type: ignore[no-untyped-def]
    ctx = GpuContext()
    ctx.close()
    with pytest.raises(ResourceClosedError, match="GpuContext"):
        call(ctx)


def test_bad_options() -> None:
    with pytest.raises(ConfigurationError, match="only device 0"):
        GpuContext(device=1)
    with pytest.raises(ConfigurationError, match="streams"):
        GpuContextBuilder().with_streams(0).build()
    with pytest.raises(ConfigurationError, match="PoolConfig"):
        GpuContextBuilder().with_memory_pool("big").build()
    with pytest.raises(ConfigurationError, match="profiling"):
        GpuContext(profiling="yes")
    with pytest.raises(ConfigurationError, match="with_profiling"):
        GpuContext().launches()


def test_compile_kernel_from_source(rng: np.random.Generator) -> None:
    src = """
def triple(a, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = 3 * a[i]
"""
    with GpuContext() as ctx:
        k = ctx.compile_kernel(src)
        x = rng.random(11)
        out = cuda.device_array(11)
        ctx.launch(k, cuda.to_device(x), out)
        np.testing.assert_allclose(out.copy_to_host(), 3 * x)


def test_errors_carry_their_context() -> None:
    from ringkernel import ErrorContext, LaunchConfigError, MemorySnapshot

    with pytest.raises(LaunchConfigError) as err:
        scale[(1, 1, 1), (2048, 1, 1)](cuda.to_device(np.ones(4)), cuda.device_array(4), 1.0)
    e = err.value
    assert e.operation == 'launch("scale")' and e.stream_id == "default" and e.suggestion == e.hint
    text = str(e)
    for label in ("Operation: launch(\"scale\")", "Stream: default", "Suggestion: the device allows blocks"):
        assert label in text, text
    snap = MemorySnapshot(used=3 * 2**30, total=4 * 2**30, pool_in_use=256 * 2**20)
    from ringkernel import KernelLaunchError

    e2 = KernelLaunchError("refused", kernel_name="k", hint="do x", context=ErrorContext('launch("k")', "k", "0x51", snap))
    assert "Memory: 3.0 GB / 4.0 GB used (75%), pool 256.0 MB in use" in str(e2)


def test_allocation_errors_carry_their_context() -> None:
    from ringkernel import GpuMemoryPool, InsufficientMemory

    pool = GpuMemoryPool(PoolConfig.minimal(1 << 20))
    with pytest.raises(InsufficientMemory) as err:
        pool.allocate(4 << 20)
    e = err.value
    assert e.operation == "GpuMemoryPool.allocate(4194304 bytes)" and e.memory is not None
    assert e.memory.pool_in_use == 0 and "Memory:" in str(e) and "Suggestion: the pool holds" in str(e)
    pool.close()


def test_nested_blocks_of_one_context_close_it_at_the_outermost() -> None:
    """`with ctx:` inside `with ctx:` closed the context at the inner exit (an adversarial trial)."""
    from ringkernel import GpuContext

    ctx = GpuContext()
    with ctx:
        with ctx:
            a = ctx.allocate(4)
        assert not ctx.closed
        b = ctx.allocate(4)  # still usable after the inner block
        assert a.shape == b.shape == (4,)
    assert ctx.closed


def test_overlapping_blocks_of_one_context_in_tasks_and_threads_exit_cleanly() -> None:
    """Two tasks each in `with ctx:` (overlapping, not nested) raised ValueError (the last token
    was another context's) and left the context open and every later launch off its fast path."""
    import threading

    from ringkernel import _current

    ctx = GpuContext(streams=2)

    async def task(delay: float) -> None:
        with ctx:
            await asyncio.sleep(delay)

    async def main() -> None:
        await asyncio.gather(task(0.01), task(0.03))

    asyncio.run(main())
    assert ctx.closed and _current.active == 0
    ctx2 = GpuContext(streams=2)
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with ctx2:
            inside.set()
            leave.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    inside.wait(5)
    with ctx2:
        pass
    assert not ctx2.closed  # the other thread is still inside
    leave.set()
    t.join()
    assert ctx2.closed and _current.active == 0


def test_closing_the_contexts_streams_inside_it_is_fine() -> None:
    from ringkernel import ResourceClosedError

    with GpuContext(streams=2) as ctx:
        with ctx.streams as m:
            m.sync_all()
        with pytest.raises(ResourceClosedError, match="streams were closed"):
            ctx.streams
    assert ctx.closed
    with pytest.raises(ValueError, match="the program's error"):  # not replaced by a close() error
        with GpuContext(streams=2) as ctx:
            ctx.streams.close()
            raise ValueError("the program's error")


def test_leaving_a_block_from_another_thread_is_refused() -> None:
    import threading

    ctx = GpuContext(streams=2)
    ctx.__enter__()
    errors: list[BaseException] = []

    def leave() -> None:
        try:
            ctx.__exit__(None, None, None)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=leave)
    t.start()
    t.join()
    assert errors and isinstance(errors[0], ConfigurationError) and "thread or task that entered" in errors[0].hint
    ctx.__exit__(None, None, None)
    assert ctx.closed
