"""On a real GPU: priorities, non-blocking streams, async/await, pinned-memory checks."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _spin_kernel():  # type: ignore[no-untyped-def]
    from numba import cuda

    @cuda.jit
    def spin(out, steps):  # type: ignore[no-untyped-def]
        for _ in range(steps):
            cuda.nanosleep(1000)
        if cuda.threadIdx.x == 0:
            out[cuda.blockIdx.x % out.size] = 1

    return spin


def test_high_priority_kernel_overtakes_a_long_low_priority_one() -> None:
    from numba import cuda

    from ringkernel.streams import StreamConfig, StreamId, StreamManager

    least, greatest = StreamManager.priority_range()
    if least == greatest:
        pytest.skip("this device has a single stream priority")
    spin = _spin_kernel()
    out = cuda.device_array(16, np.int32)
    with StreamManager(StreamConfig(num_compute_streams=1, compute_priority=least, transfer_priority=greatest)) as m:
        low, high = m.stream(StreamId.compute(0)), m.stream(StreamId.TRANSFER)
        spin[1, 32, low](out, 10)  # compile outside the measurement
        cuda.synchronize()
        spin[132 * 64, 128, low](out, 200)  # ~ 8448 blocks x 200 us: many waves
        m.record_event("long_done", StreamId.compute(0))
        spin[1, 32, high](out, 10)
        m.record_event("short_done", StreamId.TRANSFER)
        m.event("short_done").synchronize()
        assert not m.event("long_done").query(), "the short high-priority kernel waited for the long one"
        m.sync_all()


def test_asyncio_gather_and_errors_on_the_gpu(rng: np.random.Generator) -> None:
    from numba import cuda

    from ringkernel import KernelArgumentError
    from ringkernel.kernels import saxpy
    from ringkernel.streams import StreamConfig, StreamId, StreamManager

    m = StreamManager(StreamConfig(num_compute_streams=2))
    n = 1 << 22
    xs = [rng.standard_normal(n).astype(np.float32) for _ in range(2)]

    async def run(x, sid):  # type: ignore[no-untyped-def]
        s = m.stream(sid)
        d = cuda.to_device(x, stream=s)
        out = cuda.device_array(n, np.float32, stream=s)
        saxpy(np.float32(2.0), d, d, out, stream=s)
        await m.wait(sid)
        return out.copy_to_host()

    async def both():  # type: ignore[no-untyped-def]
        return await asyncio.gather(run(xs[0], StreamId.compute(0)), run(xs[1], StreamId.compute(1)))

    r = asyncio.run(both())
    for x, got in zip(xs, r):
        np.testing.assert_allclose(got, 3 * x, rtol=1e-6)

    async def failing():  # type: ignore[no-untyped-def]
        saxpy(np.float32(1.0), np.zeros(4, np.float32), cuda.device_array(4, np.float32), cuda.device_array(4, np.float32),
              stream=m.stream(StreamId.compute(0)))  # fmt: skip
        await m.wait(StreamId.compute(0))

    with pytest.raises(KernelArgumentError):
        asyncio.run(failing())
    m.close()


def test_pageable_memory_is_refused_unless_sync_is_asked(rng: np.random.Generator) -> None:
    from numba import cuda

    from ringkernel import KernelArgumentError
    from ringkernel.streams import StreamManager

    m = StreamManager()
    dev = cuda.device_array(1000)
    pageable = rng.standard_normal(1000)
    with pytest.raises(KernelArgumentError, match="pinned"):
        m.async_memcpy_htod(dev, pageable)
    m.async_memcpy_htod(dev, pageable, allow_sync=True)
    pinned = cuda.pinned_array(1000, dtype=np.float64)
    m.async_memcpy_dtoh(pinned, dev)
    m.sync_all()
    np.testing.assert_array_equal(pinned, pageable)
    m.close()


def test_graph_capture_replays_launches(rng: np.random.Generator) -> None:
    from numba import cuda

    from ringkernel.kernels import vector_add
    from ringkernel.streams import StreamConfig, StreamId, StreamManager

    n = 100_000
    a = cuda.to_device(rng.standard_normal(n).astype(np.float32))
    b = cuda.device_array(n, np.float32)
    c = cuda.device_array(n, np.float32)
    with StreamManager(StreamConfig(num_compute_streams=1, enable_graph_capture=True)) as m:
        s = m.stream(StreamId.compute(0))
        vector_add(a, a, b, stream=s)  # warm: load the kernel outside the capture
        vector_add(b, b, c, stream=s)
        s.synchronize()
        c.copy_to_device(np.zeros(n, np.float32))
        with m.capture(StreamId.compute(0)) as graph:
            vector_add(a, a, b, stream=s)  # b = 2a
            vector_add(b, b, c, stream=s)  # c = 4a
        assert not np.any(c.copy_to_host())  # captured, not run
        graph.replay()
        s.synchronize()
        np.testing.assert_allclose(c.copy_to_host(), 4 * a.copy_to_host(), rtol=1e-6)
        graph.close()


def test_a_kernel_fault_raises_in_the_awaiting_task(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A kernel that faults on the GPU (illegal address) makes `await manager.wait(...)`
    raise DeviceError in the awaiting task. In a subprocess: the fault ruins the context."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import asyncio
        import numpy as np
        from numba import cuda
        from ringkernel import DeviceError
        from ringkernel.streams import StreamConfig, StreamId, StreamManager

        @cuda.jit
        def bad(a):
            a[cuda.threadIdx.x + (1 << 40)] = 1.0  # far outside any allocation

        m = StreamManager(StreamConfig(num_compute_streams=1))
        a = cuda.device_array(16, np.float32)

        async def task():
            bad[1, 32, m.stream(StreamId.compute(0))](a)
            await m.wait(StreamId.compute(0))

        try:
            asyncio.run(task())
        except DeviceError as exc:
            print("RAISED", type(exc).__name__, str(exc).replace(chr(10), " "))
        else:
            print("NOT RAISED")
        """
    )
    path = tmp_path / "fault.py"
    path.write_text(script)
    r = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    assert "RAISED DriverError" in r.stdout and "CUDA_ERROR_ILLEGAL_ADDRESS" in r.stdout, r.stdout + r.stderr
    assert "restart the process" in r.stdout
