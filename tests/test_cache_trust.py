"""PtxCache trusts nothing it did not check: owners, modes, links, FIFOs, headers, temp files, shared mode."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from ringkernel import ConfigurationError
from ringkernel.compile import CacheEntry, PtxCache
from ringkernel.compile.cache import CACHE_VERSION, STALE_TEMP_SECONDS, CacheMode

KEY = PtxCache.hash_source("trusted kernel source")
CC = "sm_90"
NOBODY = 65534
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
MAGIC = b"RKCACHE\n"

posix_only = pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX owners and modes")


def _entry() -> CacheEntry:
    return CacheEntry(KEY, CC, "// ptx\n.version 8.0", b"\x7fELF" + bytes(range(200)), {"entry_name": "_Z6kernel"})


def _can_chown() -> bool:
    """Whether this process can give a file to another user (root, or CAP_CHOWN)."""
    if not hasattr(os, "chown"):
        return False
    fd, probe = tempfile.mkstemp()
    os.close(fd)
    try:
        os.chown(probe, NOBODY, -1)
        return True
    except OSError:
        return False
    finally:
        os.unlink(probe)


needs_chown = pytest.mark.skipif(not _can_chown(), reason="cannot create files owned by another user (not root)")
needs_setuid = pytest.mark.skipif(not (IS_ROOT and hasattr(os, "fork")), reason="needs root and fork to act as another user")


def _private_dir(tmp_path: Path, name: str = "c") -> Path:
    d = tmp_path / name
    d.mkdir(mode=0o700)
    d.chmod(0o700)
    return d


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _no_unexpected(caplog: pytest.LogCaptureFixture) -> None:
    assert not any("unexpected error" in m for m in _warnings(caplog)), _warnings(caplog)


# -- the directory ------------------------------------------------------------------------
@posix_only
@pytest.mark.parametrize("perms", [0o777, 0o1777, 0o770, 0o720])
def test_directory_writable_by_others_is_refused_with_one_warning(
    tmp_path: Path, perms: int, caplog: pytest.LogCaptureFixture
) -> None:
    d = _private_dir(tmp_path)
    good = PtxCache.with_dir(d, mode=CacheMode.PRIVATE).put_entry(_entry())  # a valid entry, planted before
    assert good is not None
    d.chmod(perms)
    cache = PtxCache.with_dir(d, mode=CacheMode.PRIVATE)
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            assert cache.get_entry(KEY, CC) is None
            assert cache.put_entry(_entry()) is None
        st = cache.stats()
        assert cache.get(KEY, CC) is None
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "not using" in warnings[0] and "writable by" in warnings[0] and "chmod" in warnings[0]
    assert "RINGKERNEL_CACHE_DIR" in warnings[0]
    assert not st.enabled and st.refused_reason and "writable" in st.refused_reason and st.misses == 3
    assert sorted(p.name for p in d.iterdir()) == [good.name]  # nothing written there


@needs_chown
def test_directory_owned_by_someone_else_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = _private_dir(tmp_path)
    assert PtxCache.with_dir(d).put_entry(_entry()) is not None
    os.chown(d, NOBODY, -1)
    cache = PtxCache.with_dir(d, mode=CacheMode.PRIVATE)
    with caplog.at_level(logging.WARNING):
        assert cache.get_entry(KEY, CC) is None and cache.put_entry(_entry()) is None
    assert len(_warnings(caplog)) == 1 and f"owned by uid {NOBODY}" in caplog.text and "chown" in caplog.text


def test_directory_that_is_a_file_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"x")
    cache = PtxCache.with_dir(f)
    with caplog.at_level(logging.WARNING):
        assert cache.get_entry(KEY, CC) is None and cache.put_entry(_entry()) is None
    assert len(_warnings(caplog)) == 1


class _Lib:
    _entry_name = "_Z1k"

    def get_cubin(self, cc: Any) -> bytes:
        return b"\x7fELF" + bytes(64)

    def get_asm_str(self, cc: Any) -> str:
        return ".version 8.0\n"


class _Compiled:
    _codelibrary = _Lib()
    cooperative = False


class _Dispatcher:
    """What CachingCompiler asks of numba's dispatcher, without numba compiling anything."""

    def __init__(self) -> None:
        self.compiles = 0

    def compile(self, argtypes: Any) -> _Compiled:
        self.compiles += 1
        return _Compiled()


def _kernel(a):  # type: ignore[no-untyped-def]
    a[0] = 1


@posix_only
def test_compiling_still_works_when_the_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from ringkernel.compile import CachingCompiler

    def run(cache: PtxCache) -> tuple[_Dispatcher, list[bool]]:
        compiler = CachingCompiler(cache, compute_cap=CC)
        # Loading needs a driver; what matters here is what the cache gave the compiler.
        monkeypatch.setattr(compiler, "_load", lambda entry, *a, **k: k["from_cache"])
        disp = _Dispatcher()
        return disp, [compiler.load_or_compile(_kernel, (), {}, disp, "k") for _ in range(2)]

    disp, from_cache = run(PtxCache.with_dir(_private_dir(tmp_path, "good")))
    assert (disp.compiles, from_cache) == (1, [False, True])  # the control: a trusted directory hits
    bad = _private_dir(tmp_path, "bad")
    bad.chmod(0o777)
    with caplog.at_level(logging.WARNING):
        disp, from_cache = run(PtxCache.with_dir(bad))
    assert (disp.compiles, from_cache) == (2, [False, False])  # two misses, two compiles
    assert len(_warnings(caplog)) == 1 and list(bad.iterdir()) == []


# -- entries ------------------------------------------------------------------------------
@needs_chown
def test_entry_owned_by_someone_else_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = PtxCache.with_dir(_private_dir(tmp_path), mode=CacheMode.PRIVATE)
    path = cache.put_entry(_entry())
    assert path is not None
    os.chown(path, NOBODY, -1)  # as if another user had planted it under this key
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            assert cache.get_entry(KEY, CC) is None
    assert len(_warnings(caplog)) == 1 and f"owned by uid {NOBODY}" in caplog.text  # warned once, then debug
    assert cache.stats().enabled  # one bad entry does not turn the cache off
    assert cache.put_entry(_entry()) is not None and cache.get_entry(KEY, CC) is not None  # replaced by the next put
    assert path.stat().st_uid == os.geteuid()


@posix_only
@pytest.mark.parametrize("perms", [0o620, 0o602, 0o666])
def test_entry_writable_by_others_is_refused(tmp_path: Path, perms: int, caplog: pytest.LogCaptureFixture) -> None:
    cache = PtxCache.with_dir(_private_dir(tmp_path))
    path = cache.put_entry(_entry())
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(perms)
    with caplog.at_level(logging.WARNING):
        assert cache.get_entry(KEY, CC) is None
    assert "writable by others than its owner" in caplog.text
    path.chmod(0o640)  # readable by the group is fine
    assert cache.get_entry(KEY, CC) is not None


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links")
def test_symlinked_entries_are_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    elsewhere = PtxCache.with_dir(_private_dir(tmp_path, "elsewhere"))
    target = elsewhere.put_entry(_entry())
    assert target is not None and elsewhere.get_entry(KEY, CC) is not None  # a valid entry, and ours
    cache = PtxCache.with_dir(_private_dir(tmp_path))
    link = Path(cache._file(KEY, CC))
    for dest in ("/dev/zero", str(target)):
        if dest == "/dev/zero" and not os.path.exists(dest):
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(dest)
        caplog.clear()
        t = time.perf_counter()
        with caplog.at_level(logging.WARNING):
            assert cache.get_entry(KEY, CC) is None
        assert time.perf_counter() - t < 5 and "symbolic link" in caplog.text
    assert cache.put_entry(_entry()) is not None  # the link is replaced, its target untouched
    assert not link.is_symlink() and cache.get_entry(KEY, CC) is not None
    assert elsewhere.get_entry(KEY, CC) is not None


def _in_thread(fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the lookup blocked"
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_fifo_entry_does_not_block(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = PtxCache.with_dir(_private_dir(tmp_path))
    path = cache._file(KEY, CC)
    os.mkfifo(path, 0o600)
    t = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        assert _in_thread(lambda: cache.get_entry(KEY, CC)) is None
    assert time.perf_counter() - t < 5 and "FIFO" in caplog.text
    assert cache.put_entry(_entry()) is not None and cache.get_entry(KEY, CC) is not None


def test_entry_that_is_a_directory_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = PtxCache.with_dir(_private_dir(tmp_path))
    os.mkdir(cache._file(KEY, CC), 0o700)
    with caplog.at_level(logging.WARNING):
        assert _in_thread(lambda: cache.get_entry(KEY, CC)) is None
    assert "a directory" in caplog.text
    _no_unexpected(caplog)
    assert cache.stats().entries == 0 and cache.clear() == 0 and os.path.isdir(cache._file(KEY, CC))


@pytest.mark.skipif(not hasattr(os, "mknod"), reason="no device nodes")
def test_device_node_entry_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = PtxCache.with_dir(_private_dir(tmp_path))
    path = cache._file(KEY, CC)
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
    except OSError as exc:
        pytest.skip(f"cannot create a device node here: {exc}")
    with caplog.at_level(logging.WARNING):
        assert _in_thread(lambda: cache.get_entry(KEY, CC)) is None
    assert "character device" in caplog.text


def test_oversized_entry_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from ringkernel.compile import cache as cache_mod

    cache = PtxCache(_private_dir(tmp_path), max_entry_bytes=4096)
    path = cache._file(KEY, CC)
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.truncate(1 << 30)  # sparse: 1 GiB that would exhaust memory if read whole
    os.chmod(path, 0o600)

    def no_read(fd: int, limit: int) -> bytes:
        raise AssertionError("an oversized entry must not be read")

    monkeypatch.setattr(cache_mod, "_read_at_most", no_read)
    with caplog.at_level(logging.WARNING):
        assert cache.get_entry(KEY, CC) is None
    assert "more than" in caplog.text
    _no_unexpected(caplog)
    big = CacheEntry(KEY, CC, "x" * 5000)
    assert cache.put_entry(big) is None  # not written: it could never be read back


# -- headers: fuzz ------------------------------------------------------------------------
def _blob(header: Any, payload: bytes, *, raw: bytes | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(header).encode("utf-8")
    return MAGIC + struct.pack("<I", len(text)) + text + payload


def _digest(meta: Any, payload: bytes, nptx: int) -> str:
    """The format's checksum: key, compute capability and PTX length, meta as canonical JSON, a
    NUL byte, the payload (written out here, not imported: the test checks the format)."""
    head = f"{KEY}\0{CC}\0{nptx}\0".encode()
    return hashlib.sha256(head + json.dumps(meta, sort_keys=True, separators=(",", ":")).encode() + b"\0"
                          + payload).hexdigest()  # fmt: skip


def _good_header(payload: bytes, nptx: int) -> dict[str, Any]:
    meta = {"entry_name": "_Z6kernel"}
    return {"format": CACHE_VERSION, "key": KEY, "compute_cap": CC, "sha256": _digest(meta, payload, nptx),
            "ptx_bytes": nptx, "cubin_bytes": len(payload) - nptx, "meta": meta, "created": time.time()}  # fmt: skip


BAD_VALUES: list[Any] = [
    None, True, False, [], [1, 2], {}, {"a": {"b": [1]}}, 10**30, -(10**30), -1, -5, 1.5, -0.5, 1e308, "", "x",
    "0" * 64, "A" * 64, "g" * 64, "ab" * 40, 2**64, [[[[]]]], {"format": 2},
]  # fmt: skip
VALID_VALUES = {("meta", "{}"), ("meta", '{"format": 2}'), ("created", "1.5")}  # among BAD_VALUES, but fine there
BAD_META: list[Any] = [
    [], "meta", 3, {"entry_name": 5}, {"entry_name": ["_Z"]}, {"argtypes": [{}]}, {"argtypes": "int64"},
    {"x": [[1]]}, {"x": {"y": 1}}, {"cooperative": "yes"}, {"code_type": None}, {"indexing": {"ndim": 1}},
    {f"k{i}": i for i in range(100)}, {"x": 10**40}, {"x": [0] * 5000},
]  # fmt: skip
RAW_HEADERS: list[bytes] = [
    b"", b"[]", b"1", b'"s"', b"null", b"{", b"[" * 60000, b'{"a":' * 20000, b"\xff\xfe\x00",
    b"9" * 5000, b'{"format": NaN}', b'{"format": Infinity}', b'{"created": -Infinity}',
    b'{"format": 2, "format": 2}', b'{"format": 1e999}', b'{"format": ' + b"9" * 4000 + b"}",
]  # fmt: skip


def _crafted(payload: bytes, nptx: int) -> list[bytes]:
    out = []
    for fld in ("format", "key", "compute_cap", "sha256", "ptx_bytes", "cubin_bytes", "meta", "created"):
        for v in BAD_VALUES:
            if (fld, json.dumps(v)) in VALID_VALUES:
                continue
            h = _good_header(payload, nptx)
            h[fld] = v
            if fld == "meta":  # a checksum that matches: the type checks must refuse it
                h["sha256"] = _digest(v, payload, nptx)
            out.append(_blob(h, payload))
        h = _good_header(payload, nptx)
        del h[fld]
        if fld not in ("meta", "created"):  # the two optional fields
            out.append(_blob(h, payload))
    for m in BAD_META:
        h = _good_header(payload, nptx)
        h["meta"] = m
        h["sha256"] = _digest(m, payload, nptx)
        out.append(_blob(h, payload))
    h = _good_header(payload, nptx)
    h["extra"] = 1
    out.append(_blob(h, payload))
    for n in (-1, len(payload) + 1, 2**40):  # lengths that do not add up, checksum still right
        h = _good_header(payload, nptx)
        h["ptx_bytes"], h["cubin_bytes"] = n, len(payload) - n
        out.append(_blob(h, payload))
    out += [_blob(None, payload, raw=r) for r in RAW_HEADERS]
    h = json.dumps(_good_header(payload, nptx)).encode()
    for hlen in (0xFFFFFFFF, 65537, len(h) + 1, len(h) - 1, 0):  # header length field lies
        out.append(MAGIC + struct.pack("<I", hlen) + h + payload)
    bad_utf8 = b"\xff\xfe" + payload[2:]  # PTX that is not UTF-8, with a matching checksum
    out.append(_blob(_good_header(bad_utf8, nptx), bad_utf8))
    return out


def test_crafted_headers_are_misses(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = PtxCache.with_dir(_private_dir(tmp_path))
    good = _entry()
    ptx = good.ptx.encode()
    payload = ptx + good.cubin
    path = Path(cache._file(KEY, CC))
    path.write_bytes(_blob(_good_header(payload, len(ptx)), payload))
    path.chmod(0o600)
    assert cache.get_entry(KEY, CC) == good  # the control: the crafting itself makes valid entries
    with caplog.at_level(logging.DEBUG):
        for i, blob in enumerate(_crafted(payload, len(ptx))):
            path.write_bytes(blob)
            assert cache.get_entry(KEY, CC) is None, f"crafted entry #{i} was accepted"
    _no_unexpected(caplog)
    assert caplog.text.count("ignoring") >= 200


def test_fuzzed_entries_never_raise(tmp_path: Path, rng: np.random.Generator, caplog: pytest.LogCaptureFixture) -> None:
    cache = PtxCache.with_dir(_private_dir(tmp_path))
    good = _entry()
    path = cache.put_entry(good)
    assert path is not None
    base = path.read_bytes()
    hlen = struct.unpack_from("<I", base, len(MAGIC))[0]
    with caplog.at_level(logging.DEBUG):
        for _ in range(600):
            data = bytearray(base)
            kind = rng.integers(4)
            if kind == 0:  # flip bytes anywhere
                for _ in range(int(rng.integers(1, 9))):
                    data[int(rng.integers(len(data)))] ^= int(rng.integers(1, 256))
            elif kind == 1:  # flip bytes inside the header (the JSON)
                for _ in range(int(rng.integers(1, 5))):
                    data[len(MAGIC) + 4 + int(rng.integers(hlen))] = int(rng.integers(256))
            elif kind == 2:  # truncate
                del data[int(rng.integers(len(data))) :]
            else:  # insert random bytes
                at = int(rng.integers(len(data)))
                data[at:at] = rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8).tobytes()
            path.write_bytes(bytes(data))
            got = cache.get_entry(KEY, CC)  # must not raise
            assert got is None or got == good  # a flip inside "created" can leave a valid entry
    _no_unexpected(caplog)


def test_meta_that_could_not_be_read_back_is_not_written(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = _private_dir(tmp_path)
    cache = PtxCache.with_dir(d)
    for meta in ({"entry_name": 5}, {"x": {"nested": 1}}, {"x": float("nan")}, {1: "x"}):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert cache.put_entry(CacheEntry(KEY, CC, "p", b"", meta)) is None  # type: ignore[arg-type]
        assert "not caching" in caplog.text and "meta" in caplog.text
    assert list(d.iterdir()) == []
    meta = {"entry_name": "_Z1k", "name": "k", "argtypes": ["float32"], "cooperative": False, "code_type": "cubin",
            "indexing": "{}", "n": 3, "f": 0.5, "none": None}  # fmt: skip
    cache.put_entry(CacheEntry(KEY, CC, "p", b"c", meta))
    got = cache.get_entry(KEY, CC)
    assert got is not None and dict(got.meta) == meta


# -- temp files ---------------------------------------------------------------------------
def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_writer_temp_files_are_recognisably_the_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _private_dir(tmp_path)
    cache = PtxCache.with_dir(d)
    seen: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        seen.extend(os.listdir(d))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    assert cache.put_entry(_entry()) is not None
    assert len(seen) == 1 and re.fullmatch(r"\.rkc-[a-z0-9_]+\.tmp", seen[0]), seen


def test_stale_temp_files_are_removed_and_counted(tmp_path: Path) -> None:
    d = _private_dir(tmp_path)
    cache = PtxCache.with_dir(d)
    assert cache.put_entry(_entry()) is not None
    stale = d / ".rkc-abc123_x.tmp"
    legacy = d / f".{KEY}-{CC}.rkc.k2j4h5g6.tmp"  # what an older ringkernel named its temp files
    fresh = d / ".rkc-inflight.tmp"
    foreign = [d / "foo.tmp", d / ".foo.tmp", d / ".rkc-notes.txt", d / "notes.txt", d / ".rkc-x.tmp.bak"]
    for p in (stale, legacy, fresh, *foreign):
        p.write_bytes(b"partial")
    for p in (stale, legacy, *foreign):
        _age(p, 2 * 3600)
    _age(fresh, STALE_TEMP_SECONDS / 2)
    st = cache.stats()
    assert (st.stale_temp_removed, st.temp_files, st.entries) == (2, 1, 1)
    assert not stale.exists() and not legacy.exists() and fresh.exists()
    assert cache.clear() == 1  # the entry
    left = sorted(p.name for p in d.iterdir())
    assert left == sorted(p.name for p in (fresh, *foreign))  # a write in progress and others' files stay
    _age(fresh, 2 * 3600)
    assert cache.clear() == 0 and not fresh.exists()
    assert cache.stats().stale_temp_removed == 3
    assert sorted(p.name for p in d.iterdir()) == sorted(p.name for p in foreign)


def test_put_removes_stale_temp_files(tmp_path: Path) -> None:
    d = _private_dir(tmp_path)
    stale = d / ".rkc-killed1.tmp"
    stale.write_bytes(b"half an entry")
    _age(stale, 2 * 3600)
    cache = PtxCache.with_dir(d)
    assert cache.put_entry(_entry()) is not None
    assert not stale.exists() and cache.stats().stale_temp_removed == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_killed_writers_temp_file_is_cleaned_up(tmp_path: Path) -> None:
    d = _private_dir(tmp_path)
    pid = os.fork()
    if pid == 0:  # the writer, killed between writing and renaming
        try:
            os.fsync = lambda fd: os._exit(9)  # type: ignore[assignment]
            PtxCache.with_dir(d).put_entry(_entry())
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    (tmp,) = d.iterdir()
    assert tmp.name.startswith(".rkc-") and tmp.name.endswith(".tmp")
    cache = PtxCache.with_dir(d)
    assert cache.stats().temp_files == 1 and tmp.exists()  # young: might be a write in progress
    _age(tmp, STALE_TEMP_SECONDS + 60)
    st = cache.stats()
    assert (st.temp_files, st.stale_temp_removed) == (0, 1) and list(d.iterdir()) == []


# -- the shared mode ----------------------------------------------------------------------
def test_shared_mode_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ringkernel import config

    assert PtxCache(tmp_path).mode is CacheMode.PRIVATE
    monkeypatch.setenv("RINGKERNEL_CACHE_SHARED", "1")
    config.reset()
    assert PtxCache(tmp_path).mode is CacheMode.SHARED
    assert PtxCache(tmp_path, mode=CacheMode.PRIVATE).mode is CacheMode.PRIVATE  # an explicit mode wins
    monkeypatch.setenv("RINGKERNEL_CACHE_SHARED", "yes")
    config.reset()
    with pytest.raises(ConfigurationError, match="RINGKERNEL_CACHE_SHARED"):
        PtxCache(tmp_path)
    with pytest.raises(ConfigurationError, match="CacheMode"):
        PtxCache(tmp_path, mode="shared")  # type: ignore[arg-type]


@posix_only
def test_shared_mode_writes_group_readable_entries(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "shared"
    d.mkdir()
    os.chown(d, -1, os.getegid())
    d.chmod(0o2770)
    cache = PtxCache.with_dir(d, mode=CacheMode.SHARED)
    path = cache.put_entry(_entry())
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert cache.get_entry(KEY, CC) == _entry() and cache.stats().enabled
    with caplog.at_level(logging.WARNING):  # the same directory, private: group-writable is refused
        assert PtxCache.with_dir(d, mode=CacheMode.PRIVATE).get_entry(KEY, CC) is None
    assert "RINGKERNEL_CACHE_SHARED=1" in caplog.text
    d.chmod(0o2777)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        refused = PtxCache.with_dir(d, mode=CacheMode.SHARED)
        assert refused.get_entry(KEY, CC) is None and refused.put_entry(_entry()) is None
    assert len(_warnings(caplog)) == 1 and "writable by everyone" in caplog.text and "chmod" in caplog.text


@posix_only
def test_shared_mode_creates_its_directory_for_the_group(tmp_path: Path) -> None:
    parent = _private_dir(tmp_path, "p")
    cache = PtxCache.with_dir(parent / "new", mode=CacheMode.SHARED)
    assert cache.put_entry(_entry()) is not None and cache.get_entry(KEY, CC) is not None
    perms = stat.S_IMODE((parent / "new").stat().st_mode)
    assert perms & 0o700 == 0o700 and not perms & 0o007


def _as_other_user(gid: int, fn: Callable[[], bool]) -> int:
    """Run ``fn`` in a child process as uid 65534 in group ``gid``: 0 if it returned True,
    2 if False, 3 if the child could not become that user."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            try:
                os.setgroups([gid])
                os.setgid(gid)
                os.setuid(NOBODY)
            except OSError:
                code = 3
            else:
                code = 0 if fn() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@needs_setuid
def test_shared_mode_accepts_entries_of_the_directorys_group(caplog: pytest.LogCaptureFixture) -> None:
    gid = os.getegid()
    # Not under pytest's tmp_path: its parents are private to root, and the other user must reach it.
    d = Path(tempfile.mkdtemp(prefix="rk-shared-"))
    try:
        os.chown(d, -1, gid)
        d.chmod(0o2770)
        if _as_other_user(gid, lambda: True) == 3:
            pytest.skip("cannot switch to another uid here (no CAP_SETUID)")
        assert _as_other_user(gid, lambda: PtxCache.with_dir(d, mode=CacheMode.SHARED).put_entry(_entry()) is not None) == 0
        path = Path(PtxCache.with_dir(d)._file(KEY, CC))
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, gid, 0o640)
        shared = PtxCache.with_dir(d, mode=CacheMode.SHARED)
        assert shared.get_entry(KEY, CC) == _entry()  # another member's entry
        with caplog.at_level(logging.WARNING):
            assert PtxCache.with_dir(d, mode=CacheMode.PRIVATE).get_entry(KEY, CC) is None
        # ... and the other member reads ours.
        os.unlink(path)
        assert shared.put_entry(_entry()) is not None
        assert _as_other_user(gid, lambda: PtxCache.with_dir(d, mode=CacheMode.SHARED).get_entry(KEY, CC) == _entry()) == 0
        # Refused: another user's entry not group-owned by the directory's group, or group-writable.
        os.chown(path, NOBODY, NOBODY)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert shared.get_entry(KEY, CC) is None
        assert "not the directory's group" in caplog.text
        os.chown(path, NOBODY, gid)
        path.chmod(0o660)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert shared.get_entry(KEY, CC) is None
        assert "writable by others than its owner" in caplog.text
        path.chmod(0o640)
        assert shared.get_entry(KEY, CC) == _entry()
        d.chmod(0o2777)  # the directory opened up after it was checked: others' entries are refused
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert shared.get_entry(KEY, CC) is None
        assert "writable by everyone" in caplog.text
    finally:
        shutil.rmtree(d, ignore_errors=True)


@needs_chown
def test_shared_mode_refuses_a_directory_of_a_group_you_are_not_in(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    if NOBODY in os.getgroups() or os.getegid() == NOBODY:
        pytest.skip("this process is in group 65534")
    d = tmp_path / "theirs"
    d.mkdir()
    os.chown(d, NOBODY, NOBODY)
    d.chmod(0o2770)
    with caplog.at_level(logging.WARNING):
        assert PtxCache.with_dir(d, mode=CacheMode.SHARED).get_entry(KEY, CC) is None
    assert "is not one of yours" in caplog.text and "chgrp" in caplog.text
