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
