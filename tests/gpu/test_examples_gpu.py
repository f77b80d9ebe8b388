"""The examples on a real GPU (each also runs on the simulator in tests/test_cli.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["vector_add.py", "memory_pool.py", "streams_async.py", "kernel_cache.py", "stencil_nd.py", "context.py",
                                  "device_array.py"])
def test_example_runs_on_the_gpu(name: str) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "simulator" not in r.stdout.lower(), r.stdout
    if name == "kernel_cache.py":
        assert "first process: from cache=False" in r.stdout and "second process: from cache=True" in r.stdout, r.stdout


def test_demo_compiles_then_loads_from_the_cache(tmp_path: Path) -> None:
    import os

    env = dict(os.environ, RINGKERNEL_CACHE_DIR=str(tmp_path / "kernels"))
    outs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-m", "ringkernel", "demo", "--elements", "1000003"],
                           capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        outs.append(r.stdout)
    assert "result matches NumPy: yes" in outs[0] and "result matches NumPy: yes" in outs[1]
    assert "compiled by numba" in outs[0], outs[0]
    assert "loaded from the kernel cache" in outs[1], outs[1]
