"""Defects an adversarial trial found in the kernel cache (tenth session), each pinned down."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from numba import types

from ringkernel.compile import CacheEntry, CachingCompiler, PtxCache, code_fingerprint
from ringkernel.compile.cache_format import _MAGIC

OPTIONS = {"fastmath": False, "lineinfo": False, "debug": False}

SRC = """
from numba import cuda
@cuda.jit(device=True)
def inner(x):
    return x + 1.0
@cuda.jit(device=True)
def outer(x):
    return inner(x) * 2.0
zop = {op}
def kernel(out):
    out[0] = outer(1.0) + zop(1.0)
"""


def _kernel(op: str, blank_lines: int = 0) -> object:
    g: dict = {}
    exec(compile("\n" * blank_lines + SRC.format(op=op), "<trial>", "exec"), g)  # noqa: S102 - a test's own source
    return g["kernel"]


def test_functions_reached_twice_keep_their_identity(tmp_path: Path) -> None:
    """`outer(x) + zop(x)` computes 6 with zop = inner and 8 with zop = outer: two keys (one
    before, since a function reached again hashed as a bare "<seen>")."""
    a, b = _kernel("inner"), _kernel("outer")
    assert code_fingerprint(a) != code_fingerprint(b)
    cc = CachingCompiler(PtxCache.with_dir(tmp_path), compute_cap="sm_90")
    assert cc.cache_key(a, (types.float64[::1],), OPTIONS) != cc.cache_key(b, (types.float64[::1],), OPTIONS)
    assert code_fingerprint(_kernel("inner")) == code_fingerprint(a)  # (and stable)


def test_line_information_makes_positions_part_of_the_key(tmp_path: Path) -> None:
    here, moved = _kernel("inner"), _kernel("inner", blank_lines=40)
    cc = CachingCompiler(PtxCache.with_dir(tmp_path), compute_cap="sm_90")
    sig = (types.float64[::1],)
    assert cc.cache_key(here, sig, OPTIONS) == cc.cache_key(moved, sig, OPTIONS)  # no line info: the same code
    for opt in ("lineinfo", "debug"):
        o = {**OPTIONS, opt: True}
        assert cc.cache_key(here, sig, o) != cc.cache_key(moved, sig, o)


def _entry_file(tmp_path: Path) -> tuple[PtxCache, CacheEntry, Path]:
    cache = PtxCache.with_dir(tmp_path)
    entry = CacheEntry("a" * 64, "sm_90", "// ptx\n.version 8.0\n" + "x" * 200, b"\x7fELF" + bytes(range(200)))
    path = cache.put_entry(entry)
    assert path is not None
    return cache, entry, path


def test_a_header_that_moves_the_ptx_cubin_split_is_a_miss(tmp_path: Path) -> None:
    cache, entry, path = _entry_file(tmp_path)
    data = path.read_bytes()
    (hlen,) = struct.unpack_from("<I", data, len(_MAGIC))
    start = len(_MAGIC) + 4
    header = json.loads(data[start : start + hlen])
    header["ptx_bytes"] -= 100
    header["cubin_bytes"] += 100
    new = json.dumps(header).encode()
    path.write_bytes(_MAGIC + struct.pack("<I", len(new)) + new + data[start + hlen :])
    assert cache.get_entry(entry.key, entry.compute_cap) is None
    assert cache.stats().hits == 0


def test_an_entry_evicted_at_once_is_reported_as_not_written(tmp_path: Path) -> None:
    cache = PtxCache.with_dir(tmp_path, max_bytes=10)
    entry = CacheEntry("b" * 64, "sm_90", "// ptx", b"\x7fELF" + bytes(100))
    assert cache.put_entry(entry) is None


def test_cli_on_a_cache_path_that_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from ringkernel import cli, config

    f = tmp_path / "f"
    f.write_text("not a directory")
    monkeypatch.setenv("RINGKERNEL_CACHE_DIR", str(f))
    config.reset()
    assert cli.main(["cache", "clear"]) == 1
    assert "not a directory" in capsys.readouterr().err and f.read_text() == "not a directory"
    cli.main(["cache", "stats"])
    out = capsys.readouterr()
    assert "a file of type" not in out.out + out.err
