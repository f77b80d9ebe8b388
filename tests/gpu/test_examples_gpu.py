"""The examples on a real GPU (each also runs on the simulator in tests/test_cli.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["vector_add.py", "memory_pool.py", "streams_async.py", "kernel_cache.py"])
def test_example_runs_on_the_gpu(name: str) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "simulator" not in r.stdout.lower(), r.stdout
    if name == "kernel_cache.py":
        assert "first process: from cache=False" in r.stdout and "second process: from cache=True" in r.stdout, r.stdout
