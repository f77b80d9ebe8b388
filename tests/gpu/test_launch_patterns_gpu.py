"""On a real GPU: CuPy and PyTorch arrays read through their cheap attributes are never stale."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _kernels():  # type: ignore[no-untyped-def]
    from numba import cuda

    from ringkernel import gpu_kernel

    @gpu_kernel
    def fill_index(out):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < out.size:
            out[i] = i

    @gpu_kernel
    def add(a, b, c):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < c.size:
            c[i] = a[i] + b[i]

    return fill_index, add


def test_cupy_reshaped_in_place_and_reallocated_is_not_stale(rng: np.random.Generator) -> None:
    cupy = pytest.importorskip("cupy")
    fill_index, add = _kernels()
    for _ in range(3):
        a = cupy.full(1000, -1.0)
        fill_index(a)
        np.testing.assert_array_equal(cupy.asnumpy(a), np.arange(1000))
        del a  # the next array may get the same address, with another size
        b = cupy.full(37, -1.0)
        fill_index(b)
        np.testing.assert_array_equal(cupy.asnumpy(b), np.arange(37))
    x = cupy.asarray(rng.random(24))
    y = cupy.asarray(rng.random(24))
    z = cupy.zeros(24)
    add(x, y, z)
    from numba import cuda

    from ringkernel import gpu_kernel

    @gpu_kernel
    def fill2d(out):  # type: ignore[no-untyped-def]
        x, y = cuda.grid(2)
        if y < out.shape[0] and x < out.shape[1]:
            out[y, x] = 10 * y + x

    z.shape = (4, 6)  # in place: the same object is now 2-D; a stale reading would still see (24,)
    fill2d(z)
    assert fill2d.last_config is not None and fill2d.last_config.extent == (6, 4)
    np.testing.assert_array_equal(cupy.asnumpy(z), 10 * np.arange(4)[:, None] + np.arange(6)[None, :])
    s = cupy.cuda.Stream(non_blocking=True)
    with s:  # a non-default current stream: the launch waits for it (interface v3 semantics)
        w = cupy.asarray(rng.random(24))
        v = cupy.zeros(24)
        add(w, w, v)
    s.synchronize()
    np.testing.assert_allclose(cupy.asnumpy(v), 2 * cupy.asnumpy(w))


def test_torch_resized_and_reallocated_is_not_stale(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    fill_index, add = _kernels()
    t = torch.full((1000,), -1.0, device="cuda", dtype=torch.float64)
    fill_index(t)
    assert (t.cpu().numpy() == np.arange(1000)).all()
    t.resize_(3000)  # may move and grows: the launch must see the new pointer and size
    t.fill_(-1.0)
    fill_index(t)
    assert (t.cpu().numpy() == np.arange(3000)).all()
    a = torch.as_tensor(rng.random(50), device="cuda")
    b = torch.as_tensor(rng.random(50), device="cuda")
    c = torch.zeros(50, device="cuda", dtype=torch.float64)
    add(a, b, c)
    np.testing.assert_allclose(c.cpu().numpy(), (a + b).cpu().numpy())
    half = torch.zeros(50, device="cuda", dtype=torch.float32)
    add(a.float(), b.float(), half)  # another dtype: another compiled signature
    np.testing.assert_allclose(half.cpu().numpy(), (a + b).float().cpu().numpy(), rtol=1e-6)


def test_every_call_pattern_gives_numpys_answer(rng: np.random.Generator) -> None:
    """New numba arrays every call (freed each time, so addresses repeat with other data),
    DeviceArrays from a pool, a scalar that changes every call, CuPy and PyTorch arrays of
    changing sizes: each launch checked against NumPy."""
    from numba import cuda

    from ringkernel import GpuMemoryPool, gpu_kernel

    @gpu_kernel
    def axpy(alpha, x, y, out):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < out.size:
            out[i] = alpha * x[i] + y[i]

    def check(alpha: np.float32, xh: np.ndarray, yh: np.ndarray, got: np.ndarray) -> None:
        np.testing.assert_allclose(got, alpha * xh + yh, rtol=1e-5, atol=1e-5)

    for n in (1000, 1000, 1000, 4097, 1000, 33):  # sizes repeat and change
        for _ in range(40):  # new arrays each call, freed at the end of the iteration
            xh, yh = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
            alpha = np.float32(rng.standard_normal())
            x, y, out = cuda.to_device(xh), cuda.to_device(yh), cuda.device_array(n, np.float32)
            axpy(alpha, x, y, out)
            check(alpha, xh, yh, out.copy_to_host())
    pool = GpuMemoryPool()
    for n in (777, 777, 5000):
        for _ in range(20):
            xh, yh = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
            x, y, out = (pool.device_array(n, np.float32) for _ in range(3))
            x.copy_to_device(xh)
            y.copy_to_device(yh)
            alpha = float(rng.standard_normal())
            axpy(np.float32(alpha), x, y, out)
            check(np.float32(alpha), xh, yh, out.copy_to_host())
    cupy = pytest.importorskip("cupy")
    for n in (640, 640, 1500):
        for _ in range(20):
            xh, yh = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
            xc, yc, oc = cupy.asarray(xh), cupy.asarray(yh), cupy.empty(n, dtype=cupy.float32)
            alpha = np.float32(rng.standard_normal())
            axpy(alpha, xc, yc, oc)
            check(alpha, xh, yh, cupy.asnumpy(oc))
    torch = pytest.importorskip("torch")
    for n in (300, 300, 901):
        for _ in range(20):
            xh, yh = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
            xt, yt = torch.as_tensor(xh, device="cuda"), torch.as_tensor(yh, device="cuda")
            ot = torch.empty(n, device="cuda")
            alpha = np.float32(rng.standard_normal())
            axpy(alpha, xt, yt, ot)
            torch.cuda.synchronize()
            check(alpha, xh, yh, ot.cpu().numpy())
