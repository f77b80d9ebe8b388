"""@gpu_kernel on the simulator: launching, explicit forms, explanation, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from ringkernel import (
    KernelArgumentError,
    KernelCompileError,
    KernelMode,
    LaunchConfig,
    LaunchConfigError,
    RingKernelError,
    WorkloadProfile,
    block_dim_x,
    block_idx_x,
    global_thread_id,
    gpu_kernel,
    grid_dim_x,
    grid_stride,
    thread_idx_x,
)


@gpu_kernel
def add_one_per_thread(a, b, c):  # type: ignore[no-untyped-def]
    idx = thread_idx_x() + block_idx_x() * block_dim_x()
    if idx < c.size:
        c[idx] = a[idx] + b[idx]


@gpu_kernel(grid_stride=True, same_size=("x", "y"), signatures=["void(float32[:], float32[:])", "void(float64[:], float64[:])"])
def double_into(x, y):  # type: ignore[no-untyped-def]
    for i in range(global_thread_id(), x.size, grid_stride()):
        y[i] = 2 * x[i]


@gpu_kernel(grid_stride=True)
def count_threads(out):  # type: ignore[no-untyped-def]
    # out[0] = number of blocks launched, written by thread 0 of block 0
    if global_thread_id() == 0:
        out[0] = grid_dim_x()


def _dev(x: np.ndarray):  # type: ignore[no-untyped-def]
    return cuda.to_device(x)


@pytest.mark.parametrize("n", [1, 31, 257, 1000])
def test_auto_launch_matches_numpy(rng: np.random.Generator, n: int) -> None:
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    c = cuda.device_array(n, np.float32)
    add_one_per_thread(_dev(a), _dev(b), c)
    np.testing.assert_array_equal(c.copy_to_host(), a + b)
    d = add_one_per_thread.last_config
    assert d is not None and d.config.total_threads >= n and not d.grid_stride


def test_explicit_numba_forms(rng: np.random.Generator) -> None:
    n = 300
    a, b = rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32)
    for spec in [(3, 128), (3, 128, 0), (3, 128, cuda.stream(), 0)]:
        c = cuda.device_array(n, np.float32)
        add_one_per_thread[spec](_dev(a), _dev(b), c)
        np.testing.assert_array_equal(c.copy_to_host(), a + b)
        assert add_one_per_thread.last_config.reasons == ("explicit configuration from the caller",)
        assert add_one_per_thread.last_config.block == (128, 1, 1)
    c = cuda.device_array(n, np.float32)
    d = add_one_per_thread.launch(_dev(a), _dev(b), c, config=LaunchConfig(grid=10, block=32))
    assert d.grid == (10, 1, 1)
    np.testing.assert_array_equal(c.copy_to_host(), a + b)


def test_grid_stride_kernel_correct_with_any_grid(rng: np.random.Generator) -> None:
    x = rng.standard_normal(777)
    for grid, block in [(1, 32), (2, 64), (7, 96)]:
        y = cuda.device_array(777, np.float64)
        double_into[grid, block](_dev(x), y)
        np.testing.assert_array_equal(y.copy_to_host(), 2 * x)


def test_grid_stride_lets_selector_launch_fewer_threads() -> None:
    out = cuda.device_array(1, np.int64)
    from ringkernel.launch import GRID_STRIDE_WAVES

    # The simulated GPU holds 1024 threads: 4 resident blocks of 256 per wave.
    count_threads(out, elements=100_000)
    blocks = int(out.copy_to_host()[0])
    assert blocks == count_threads.last_config.grid[0] == 4 * GRID_STRIDE_WAVES
    assert "capped" in count_threads.explain()


def test_elements_and_profile_overrides(rng: np.random.Generator) -> None:
    x = _dev(rng.random(64, dtype=np.float32))
    y = cuda.device_array(64, np.float32)
    double_into(x, y, elements=10)
    assert double_into.last_config.elements == 10
    double_into(x, y, profile=WorkloadProfile(64))
    np.testing.assert_array_equal(y.copy_to_host(), 2 * x.copy_to_host())
    with pytest.raises(LaunchConfigError, match="contradicts"):
        double_into(x, y, elements=5, profile=WorkloadProfile(64))


def test_explain_before_and_without_launch(rng: np.random.Generator) -> None:
    @gpu_kernel
    def fresh(a):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < a.size:
            a[i] = 0

    assert "not been launched" in fresh.explain()
    text = fresh.explain(elements=5000)
    assert "ElementCentric" in text and "grid 20" in text


def test_host_array_refused_with_advice(rng: np.random.Generator) -> None:
    a = rng.random(10, dtype=np.float32)
    with pytest.raises(KernelArgumentError) as err:
        add_one_per_thread(a, _dev(a), cuda.device_array(10, np.float32))
    msg = str(err.value)
    assert "add_one_per_thread" in msg and "'a'" in msg and "host memory" in msg
    assert "numba.cuda.to_device(a)" in msg and "host_transfer=True" in msg
    assert isinstance(err.value, TypeError) and isinstance(err.value, RingKernelError)


def test_host_transfer_opt_in_copies_back(rng: np.random.Generator) -> None:
    a, b = rng.random(50, dtype=np.float32), rng.random(50, dtype=np.float32)
    c = np.full(50, np.nan, dtype=np.float32)
    add_one_per_thread(a, b, c, host_transfer=True)
    np.testing.assert_array_equal(c, a + b)


def test_dtype_no_signature_accepts(rng: np.random.Generator) -> None:
    x = _dev(rng.integers(0, 10, 16).astype(np.int32))
    with pytest.raises(KernelArgumentError) as err:
        double_into(x, cuda.device_array(16, np.int32))
    msg = str(err.value)
    assert "double_into" in msg and "int32" in msg and "float32[:]" in msg and "astype" in msg
    # mixed precision matches neither signature either
    with pytest.raises(KernelArgumentError):
        double_into(_dev(np.zeros(4, np.float32)), cuda.device_array(4, np.float64))


def test_block_larger_than_device(rng: np.random.Generator) -> None:
    with pytest.raises(LaunchConfigError) as err:
        add_one_per_thread[1, 2048]
    assert "2048 threads" in str(err.value) and "at most 1024" in str(err.value)
    with pytest.raises(LaunchConfigError):
        add_one_per_thread[1, (32, 32, 2)]
    with pytest.raises(LaunchConfigError):
        add_one_per_thread[0, 32]
    with pytest.raises(LaunchConfigError, match="grid, block"):
        add_one_per_thread[1]


def test_zero_elements_refused() -> None:
    empty = cuda.device_array(0, np.float32)
    with pytest.raises(LaunchConfigError) as err:
        add_one_per_thread(empty, empty, empty)
    assert "0 elements" in str(err.value) and "skip the launch" in str(err.value)


def test_mismatched_declared_sizes(rng: np.random.Generator) -> None:
    with pytest.raises(KernelArgumentError) as err:
        double_into(_dev(rng.random(10)), cuda.device_array(9, np.float64))
    assert "x=10" in str(err.value) and "y=9" in str(err.value)


def test_wrong_argument_count() -> None:
    with pytest.raises(KernelArgumentError, match="takes 3 arguments"):
        add_one_per_thread(cuda.device_array(3, np.float32))


def test_scalar_only_kernel_needs_elements() -> None:
    @gpu_kernel
    def nothing(x):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i > x:
            pass

    with pytest.raises(LaunchConfigError, match="elements=N"):
        nothing(3)
    nothing(3, elements=5)


def test_bad_options() -> None:
    with pytest.raises(RingKernelError, match="not a parameter"):
        gpu_kernel(same_size=("nope",))(lambda a: None)
    with pytest.raises(RingKernelError, match="block"):
        gpu_kernel(block=0)(lambda a: None)
    with pytest.raises(RingKernelError, match="KernelMode"):
        gpu_kernel(mode="tiled")(lambda a: None)  # type: ignore[arg-type]


def test_fixed_mode_is_reported() -> None:
    @gpu_kernel(mode=KernelMode.WARP_COOPERATIVE)
    def warp_per_elem(out):  # type: ignore[no-untyped-def]
        w = cuda.grid(1) // 32
        if w < out.size:
            out[w] = 1

    d = warp_per_elem.plan(cuda.device_array(100, np.float32))
    assert d.mode == KernelMode.WARP_COOPERATIVE and d.config.total_threads >= 100 * 32


def test_repr_and_wraps() -> None:
    assert add_one_per_thread.__name__ == "add_one_per_thread"
    assert "GpuKernel add_one_per_thread(a, b, c)" in repr(add_one_per_thread)


def test_compile_error_names_kernel() -> None:
    # The simulator runs the body as Python, so a typing error shows as the Python error;
    # on the GPU numba's TypingError is translated (see tests/gpu).
    @gpu_kernel
    def broken(a):  # type: ignore[no-untyped-def]
        a[0] = undefined_name  # noqa: F821

    with pytest.raises(Exception):
        broken[1, 1](cuda.device_array(1, np.float32))
    assert issubclass(KernelCompileError, RingKernelError)
