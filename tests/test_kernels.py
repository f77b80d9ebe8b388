"""The kernel library against its NumPy references, on the simulator (small sizes)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from ringkernel import KernelArgumentError
from ringkernel.kernels import (
    saxpy,
    saxpy_reference,
    sum_reduce,
    sum_reduce_reference,
    vector_add,
    vector_add_reference,
)

SIZES = [1, 31, 1000, 4099]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_vector_add(rng: np.random.Generator, n: int, dtype: type) -> None:
    a = (rng.standard_normal(n) * 100).astype(dtype)
    b = (rng.standard_normal(n) * 100).astype(dtype)
    c = cuda.device_array(n, dtype)
    vector_add(cuda.to_device(a), cuda.to_device(b), c)
    np.testing.assert_array_equal(c.copy_to_host(), vector_add_reference(a, b))


@pytest.mark.parametrize("n", SIZES)
def test_saxpy(rng: np.random.Generator, n: int) -> None:
    alpha = float(rng.standard_normal())
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    out = cuda.device_array(n, np.float32)
    saxpy(np.float32(alpha), cuda.to_device(x), cuda.to_device(y), out)
    np.testing.assert_allclose(out.copy_to_host(), saxpy_reference(alpha, x, y), rtol=1e-6, atol=1e-6)


def test_saxpy_in_place(rng: np.random.Generator) -> None:
    x = rng.standard_normal(100)
    y = rng.standard_normal(100)
    d_y = cuda.to_device(y)
    saxpy(2.5, cuda.to_device(x), d_y, d_y)
    np.testing.assert_allclose(d_y.copy_to_host(), 2.5 * x + y, rtol=1e-12)


@pytest.mark.parametrize("n", [1, 31, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_reduce(rng: np.random.Generator, n: int, dtype: type) -> None:
    x = rng.standard_normal(n).astype(dtype)
    got = sum_reduce(cuda.to_device(x))
    assert got == pytest.approx(sum_reduce_reference(x), rel=1e-9, abs=1e-9)


def test_sum_reduce_capped_grid_still_sums_everything(rng: np.random.Generator) -> None:
    # 9000 elements: more than the simulated device's grid-stride cap (threads loop).
    x = rng.random(9000)
    assert sum_reduce(cuda.to_device(x)) == pytest.approx(x.sum(), rel=1e-12)


def test_sum_reduce_errors() -> None:
    with pytest.raises(KernelArgumentError, match="to_device"):
        sum_reduce(np.ones(3))
    assert sum_reduce(cuda.device_array(0, np.float32)) == 0.0
