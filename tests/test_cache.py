"""PtxCache and the cache key: robustness on disk (runs in CI; no GPU needed)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import stat
import sys
from pathlib import Path

import pytest

from ringkernel import ConfigurationError
from ringkernel.compile import CACHE_VERSION, CacheEntry, PtxCache, code_fingerprint

KEY = PtxCache.hash_source("kernel source")
CC = "sm_90"


def _entry(ptx: str = "// ptx\n.version 8.0", cubin: bytes = b"\x7fELF" + bytes(range(200))) -> CacheEntry:
    return CacheEntry(KEY, CC, ptx, cubin, {"entry_name": "_Z6kernel"})


def test_roundtrip_and_stats(tmp_path: Path) -> None:
    cache = PtxCache.with_dir(tmp_path / "c")
    assert cache.get(KEY, CC) is None
    cache.put_entry(_entry())
    got = cache.get_entry(KEY, CC)
    assert got is not None and got.cubin == _entry().cubin and got.meta["entry_name"] == "_Z6kernel"
    assert cache.get(KEY, CC) == _entry().ptx
    st = cache.stats()
    assert (st.entries, st.hits, st.misses) == (1, 2, 1) and st.hit_rate == pytest.approx(2 / 3) and st.bytes > 200
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o700  # owner-only
    assert cache.clear() == 1 and cache.stats().entries == 0


def test_proposal_ptx_api(tmp_path: Path) -> None:
    cache = PtxCache.with_dir(tmp_path)
    cache.put(KEY, "sm_80", ".version 8.0")
    assert cache.get(KEY, "sm_80") == ".version 8.0" and cache.get(KEY, "sm_90") is None
    assert len(PtxCache.hash_source("x")) == 64 and PtxCache.hash_source("x") != PtxCache.hash_source("y")
    assert isinstance(CACHE_VERSION, int)


def _corrupt_variants(path: Path) -> list[bytes]:
    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[-5] ^= 0xFF
    return [b"", good[: len(good) // 2], good[:10], bytes(flipped), b"not a cache file at all", good + b"extra"]


def test_corrupt_truncated_empty_foreign_entries_are_misses(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = PtxCache.with_dir(tmp_path)
    path = cache.put_entry(_entry())
    assert path is not None
    for bad in _corrupt_variants(path):
        path.write_bytes(bad)
        with caplog.at_level(logging.WARNING):
            assert cache.get_entry(KEY, CC) is None
        assert "ignoring" in caplog.text
        caplog.clear()
        cache.put_entry(_entry())  # replaced by the next put
        assert cache.get_entry(KEY, CC) is not None


def test_entry_under_wrong_name_is_a_miss(tmp_path: Path) -> None:
    cache = PtxCache.with_dir(tmp_path)
    other = PtxCache.hash_source("other")
    path = cache.put_entry(_entry())
    assert path is not None
    path.rename(tmp_path / f"{other}-{CC}.rkc")
    assert cache.get_entry(other, CC) is None


def test_bad_keys_refused(tmp_path: Path) -> None:
    cache = PtxCache.with_dir(tmp_path)
    for key, cc in (("../../etc/passwd", CC), ("", CC), (KEY, "sm 90"), (KEY, "../x")):
        with pytest.raises(ConfigurationError):
            cache.get(key, cc)
    with pytest.raises(ConfigurationError):
        PtxCache(tmp_path, max_bytes=0)


def test_disabled_cache(tmp_path: Path) -> None:
    cache = PtxCache.disabled()
    assert cache.put_entry(_entry()) is None and cache.get(KEY, CC) is None and not cache.stats().enabled


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else False, reason="root ignores permissions")
def test_read_only_directory_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        cache = PtxCache.with_dir(d)
        with caplog.at_level(logging.WARNING):
            assert cache.put_entry(_entry()) is None
            assert cache.put_entry(_entry()) is None
        assert caplog.text.count("cannot write") == 1
    finally:
        d.chmod(0o700)


def test_unwritable_directory_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A path under a regular file can never be created, root or not: stands in for read-only
    # and full file systems (the same OSError path).
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = PtxCache.with_dir(blocker / "cache")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert cache.put_entry(_entry()) is None
    assert caplog.text.count("cannot write") == 1 and "RINGKERNEL_CACHE_DIR" in caplog.text
    assert cache.get_entry(KEY, CC) is None


def test_full_disk_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    cache = PtxCache.with_dir(tmp_path)

    def no_space(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with caplog.at_level(logging.WARNING):
        assert cache.put_entry(_entry()) is None
    assert "No space left" in caplog.text
    assert [p for p in tmp_path.iterdir()] == []  # the temp file was removed


def test_lru_eviction(tmp_path: Path) -> None:
    size = len(_entry().cubin) + 500
    cache = PtxCache.with_dir(tmp_path, max_bytes=3 * size)
    keys = [PtxCache.hash_source(str(i)) for i in range(5)]
    for i, k in enumerate(keys):
        cache.put_entry(CacheEntry(k, CC, "p", _entry().cubin))
        os.utime(tmp_path / f"{k}-{CC}.rkc", (1000 + i, 1000 + i))
        if i == 1:
            cache.get_entry(keys[0], CC)  # touch: keys[0] becomes recently used
            os.utime(tmp_path / f"{keys[0]}-{CC}.rkc", (1001.5, 1001.5))
    cache.put_entry(CacheEntry(keys[4], CC, "p", _entry().cubin))
    assert cache.stats().bytes <= 3 * size
    remaining = {p.name.split("-")[0] for p in tmp_path.iterdir()}
    assert keys[4] in remaining and keys[1] not in remaining


def _writer(args: tuple[str, int]) -> None:
    d, seed = args
    cache = PtxCache.with_dir(d)
    for i in range(50):
        cache.put_entry(CacheEntry(KEY, CC, f"ptx from {seed} #{i}" * 50, bytes([seed % 256]) * 5000, {"entry_name": "k"}))


def test_concurrent_writers_leave_a_valid_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork")
    with ctx.Pool(4) as pool:
        pool.map(_writer, [(str(tmp_path), s) for s in range(4)])
    got = PtxCache.with_dir(tmp_path).get_entry(KEY, CC)
    assert got is not None and got.ptx.startswith("ptx from") and len(set(got.cubin)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [f"{KEY}-{CC}.rkc"]  # no temp files left behind


# -- the key ------------------------------------------------------------------------------
def test_fingerprint_follows_device_functions(tmp_path: Path) -> None:
    src = '''
from numba import cuda
SCALE = {scale}

@cuda.jit(device=True)
def helper(x):
    return x * {factor}

def kernel(a):
    i = cuda.grid(1)
    if i < a.size:
        a[i] = helper(a[i]) + SCALE  # a comment: {comment}
'''

    def load(scale: int, factor: int, comment: str) -> str:
        ns: dict = {}
        exec(compile(src.format(scale=scale, factor=factor, comment=comment), f"k{scale}{factor}{comment}.py", "exec"), ns)
        return code_fingerprint(ns["kernel"])

    base = load(1, 2, "x")
    assert load(1, 2, "x") == base
    assert load(1, 2, "an edited comment") == base  # comments do not change the code
    assert load(1, 3, "x") != base  # editing the called device function's body is a miss
    assert load(5, 2, "x") != base  # a constant the kernel reads


def test_settings_cache_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ringkernel import config
    from ringkernel.compile import default_cache_dir

    monkeypatch.setenv("RINGKERNEL_CACHE_DIR", str(tmp_path / "mine"))
    config.reset()
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("RINGKERNEL_CACHE_DIR")
    config.reset()
    assert default_cache_dir().name == "ringkernel"


def test_kernel_from_source_runs_and_fingerprints(rng) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    from numba import cuda

    from ringkernel import kernel_from_source

    src = """
    def triple(x, out):
        for i in range(global_thread_id(), x.size, grid_stride()):
            out[i] = 3 * x[i]
    """
    k = kernel_from_source(src)
    assert k.name == "triple"
    x = rng.standard_normal(50)
    out = cuda.device_array(50)
    k[1, 64](cuda.to_device(x), out)
    np.testing.assert_allclose(out.copy_to_host(), 3 * x)
    assert code_fingerprint(k.py_func) == code_fingerprint(kernel_from_source(src).py_func)
    assert code_fingerprint(k.py_func) != code_fingerprint(kernel_from_source(src.replace("3 *", "4 *")).py_func)
    with pytest.raises(ConfigurationError, match="expected one"):
        kernel_from_source("def a(x): pass\ndef b(x): pass")
    assert kernel_from_source("def a(x): pass\ndef b(x): pass", name="b").name == "b"
    with pytest.raises(ConfigurationError, match="does not parse"):
        kernel_from_source("def (")


def test_fingerprint_follows_device_functions_in_other_modules(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import importlib
    import sys

    pkg = tmp_path / "fpmods"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    helper_src = "from numba import cuda\n\n@cuda.jit(device=True)\ndef helper(x):\n    return x * {k}\n"
    (pkg / "lib.py").write_text(helper_src.format(k=2))
    (pkg / "kern.py").write_text("from fpmods import lib\n\ndef kernel(a):\n    a[0] = lib.helper(a[0])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fpmods.kern as kern  # type: ignore[import-not-found]

    before = code_fingerprint(kern.kernel)
    (pkg / "lib.py").write_text(helper_src.format(k=3))
    importlib.reload(sys.modules["fpmods.lib"])
    assert code_fingerprint(kern.kernel) != before  # the helper's body changed behind `lib.`


def test_compiler_set_up_is_timed_and_the_default_one_skips_gpu_set_up_on_the_simulator(tmp_path: Path) -> None:
    from ringkernel.compile import CachingCompiler, compiler

    c = CachingCompiler(PtxCache.with_dir(tmp_path), compute_cap="sm_90")
    assert c.setup_ms >= 0 and c.cache.cache_dir == tmp_path
    compiler.reset()
    try:
        d = compiler.default_compiler()  # on the simulator: no driver to prepare
        assert d is compiler.default_compiler() and d.setup_ms >= 0
    finally:
        compiler.reset()
