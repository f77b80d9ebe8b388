"""On a real GPU: the cache, the caching compiler and the fast launch path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


def _dev(x: np.ndarray):  # type: ignore[no-untyped-def]
    from numba import cuda

    return cuda.to_device(x)


def test_cache_hit_and_fresh_compile_give_identical_results(cache_dir: Path, rng: np.random.Generator) -> None:
    from ringkernel import gpu_kernel, global_thread_id, grid_stride
    from ringkernel.compile import CachingCompiler, PtxCache

    def poly(x, y):  # type: ignore[no-untyped-def]
        for i in range(global_thread_id(), x.size, grid_stride()):
            v = x[i]
            y[i] = 3.0 * v * v - 2.0 * v + 0.5

    kernel = gpu_kernel(grid_stride=True)(poly)
    x = _dev(rng.standard_normal(100_003).astype(np.float32))
    outs = []
    for expect_cached in (False, True):
        comp = CachingCompiler(PtxCache.with_dir(cache_dir))  # a new compiler: nothing in memory
        from numba.core import types

        ck = comp.compile(kernel, (types.float32[::1], types.float32[::1]))
        assert ck.from_cache is expect_cached and ck.registers_per_thread > 0
        y = _dev(np.full(100_003, np.nan, np.float32))
        from ringkernel.compile.launcher import describe_arg

        ck.launcher.launch([describe_arg(x), describe_arg(y)], (400, 1, 1), (256, 1, 1), 0, 0)
        outs.append(y.copy_to_host())
    np.testing.assert_array_equal(outs[0], outs[1])
    xh = x.copy_to_host()
    np.testing.assert_allclose(outs[1], 3 * xh * xh - 2 * xh + 0.5, rtol=1e-5, atol=1e-5)


def test_fast_path_repeats_are_correct(cache_dir: Path, rng: np.random.Generator) -> None:
    from numba import cuda

    from ringkernel import gpu_kernel
    from ringkernel.kernels import saxpy, vector_add

    for n in (1, 1000, 1_000_003):
        for _ in range(3):  # the first launch is checked, the next ones take the fast path
            a, b = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
            c = _dev(np.full(n, np.nan, np.float32))
            vector_add(_dev(a), _dev(b), c)
            np.testing.assert_array_equal(c.copy_to_host(), a + b)
    assert vector_add._fast_auto, "repeated launches must be remembered for the fast path"
    # explicit configuration and a stream
    s = cuda.stream()
    a, b = rng.standard_normal(5000, dtype=np.float32), rng.standard_normal(5000, dtype=np.float32)
    for _ in range(3):
        c = _dev(np.full(5000, np.nan, np.float32))
        vector_add[8, 128, s](_dev(a), _dev(b), c)
        s.synchronize()
        np.testing.assert_array_equal(c.copy_to_host(), a + b)
    # scalars: a Python float and a NumPy float32
    for alpha in (2.5, np.float32(-1.25)):
        x, y = rng.standard_normal(777).astype(np.float32), rng.standard_normal(777).astype(np.float32)
        out = _dev(np.zeros(777, np.float32))
        saxpy(alpha, _dev(x), _dev(y), out)
        np.testing.assert_allclose(out.copy_to_host(), np.float32(alpha) * x + y, rtol=1e-6, atol=1e-6)
    # 2-D arrays and a non-contiguous view
    @gpu_kernel
    def transpose_add(a, out):  # type: ignore[no-untyped-def]
        i, j = cuda.grid(2)
        if i < out.shape[0] and j < out.shape[1]:
            out[i, j] = a[j, i] + 1.0

    m = rng.standard_normal((37, 53))
    out = _dev(np.zeros((53, 37)))
    for _ in range(2):
        transpose_add[(4, 4), (16, 16)](_dev(m), out)
        np.testing.assert_array_equal(out.copy_to_host(), m.T + 1.0)
    strided = _dev(rng.standard_normal(2000))[::2]
    got = _dev(np.zeros(1000))
    vector_add(strided, strided, got)
    np.testing.assert_array_equal(got.copy_to_host(), 2 * strided.copy_to_host())


def test_fast_path_still_refuses_bad_input(cache_dir: Path) -> None:
    from numba import cuda

    from ringkernel import KernelArgumentError, LaunchConfigError
    from ringkernel.kernels import vector_add

    a = cuda.device_array(100, np.float32)
    vector_add(a, a, a)
    vector_add(a, a, a)
    with pytest.raises(KernelArgumentError, match="host memory"):
        vector_add(np.zeros(100, np.float32), a, a)
    with pytest.raises(KernelArgumentError, match="differ"):
        vector_add(a, cuda.device_array(99, np.float32), a)
    with pytest.raises(LaunchConfigError):
        vector_add[1, 2048](a, a, a)


def test_fresh_process_loads_from_cache(cache_dir: Path) -> None:
    code = (
        "import numpy as np; from numba import cuda; from ringkernel.kernels import vector_add;"
        "a = cuda.to_device(np.arange(1000, dtype=np.float32)); c = cuda.device_array(1000, np.float32);"
        "vector_add(a, a, c); ck = next(iter(vector_add._compiled.values()));"
        "assert np.array_equal(c.copy_to_host(), 2 * np.arange(1000, dtype=np.float32));"
        "print('FROM_CACHE', ck.from_cache, 'LOAD_MS', ck.load_ms)"
    )
    env = dict(os.environ, RINGKERNEL_CACHE_DIR=str(cache_dir), PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert "FROM_CACHE False" in first.stdout, first.stderr
    assert "FROM_CACHE True" in second.stdout, second.stderr


def test_cupy_and_torch_through_fast_path(cache_dir: Path, rng: np.random.Generator) -> None:
    cupy = pytest.importorskip("cupy")
    from ringkernel.kernels import vector_add

    for _ in range(3):
        a = cupy.asarray(rng.standard_normal(4097, dtype=np.float32))
        c = cupy.full(4097, cupy.nan, dtype=cupy.float32)
        vector_add(a, a, c)
        np.testing.assert_array_equal(cupy.asnumpy(c), 2 * cupy.asnumpy(a))


def test_launch_from_another_thread(cache_dir: Path) -> None:
    import threading

    from numba import cuda

    from ringkernel.kernels import vector_add

    a = cuda.to_device(np.arange(512, dtype=np.float32))
    c = cuda.device_array(512, np.float32)
    vector_add(a, a, c)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            out = cuda.device_array(512, np.float32)
            for _ in range(3):
                vector_add(a, a, out)
            cuda.synchronize()
            np.testing.assert_array_equal(out.copy_to_host(), 2 * np.arange(512, dtype=np.float32))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert not errors, errors


def test_memo_entries_die_with_their_arrays(cache_dir: Path, rng: np.random.Generator) -> None:
    import gc

    from numba import cuda

    from ringkernel.kernels import vector_add

    for round_ in range(20):  # new arrays each round: ids get reused, pointers change
        a = rng.standard_normal(3000, dtype=np.float32)
        da, dc = cuda.to_device(a), cuda.device_array(3000, np.float32)
        for _ in range(3):
            vector_add(da, da, dc)
        np.testing.assert_array_equal(dc.copy_to_host(), 2 * a, err_msg=f"round {round_}")
        del da, dc
        gc.collect()
    assert len(vector_add._memo) <= 2  # entries of dead arrays were dropped


def test_numba_type_shortcut_agrees_with_typeof(rng: np.random.Generator) -> None:
    """The runtime reads numba arrays' own ``_numba_type_`` instead of calling ``typeof``:
    the two must agree for every layout, dtype and a read-only array; others use typeof."""
    from numba import cuda

    from ringkernel.kernel.runtime import numba_type
    from ringkernel.kernels import vector_add

    d = vector_add.dispatcher
    base = cuda.to_device(rng.standard_normal((8, 6)).astype(np.float64))
    values = [
        cuda.to_device(rng.standard_normal(100).astype(np.float32)),
        base, base.T, base[::2], base[:, 1],
        cuda.to_device(np.arange(10, dtype=np.int16)),
        cuda.to_device(np.zeros(0, np.complex64)),
        np.float32(1.5), 3, 2.0,
    ]
    ro = np.arange(5.0)
    ro.flags.writeable = False
    values.append(cuda.to_device(ro))
    try:
        import cupy

        values.append(cupy.arange(7, dtype=cupy.float32))
    except Exception:  # CuPy is optional
        pass
    for v in values:
        assert numba_type(d, v) == d.typeof_pyval(v), v
