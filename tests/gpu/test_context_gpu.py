"""On a real GPU: contexts with their own kernel caches, driver errors with their names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


def test_two_contexts_use_their_own_caches(tmp_path: Path, rng: np.random.Generator) -> None:
    from numba import cuda

    from ringkernel import GpuContext, gpu_kernel

    def body(a, out):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < out.size:
            out[i] = a[i] * 7.0 + 1.0

    k = gpu_kernel(body)
    x = cuda.to_device(rng.random(1001))
    out = cuda.device_array(1001)
    dirs = [tmp_path / "ctx_a", tmp_path / "ctx_b"]
    for d in dirs:
        with GpuContext(cache_dir=d) as ctx:
            k(x, out)  # the same kernel and arrays in both contexts
            ctx.launch(k, x, out)
            ctx.synchronize()
            np.testing.assert_allclose(out.copy_to_host(), x.copy_to_host() * 7.0 + 1.0)
            assert ctx.compiler.cache.stats().misses >= 1
        assert len(list(d.glob("*.rkc"))) == 1, sorted(p.name for p in d.iterdir())
    # a third context on the first directory loads from it
    with GpuContext(cache_dir=dirs[0]) as ctx:
        ck = ctx.compile_kernel(k, signature="void(float64[::1], float64[::1])")
        assert ck is k
        assert ctx.compiler.cache.stats().hits == 1


def test_illegal_address_is_a_driver_error_with_its_name() -> None:
    script = r'''
import numpy as np
import ringkernel
from ringkernel import DriverError, GpuContext, gpu_kernel
from numba import cuda

@gpu_kernel
def wild(a, offset):
    i = cuda.grid(1)
    if i < a.size:
        a[i + offset] = 1.0   # far out of bounds

a = cuda.to_device(np.zeros(16))
with GpuContext() as ctx:
    ctx.launch(wild, a, 1 << 40)
    try:
        ctx.synchronize()
    except DriverError as exc:
        print("RESULT", exc.result, exc.result_name)
        print("HINT", exc.hint)
    else:
        print("no error")
'''
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env)
    assert "RESULT 700 CUDA_ERROR_ILLEGAL_ADDRESS" in r.stdout, r.stdout + r.stderr[-3000:]
    assert "restart the process" in r.stdout.lower()
