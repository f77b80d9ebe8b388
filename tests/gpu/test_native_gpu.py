"""The compiled launch path (ringkernel/_native.c) on the GPU: in use, and the same answers as the
Python path for scalars of every type, changing every call, and for arrays of every kind."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from ringkernel import GpuKernel, gpu_kernel
from ringkernel import native
from ringkernel.kernel import core

pytestmark = pytest.mark.gpu


class PythonPathKernel(GpuKernel):
    __call__ = GpuKernel._slow_call
    _native_entries = False


def _mix(out, a, b, c, d, e, f, g, h, flag):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < out.size:
        v = float(a) + float(b) + float(c) + float(d) + float(e) + float(f) + float(g) + h + i
        out[i] = v if flag else -v


def test_compiled_path_is_in_use_and_packs_every_scalar_type(rng: np.random.Generator) -> None:
    fast = gpu_kernel(_mix)
    slow = PythonPathKernel(_mix)
    n = 1000 + int(rng.integers(0, 100))
    o1, o2 = cuda.device_array(n, np.float64), cuda.device_array(n, np.float64)
    i = np.arange(n, dtype=np.float64)
    for step in range(40):
        vals = (np.int8(rng.integers(-128, 128)), np.uint8(rng.integers(0, 256)), np.int16(rng.integers(-3000, 3000)),
                np.int32(rng.integers(-2**31, 2**31)), np.uint32(rng.integers(0, 2**32)),
                int(rng.integers(-2**40, 2**40)), np.float32(rng.standard_normal()), float(rng.standard_normal()),
                bool(step % 3))  # fmt: skip
        fast(o1, *vals)
        slow(o2, *vals)
        want = sum(float(v) for v in vals[:8]) + i
        want = want if vals[8] else -want
        got1, got2 = o1.copy_to_host(), o2.copy_to_host()
        assert np.array_equal(got1, got2)
        np.testing.assert_allclose(got1, want, rtol=1e-12, atol=1e-6)
    assert native.status().in_use, native.status()
    mod = native.load()
    assert isinstance(core.GpuKernel.__dict__["__call__"], mod.KernelCall)
    assert fast._layouts and all(isinstance(e, mod.LaunchEntry) for e in fast._layouts)
    assert slow._layouts and not any(isinstance(e, mod.LaunchEntry) for e in slow._layouts)


def test_out_of_range_scalar_refused_through_compiled_path() -> None:
    """A Python int compiles as int64: one that does not fit is refused by the checked path
    (the compiled entry declines it), and the next call launches from the entry again."""

    @gpu_kernel
    def put(out, v):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < out.size:
            out[i] = v

    out = cuda.device_array(64, np.int64)
    for v in (1, 2, 3):
        put(out, v)
    assert put._layouts
    with pytest.raises(Exception):  # noqa: B017 - numba's or ringkernel's refusal of a 71-bit int
        put(out, 2**70)
    put(out, -(2**62))
    assert np.all(out.copy_to_host() == -(2**62))


def test_every_array_kind_through_compiled_entries(rng: np.random.Generator) -> None:
    @gpu_kernel
    def axpy(alpha, x, y):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < x.size:
            y[i] = alpha * x[i] + y[i]

    n = 777
    kinds = ["numba"]
    try:
        import cupy

        kinds.append("cupy")
    except ImportError:
        cupy = None
    try:
        import torch

        kinds.append("torch")
    except ImportError:
        torch = None
    from ringkernel.memory import GpuMemoryPool

    pool = GpuMemoryPool()
    kinds.append("ringkernel")
    for kind in kinds:
        for step in range(12):  # new arrays every call: the guards read each one
            x, y = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
            alpha = np.float32(rng.standard_normal())
            if kind == "numba":
                dx, dy = cuda.to_device(x), cuda.to_device(y)
                back = dy.copy_to_host
            elif kind == "cupy":
                dx, dy = cupy.asarray(x), cupy.asarray(y)
                back = dy.get
            elif kind == "torch":
                dx, dy = torch.as_tensor(x, device="cuda"), torch.as_tensor(y, device="cuda")
                back = lambda t=dy: t.cpu().numpy()  # noqa: E731
            else:
                dx, dy = pool.device_array(n, np.float32), pool.device_array(n, np.float32)
                dx.copy_to_device(x)
                dy.copy_to_device(y)
                back = dy.copy_to_host
            axpy(alpha, dx, dy)
            cuda.synchronize()
            np.testing.assert_allclose(back(), alpha * x + y, rtol=1e-5, atol=1e-5, err_msg=f"{kind} step {step}")
    pool.close()
