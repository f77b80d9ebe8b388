"""On a real GPU: N-D automatic launches, argument checks, and the indexing record in the cache."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]

# Kernels live in tests/test_nd_launch.py (the simulator's tests): the same code on the GPU.
from tests.test_nd_launch import (  # noqa: E402
    _stencil2d_ref,
    matrix_add,
    rows_second_diff,
    scale2d_gs,
    stencil2d,
    stencil3d,
)


def test_nd_kernels_on_odd_shapes(cache_dir: Path, rng: np.random.Generator) -> None:
    from numba import cuda

    for shape in ((37, 61), (1001, 3), (3, 1001), (257, 513)):
        u = rng.standard_normal(shape).astype(np.float32)
        out = cuda.to_device(np.zeros_like(u))
        stencil2d(cuda.to_device(u), out)
        np.testing.assert_allclose(out.copy_to_host(), _stencil2d_ref(u), rtol=1e-5, atol=1e-5)
        a, b = rng.standard_normal(shape), rng.standard_normal(shape)
        c = cuda.to_device(np.full(shape, np.nan))
        matrix_add(cuda.to_device(a), cuda.to_device(b), c)
        np.testing.assert_array_equal(c.copy_to_host(), a + b)
        g = cuda.to_device(np.zeros(shape, np.float32))
        scale2d_gs(cuda.to_device(u), g, np.float32(2.5))
        np.testing.assert_allclose(g.copy_to_host(), 2.5 * u, rtol=1e-6)
        r = cuda.to_device(np.zeros(shape))
        uu = rng.standard_normal(shape)
        rows_second_diff(cuda.to_device(uu), r)
        ref = np.zeros(shape)
        ref[1:-1] = uu[:-2] - 2 * uu[1:-1] + uu[2:]
        np.testing.assert_allclose(r.copy_to_host(), ref, atol=1e-12)
    for shape in ((5, 7, 9), (64, 3, 129), (33, 65, 17)):
        u3 = rng.standard_normal(shape)
        o3 = cuda.to_device(np.zeros(shape))
        stencil3d(cuda.to_device(u3), o3)
        ref3 = np.zeros(shape)
        ref3[1:-1, 1:-1, 1:-1] = (
            u3[:-2, 1:-1, 1:-1] + u3[2:, 1:-1, 1:-1] + u3[1:-1, :-2, 1:-1] + u3[1:-1, 2:, 1:-1]
            + u3[1:-1, 1:-1, :-2] + u3[1:-1, 1:-1, 2:] - 6 * u3[1:-1, 1:-1, 1:-1]
        )  # fmt: skip
        np.testing.assert_allclose(o3.copy_to_host(), ref3, atol=1e-12)


def test_fast_path_replans_same_size_other_shape(cache_dir: Path, rng: np.random.Generator) -> None:
    from numba import cuda

    for _ in range(3):  # repeat: the second round goes through the fast decision table
        for shape in ((20, 30), (30, 20), (600, 1), (1, 600)):
            a = rng.standard_normal(shape)
            c = cuda.to_device(np.full(shape, np.nan))
            matrix_add(cuda.to_device(a), cuda.to_device(a), c)
            np.testing.assert_array_equal(c.copy_to_host(), 2 * a)


def test_cupy_and_torch_arrays_nd(cache_dir: Path, rng: np.random.Generator) -> None:
    cupy = pytest.importorskip("cupy")
    u = rng.standard_normal((45, 77)).astype(np.float32)
    out = cupy.zeros_like(cupy.asarray(u))
    stencil2d(cupy.asarray(u), out)
    np.testing.assert_allclose(cupy.asnumpy(out), _stencil2d_ref(u), rtol=1e-5, atol=1e-5)
    uf = cupy.asfortranarray(cupy.asarray(u))
    of = cupy.asfortranarray(cupy.zeros_like(uf))
    stencil2d(uf, of)
    assert stencil2d.last_config is not None and stencil2d.last_config.block[0] == 1  # warps along axis 0
    np.testing.assert_allclose(cupy.asnumpy(of), _stencil2d_ref(u), rtol=1e-5, atol=1e-5)
    try:
        import torch
    except ImportError:
        return
    tu = torch.as_tensor(u, device="cuda")
    to = torch.zeros_like(tu)
    stencil2d(tu, to)
    np.testing.assert_allclose(to.cpu().numpy(), _stencil2d_ref(u), rtol=1e-5, atol=1e-5)


def _special_registers(ptx: str) -> set[str]:
    return set(re.findall(r"%(tid|ctaid|ntid|nctaid)\.([xyz])", ptx))


def test_analysis_agrees_with_the_ptx(cache_dir: Path) -> None:
    """The IR analysis against the ground truth: the special registers the compiled code reads."""
    from numba import cuda

    from tests.test_nd_launch import flat2d

    a2 = cuda.to_device(np.zeros((8, 8)))
    cases = [
        (stencil2d, (a2, cuda.to_device(np.zeros((8, 8))))),
        (matrix_add, (a2, a2, cuda.to_device(np.zeros((8, 8))))),
        (stencil3d, (cuda.to_device(np.zeros((4, 4, 4))), cuda.to_device(np.zeros((4, 4, 4))))),
        (scale2d_gs, (a2, cuda.to_device(np.zeros((8, 8))), 1.0)),
        (flat2d, (cuda.to_device(np.zeros(64)), 8)),
    ]
    for kernel, args in cases:
        ptx = kernel.compiled(*args).ptx
        used = {"xyz".index(d) for _, d in _special_registers(ptx)}
        assert used, kernel.name
        assert max(used) + 1 == kernel.indexing.ndim, (kernel.name, sorted(used), kernel.indexing)


def test_indexing_comes_from_the_cache_in_a_fresh_process(cache_dir: Path) -> None:
    script = (
        "import numpy as np\n"
        "import ringkernel.kernel.indexing as ix\n"
        "from numba import cuda\n"
        "from tests.test_nd_launch import stencil2d\n"
        "if MODE == 'hit':\n"
        "    def boom(f):\n"
        "        raise AssertionError('analysis ran on a cache hit')\n"
        "    ix.analyze_kernel = boom\n"
        "    import ringkernel.kernel.core as d; d.analyze_kernel = boom\n"
        "u = cuda.to_device(np.ones((50, 70), np.float32)); o = cuda.to_device(np.zeros((50, 70), np.float32))\n"
        "stencil2d(u, o)\n"
        "ck = stencil2d.compiled(u, o)\n"
        "assert ck.from_cache == (MODE == 'hit'), ck.from_cache\n"
        "assert stencil2d.last_config.extent == (70, 50)\n"
        "print('ok', ck.from_cache)\n"
    )
    env = {**os.environ, "RINGKERNEL_CACHE_DIR": str(cache_dir), "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for mode in ("miss", "hit"):
        r = subprocess.run([sys.executable, "-c", f"MODE = {mode!r}\n" + script], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        assert "ok" in r.stdout


def test_bad_arguments_on_the_gpu(cache_dir: Path, rng: np.random.Generator) -> None:
    from numba import cuda

    from ringkernel import GpuMemoryPool, KernelArgumentError, ManagedBuffer
    from tests.test_kernel_args import axpy

    y = cuda.to_device(np.zeros(5, np.float32))
    for bad in ([1.0, 2.0], None, "s", np.array(1.0)):
        with pytest.raises(KernelArgumentError, match="'x'"):
            axpy(np.float32(2), bad, y)
    pool = GpuMemoryPool()
    buf = pool.allocate(64)
    with pytest.raises(KernelArgumentError, match="as_array"):
        axpy(np.float32(2), buf, y)
    buf.free()
    xs = rng.random(1001, dtype=np.float32)
    with ManagedBuffer(1001, np.float32, data=xs) as mx, ManagedBuffer(1001, np.float32) as my:
        axpy(np.float32(3), mx, my)
        np.testing.assert_allclose(my.read(), 3 * xs, rtol=1e-6)
    pool.close()


def test_strided_arrays_on_the_gpu(cache_dir: Path, rng: np.random.Generator) -> None:
    from numba import cuda

    from ringkernel import KernelArgumentError, gpu_kernel

    def body(src, dst):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < dst.size:
            dst[i] = src[i]

    strict = gpu_kernel(signatures=["void(float32[::1], float32[::1])"])(body)
    loose = gpu_kernel(signatures=["void(float32[:], float32[:])"])(body)
    auto = gpu_kernel(body)
    base = cuda.to_device(rng.random(4001, dtype=np.float32))
    strided = base[::3]
    dst = cuda.device_array(strided.size, np.float32)
    with pytest.raises(KernelArgumentError, match="strided"):
        strict(strided, dst)
    for k in (loose, auto):
        dst.copy_to_device(np.zeros(strided.size, np.float32))
        k(strided, dst)
        np.testing.assert_array_equal(dst.copy_to_host(), base.copy_to_host()[::3])
