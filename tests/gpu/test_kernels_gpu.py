"""On a real GPU: the kernel library against NumPy at awkward sizes, and what the simulator cannot show.

Run on the GPU machine with ``RINGKERNEL_GPU_TESTS=1 python -m pytest -m gpu``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

SIZES = [1, 31, 1_000_003, (1 << 24) + 7]


def _poisoned(n: int, dtype: type):  # type: ignore[no-untyped-def]
    from numba import cuda

    out = cuda.device_array(n, dtype)
    out.copy_to_device(np.full(n, np.nan, dtype=dtype))
    return out


@pytest.mark.parametrize("n", SIZES)
def test_vector_add(rng: np.random.Generator, n: int) -> None:
    from numba import cuda

    from ringkernel.kernels import vector_add, vector_add_reference

    a, b = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    c = _poisoned(n, np.float32)
    vector_add(cuda.to_device(a), cuda.to_device(b), c)
    np.testing.assert_array_equal(c.copy_to_host(), vector_add_reference(a, b))
    d = vector_add.last_config
    assert d is not None and not d.config.violations(vector_add.arch)


@pytest.mark.parametrize("n", SIZES)
def test_saxpy(rng: np.random.Generator, n: int) -> None:
    from numba import cuda

    from ringkernel.kernels import saxpy, saxpy_reference

    alpha = np.float32(rng.standard_normal())
    x, y = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    out = _poisoned(n, np.float32)
    saxpy(alpha, cuda.to_device(x), cuda.to_device(y), out)
    # FMA contraction on the GPU rounds once where NumPy rounds twice: allow an ulp or two.
    np.testing.assert_allclose(out.copy_to_host(), saxpy_reference(alpha, x, y), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_reduce(rng: np.random.Generator, n: int, dtype: type) -> None:
    from numba import cuda

    from ringkernel.kernels import sum_reduce, sum_reduce_reference

    x = rng.standard_normal(n).astype(dtype)
    got = sum_reduce(cuda.to_device(x))
    ref = sum_reduce_reference(x)
    # float64 partials: error ~ n * eps64 * max|x|
    assert abs(got - ref) <= 1e-12 * n * max(1.0, float(np.abs(x).max())) + 1e-12


def test_resources_read_from_compiled_kernel() -> None:
    from numba import cuda

    from ringkernel.kernels import sum_reduce_kernel

    x = cuda.device_array(10, np.float32)
    out = cuda.device_array(1, np.float64)
    res = sum_reduce_kernel.resources(x, out)
    assert res is not None and res.registers_per_thread and res.registers_per_thread > 0
    assert res.shared_mem_per_block >= 256 * 8  # the float64 shared array
    d = sum_reduce_kernel.plan(x, out)
    assert "registers/thread" in d.explain()


def test_arch_is_read_from_device() -> None:
    from ringkernel import GpuArchitecture

    arch = GpuArchitecture.current()
    assert not arch.simulated and arch.sm_count > 1 and arch.l2_cache_bytes > 1 << 20


def test_typing_error_becomes_compile_error() -> None:
    from numba import cuda

    from ringkernel import KernelCompileError, gpu_kernel

    @gpu_kernel
    def broken(a):  # type: ignore[no-untyped-def]
        a[0] = "text"

    with pytest.raises(KernelCompileError) as err:
        broken(cuda.device_array(4, np.float32))
    assert "broken" in str(err.value) and "float32" in str(err.value)


def test_foreign_arrays_via_cuda_array_interface(rng: np.random.Generator) -> None:
    cupy = pytest.importorskip("cupy")
    from ringkernel.kernels import vector_add

    n = 100_003
    a = cupy.asarray(rng.standard_normal(n, dtype=np.float32))
    b = cupy.asarray(rng.standard_normal(n, dtype=np.float32))
    c = cupy.full(n, cupy.nan, dtype=cupy.float32)
    vector_add(a, b, c)
    np.testing.assert_array_equal(cupy.asnumpy(c), cupy.asnumpy(a) + cupy.asnumpy(b))
    with pytest.raises(Exception):
        vector_add(a, b, cupy.empty(n - 1, dtype=cupy.float32))


def test_torch_tensors(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    from ringkernel.kernels import vector_add

    n = 4099
    a = torch.randn(n, device="cuda")
    b = torch.randn(n, device="cuda")
    c = torch.empty(n, device="cuda")
    vector_add(a, b, c)
    torch.cuda.synchronize()
    assert torch.equal(c, a + b)
