"""The command line and the examples, run as a user would (subprocesses, no GPU: simulator)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_info_json() -> None:
    out = _run("-m", "ringkernel", "info", "--json")
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert facts["device"] and facts["sm_count"] >= 1 and "numba-cuda" in facts["versions"]


def test_info_text() -> None:
    out = _run("-m", "ringkernel", "info")
    assert out.returncode == 0, out.stderr
    assert "compute_capability" in out.stdout and "max_threads_per_block" in out.stdout


def test_demo_checks_and_times() -> None:
    out = _run("-m", "ringkernel", "demo", "--elements", "2000", "--repeat", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "result matches NumPy: yes" in out.stdout
    assert "mode ElementCentric" in out.stdout and "GB/s" in out.stdout


def test_demo_rejects_bad_size() -> None:
    out = _run("-m", "ringkernel", "demo", "--elements", "0")
    assert out.returncode == 2 and "--elements must be positive" in out.stderr


def test_example_vector_add() -> None:
    out = _run(str(ROOT / "examples" / "vector_add.py"), "500")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "matches NumPy: True" in out.stdout and "grid 2" in out.stdout


def test_cache_commands(tmp_path: Path) -> None:
    import os as _os

    env_dir = tmp_path / "kc"
    old = _os.environ.get("RINGKERNEL_CACHE_DIR")
    _os.environ["RINGKERNEL_CACHE_DIR"] = str(env_dir)
    try:
        from ringkernel.compile import CacheEntry, PtxCache

        PtxCache.with_dir(env_dir).put_entry(CacheEntry(PtxCache.hash_source("k"), "sm_90", "ptx", b"cubin"))
        path = _run("-m", "ringkernel", "cache", "path")
        assert path.returncode == 0 and path.stdout.strip() == str(env_dir)
        stats = _run("-m", "ringkernel", "cache", "stats", "--json")
        assert json.loads(stats.stdout)["entries"] == 1
        clear = _run("-m", "ringkernel", "cache", "clear")
        assert clear.returncode == 0 and "removed 1" in clear.stdout
        assert json.loads(_run("-m", "ringkernel", "cache", "stats", "--json").stdout)["entries"] == 0
    finally:
        if old is None:
            _os.environ.pop("RINGKERNEL_CACHE_DIR", None)
        else:
            _os.environ["RINGKERNEL_CACHE_DIR"] = old


def test_example_memory_pool() -> None:
    out = _run(str(ROOT / "examples" / "memory_pool.py"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "vector add correct: True" in out.stdout and "doubled correctly: True" in out.stdout
    assert "Reduce workload to" in out.stdout


def test_example_streams_async() -> None:
    out = _run(str(ROOT / "examples" / "streams_async.py"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "asyncio.gather of two kernels correct: True" in out.stdout and "pipeline correct: True" in out.stdout


def test_example_kernel_cache() -> None:
    out = _run(str(ROOT / "examples" / "kernel_cache.py"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "miss first: True" in out.stdout and "then a hit: True" in out.stdout
    assert "changes the key" in out.stdout and "(True)" in out.stdout
