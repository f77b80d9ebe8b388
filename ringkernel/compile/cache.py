"""``PtxCache``: compiled kernels (PTX and the linked cubin) on disk, trusted only after they are checked.

One file per key, ``<key>-<compute capability>.rkc``::

    b"RKCACHE\\n"                 magic
    4 bytes, little endian        length of the header (at most 64 KiB)
    header (JSON, UTF-8)          {"format", "key", "compute_cap", "sha256", "ptx_bytes",
                                   "cubin_bytes", "meta", "created"}
    payload                       PTX bytes, then cubin bytes

``sha256`` is the SHA-256 of ``meta`` as canonical JSON (sorted keys, no spaces, ASCII), a
NUL byte, and the payload: the entry name the driver is asked for is covered too. The
other header fields are compared with what the reader expects.

What is loaded is passed to ``cuModuleLoadData``, so nothing in the directory is trusted
before it is checked (docs/cache.md, "Trust model"):

* the directory must be owned by the current user and writable by no one else; in the
  shared mode (:attr:`CacheMode.SHARED`, ``RINGKERNEL_CACHE_SHARED=1``) it must be
  group-owned by one of the user's groups and not world-writable. A directory that fails
  turns the cache off with one warning saying why and what to do; compiling still works;
* an entry is opened without following symbolic links and without blocking, and must be a
  regular file owned by the current user (shared mode: or group-owned by the directory's
  group), writable by its owner only, and not larger than the limits; it is read with a
  size bound;
* every header field is type- and range-checked, and the payload's SHA-256 must match.

Anything that fails is a miss: logged (a warning once per file version, then debug),
never loaded, never an exception to the caller, and replaced by the next ``put``. Writes go
to a temp file named ``.rkc-*.tmp`` in the same directory and are ``os.replace``d into
place, so readers and concurrent writers only ever see whole entries; temp files of
killed writers are removed once they are an hour old. An unwritable directory (read-only,
full) turns caching off for that cache object with one warning; compiling still works.

The format and its checks live in ``cache_format.py``; ``CacheMode`` and the directory
checks in ``cache_trust.py``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import stat
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._fileio import PRIVATE_MODE, atomic_write_bytes
from ..config import cache_root, settings  # at import: a first import here cost 1.5 ms inside the first cache hit
from ..errors import ConfigurationError
from .cache_format import _MAGIC, _MAX_HEADER, CACHE_VERSION, CacheEntry, _digest, _meta_problem, _parse_entry
from .cache_trust import _GROUP_OR_OTHER_WRITE, CacheMode, _dir_problem, _kind

__all__ = [
    "CACHE_VERSION", "CacheMode", "PtxCache", "CacheEntry", "PtxCacheStats", "default_cache_dir",
    "DEFAULT_MAX_ENTRY_BYTES", "STALE_TEMP_SECONDS",
]  # fmt: skip

log = logging.getLogger(__name__)

#: Largest payload (PTX + cubin) an entry may hold unless ``max_entry_bytes`` says otherwise.
DEFAULT_MAX_ENTRY_BYTES = 256 << 20
#: Temp files of the cache older than this (seconds) belong to killed writers and are removed.
STALE_TEMP_SECONDS = 3600.0

_HEX = re.compile(r"[0-9a-fA-F]+")
_CC = re.compile(r"\w+", re.ASCII)
_SUFFIX = ".rkc"
_ENTRY_NAME = re.compile(r"[0-9a-fA-F]+-\w+\.rkc", re.ASCII)
_TEMP_PREFIX = ".rkc-"
_TEMP_SUFFIX = ".tmp"
# The cache's own temp files: this version's (``.rkc-<random>.tmp``) and those of older
# ringkernels (``.<key>-<cc>.rkc.<random>.tmp``); tempfile's random part is [a-z0-9_].
_TEMP_NAME = re.compile(r"\.rkc-[a-z0-9_]+\.tmp|\.[0-9a-fA-F]+-\w+\.rkc\.[a-z0-9_]+\.tmp", re.ASCII)
_SWEEP_INTERVAL = 600.0  # a put looks for stale temp files at most this often (seconds)

# No symbolic link is followed at the last component, and a FIFO does not block the open.
_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)  # fmt: skip
_HAVE_NOFOLLOW = hasattr(os, "O_NOFOLLOW")


def default_cache_dir() -> Path:
    """``RINGKERNEL_CACHE_DIR`` if set, else platformdirs' user cache dir + ``ringkernel``."""
    return cache_root()


@dataclass(frozen=True)
class PtxCacheStats:
    """Entries and bytes on disk; hits and misses of this cache object.

    ``enabled`` is False when the cache was created disabled or its directory was refused
    (``refused_reason`` says why). ``temp_files`` counts the cache's temp files present
    now (writes in progress); ``stale_temp_removed`` how many temp files of killed writers
    (older than an hour) this cache object has removed.
    """

    entries: int
    bytes: int
    hits: int
    misses: int
    enabled: bool
    directory: str | None
    temp_files: int = 0
    stale_temp_removed: int = 0
    refused_reason: str | None = None

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class PtxCache:
    """File-based cache of compiled kernels.

    Parameters
    ----------
    cache_dir:
        Directory (created on first write: 0700, or 0770 less the umask in the shared
        mode). ``None``: :func:`default_cache_dir`.
    max_bytes:
        Optional size cap; after a ``put`` the least recently used entries are evicted
        until the cache fits. Loading an entry marks it used.
    enabled:
        ``False`` makes every ``get`` a miss and every ``put`` a no-op.
    mode:
        :attr:`CacheMode.PRIVATE` or :attr:`CacheMode.SHARED`; ``None``: shared when
        ``RINGKERNEL_CACHE_SHARED=1``, else private.
    max_entry_bytes:
        Largest payload (PTX + cubin) written or read; larger files are refused unread.
    """

    def __init__(
        self, cache_dir: str | os.PathLike[str] | None = None, *, max_bytes: int | None = None, enabled: bool = True,
        mode: CacheMode | None = None, max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    ) -> None:  # fmt: skip
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0):
            raise ConfigurationError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        if isinstance(max_entry_bytes, bool) or not isinstance(max_entry_bytes, int) or max_entry_bytes <= 0:
            raise ConfigurationError(f"max_entry_bytes must be a positive int, got {max_entry_bytes!r}")
        if mode is None:
            mode = CacheMode.SHARED if settings().cache_shared else CacheMode.PRIVATE
        elif not isinstance(mode, CacheMode):
            raise ConfigurationError(
                f"mode must be a CacheMode, got {mode!r}", hint="pass CacheMode.PRIVATE or CacheMode.SHARED"
            )
        # Resolved now, not at the first lookup: a cache object keeps its directory, and the
        # lookup on a kernel's first launch does no configuration work.
        if cache_dir is not None:
            self._dir: Path | None = Path(cache_dir).expanduser()
        else:
            self._dir = default_cache_dir() if enabled else None
        self._dir_str = str(self._dir) if self._dir is not None else ""
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.enabled = enabled
        self.mode = mode
        self._file_mode = 0o640 if mode is CacheMode.SHARED else PRIVATE_MODE
        self._euid: int | None = os.geteuid() if hasattr(os, "geteuid") else None  # None: no POSIX owners
        self._hits = 0
        self._misses = 0
        self._warned = False
        self._dir_ok = False  # passed the checks; kept: only its owner can change its mode (see _entry_problem)
        self._refused: str | None = None  # why the directory was refused; the cache is off
        self._noted: set[tuple[Any, ...]] = set()  # refusals already warned about
        self._stale_removed = 0
        self._last_sweep = 0.0
        self._lock = threading.Lock()

    # -- constructors (the design proposal's names) ------------------------------------
    @classmethod
    def with_dir(
        cls, cache_dir: str | os.PathLike[str], *, max_bytes: int | None = None, mode: CacheMode | None = None
    ) -> "PtxCache":
        return cls(cache_dir, max_bytes=max_bytes, mode=mode)

    @classmethod
    def disabled(cls) -> "PtxCache":
        return cls(enabled=False)

    @property
    def cache_dir(self) -> Path:
        if self._dir is None:  # a disabled cache asked for its directory
            self._dir = default_cache_dir()
            self._dir_str = str(self._dir)
        return self._dir

    @staticmethod
    def hash_source(source: str | bytes) -> str:
        """SHA-256 of ``source`` as 64 hex digits."""
        data = source.encode("utf-8") if isinstance(source, str) else bytes(source)
        return hashlib.sha256(data).hexdigest()

    # -- paths --------------------------------------------------------------------------
    def _path(self, key: str, compute_cap: str) -> Path:
        return Path(self._file(key, compute_cap))

    def _file(self, key: str, compute_cap: str) -> str:
        if not isinstance(key, str) or not _HEX.fullmatch(key):
            raise ConfigurationError(f"cache key must be a hex digest, got {key!r}", hint="use PtxCache.hash_source()")
        if not isinstance(compute_cap, str) or not _CC.fullmatch(compute_cap):
            raise ConfigurationError(f"compute capability must look like 'sm_90' or 'sm_90a', got {compute_cap!r}")
        return os.path.join(self._dir_str or str(self.cache_dir), f"{key}-{compute_cap}{_SUFFIX}")

    # -- the proposal's PTX API ----------------------------------------------------------
    def get(self, source_hash: str, compute_cap: str) -> str | None:
        """Cached PTX for ``source_hash`` on ``compute_cap`` (``"sm_90"``), or ``None``."""
        entry = self.get_entry(source_hash, compute_cap)
        return entry.ptx if entry is not None else None

    def put(self, source_hash: str, compute_cap: str, ptx: str) -> None:
        """Store PTX (no cubin)."""
        self.put_entry(CacheEntry(source_hash, compute_cap, ptx))

    # -- trust --------------------------------------------------------------------------
    def _check_dir(self) -> bool:
        """Whether the directory may be used. A refusal turns the cache off, with one warning."""
        if self._dir_ok:
            return True
        if self._refused is not None:
            return False
        try:
            st = os.stat(self._dir_str or str(self.cache_dir))
        except OSError:
            return False  # absent (a put creates it) or unreachable (a put reports it): a miss
        problem = _dir_problem(st, self.mode, self._euid)
        if problem is None:
            self._dir_ok = True
            return True
        why, fix = problem
        self._refused = why
        with self._lock:
            warned, self._warned = self._warned, True
        if not warned:
            shared = self.mode is CacheMode.SHARED
            log.warning(
                "ringkernel cache: not using %s: %s; kernels will be compiled but not cached. To use it, %s; "
                "or set RINGKERNEL_CACHE_DIR to a directory %s (docs/cache.md, \"Trust model\").",
                self._dir_str, why, fix,
                "of your group that others cannot write" if shared else "that only you can write",
            )  # fmt: skip
        return False

    def _entry_problem(self, st: os.stat_result) -> str | None:
        """Why the opened file ``st`` must not be loaded, or ``None``."""
        if not stat.S_ISREG(st.st_mode):
            return f"it is not a regular file but {_kind(st.st_mode)}"
        limit = len(_MAGIC) + 4 + _MAX_HEADER + self.max_entry_bytes
        if st.st_size > limit:
            return f"it is {st.st_size} bytes, more than the {limit} an entry may have (max_entry_bytes)"
        euid = self._euid
        if euid is None:
            return None
        if st.st_mode & _GROUP_OR_OTHER_WRITE:
            return f"it is writable by others than its owner (mode {stat.S_IMODE(st.st_mode):04o})"
        if st.st_uid == euid:
            return None
        if self.mode is CacheMode.PRIVATE:
            return f"it is owned by uid {st.st_uid}, not by you (uid {euid})"
        # Shared: another user's entry, if the directory (looked at again now: its mode may
        # have changed since it was checked) still keeps out everyone outside its group.
        try:
            dst = os.stat(self._dir_str)
        except OSError as exc:
            return f"its directory cannot be checked ({exc})"
        if not stat.S_ISDIR(dst.st_mode) or dst.st_mode & stat.S_IWOTH:
            return "it belongs to another user and the directory is now writable by everyone"
        if st.st_gid != dst.st_gid:
            return f"it is owned by uid {st.st_uid} and group {st.st_gid}, not the directory's group {dst.st_gid}"
        return None

    def _note(self, path: str, why: str, st: os.stat_result | None = None) -> None:
        """Log a refused entry: a warning once per file version and reason, then debug."""
        ident = (path, why) if st is None else (path, why, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            first = ident not in self._noted
            if first:
                if len(self._noted) >= 4096:
                    self._noted.clear()
                self._noted.add(ident)
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "ringkernel cache: ignoring %s: %s (compiling instead; the next compile replaces it)", path, why,
        )  # fmt: skip

    # -- entries ------------------------------------------------------------------------
    def get_entry(self, key: str, compute_cap: str) -> CacheEntry | None:
        """The whole entry, checked; ``None`` (a miss) if absent, untrusted, unreadable or corrupt."""
        if not self.enabled:
            self._count(hit=False)
            return None
        path = self._file(key, compute_cap)  # a str: pathlib costs more than the read itself here
        if not self._dir_ok and not self._check_dir():
            self._count(hit=False)
            return None
        try:
            entry = self._read(path, key, compute_cap)
        except Exception as exc:  # noqa: BLE001 - the cache only saves time: a failure in it must not stop a compile
            log.warning("ringkernel cache: unexpected error reading %s (%s: %s); compiling instead",
                        path, type(exc).__name__, exc)  # fmt: skip
            entry = None
        self._count(hit=entry is not None)
        return entry

    def _read(self, path: str, key: str, compute_cap: str) -> CacheEntry | None:
        if not _HAVE_NOFOLLOW:  # pragma: no cover - Windows: look before opening instead
            try:
                if stat.S_ISLNK(os.lstat(path).st_mode):
                    self._note(path, "it is a symbolic link")
                    return None
            except FileNotFoundError:
                return None
            except OSError:
                pass
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            try:
                lst: os.stat_result | None = os.lstat(path)
            except OSError:
                lst = None
            if exc.errno in (errno.ELOOP, errno.EMLINK) or (lst is not None and stat.S_ISLNK(lst.st_mode)):
                self._note(path, "it is a symbolic link", lst)
            else:
                self._note(path, f"it cannot be opened ({exc.strerror or exc})", lst)
            return None
        try:
            st = os.fstat(fd)
            why = self._entry_problem(st)
            if why is not None:
                self._note(path, why, st)
                return None
            data = _read_at_most(fd, st.st_size + 1)
            if len(data) > st.st_size:
                self._note(path, "it grew while it was read", st)
                return None
            entry = self._decode(data, key, compute_cap, path, st)
            if entry is not None and self.max_bytes is not None:
                try:
                    os.utime(fd if os.utime in os.supports_fd else path)  # mark used, for LRU eviction
                except OSError:
                    pass
            return entry
        finally:
            os.close(fd)

    def _decode(
        self, data: bytes, key: str, compute_cap: str, path: str | Path, st: os.stat_result | None = None
    ) -> CacheEntry | None:
        entry = _parse_entry(data, key, compute_cap, self.max_entry_bytes)
        if isinstance(entry, str):
            self._note(str(path), entry, st)
            return None
        return entry

    def put_entry(self, entry: CacheEntry) -> Path | None:
        """Write ``entry`` atomically; returns its path, or ``None`` if caching is off or failed.

        An entry that could not be read back (``meta`` holding other values than
        :class:`CacheEntry` allows, or larger than ``max_entry_bytes``) is not written, with
        a log message.

        Raises
        ------
        ConfigurationError
            A bad key or compute capability.
        """
        if not self.enabled:
            return None
        path = self._path(entry.key, entry.compute_cap)
        meta = dict(entry.meta)
        why = _meta_problem(meta)
        if why is not None:
            log.warning("ringkernel cache: not caching %s: %s", path, why)
            return None
        if self._refused is not None:
            return None
        ptx = entry.ptx.encode("utf-8")
        payload = ptx + bytes(entry.cubin)
        if len(payload) > self.max_entry_bytes:
            log.info("ringkernel cache: not caching %s: %d bytes, more than max_entry_bytes=%d",
                     path, len(payload), self.max_entry_bytes)  # fmt: skip
            return None
        header = json.dumps({
            "format": CACHE_VERSION, "key": entry.key, "compute_cap": entry.compute_cap,
            "sha256": _digest(meta, payload, entry.key, entry.compute_cap, len(ptx)), "ptx_bytes": len(ptx), "cubin_bytes": len(entry.cubin),
            "meta": meta, "created": time.time(),
        }).encode("utf-8")  # fmt: skip
        if len(header) > _MAX_HEADER:
            log.info("ringkernel cache: not caching %s: its header is %d bytes, more than %d",
                     path, len(header), _MAX_HEADER)  # fmt: skip
            return None
        blob = _MAGIC + struct.pack("<I", len(header)) + header + payload
        dir_mode = 0o770 if self.mode is CacheMode.SHARED else 0o700
        try:
            if not self._dir_ok:
                path.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
                if not self._check_dir():
                    return None
            atomic_write_bytes(path, blob, dir_mode=dir_mode, mode=self._file_mode, prefix=_TEMP_PREFIX,
                               suffix=_TEMP_SUFFIX)  # fmt: skip
        except OSError as exc:
            self._warn_unwritable(exc)
            return None
        now = time.time()
        if now - self._last_sweep >= _SWEEP_INTERVAL:
            self._last_sweep = now
            self._sweep_temp(now)
        if self.max_bytes is not None:
            self._evict()
            if not os.path.lexists(path):
                return None  # evicted at once (max_bytes smaller than the entry): not cached after all
        return path

    def _warn_unwritable(self, exc: OSError) -> None:
        with self._lock:
            if self._warned:
                return
            self._warned = True
        log.warning(
            "ringkernel cache: cannot write to %s (%s); kernels will be compiled but not cached. "
            "Set RINGKERNEL_CACHE_DIR to a writable directory to cache them.",
            self.cache_dir, exc,
        )  # fmt: skip

    # -- the directory's files ----------------------------------------------------------
    def _scan(self) -> list[tuple[str, os.stat_result]]:
        """``(name, lstat)`` of every entry and own temp file: by name, links not followed."""
        out = []
        try:
            names = os.listdir(self._dir_str or str(self.cache_dir))
        except OSError:
            return []
        for name in names:
            if _ENTRY_NAME.fullmatch(name) or _TEMP_NAME.fullmatch(name):
                try:
                    out.append((name, os.lstat(os.path.join(self._dir_str, name))))
                except OSError:
                    pass
        return out

    def _files(self) -> list[tuple[str, os.stat_result]]:
        """The entries that are regular files."""
        return [(n, st) for n, st in self._scan() if _ENTRY_NAME.fullmatch(n) and stat.S_ISREG(st.st_mode)]

    def _sweep_temp(self, now: float | None = None) -> int:
        """Remove the cache's temp files older than an hour (killed writers); returns how many are left."""
        now = time.time() if now is None else now
        left = 0
        for name, st in self._scan():
            if not _TEMP_NAME.fullmatch(name) or stat.S_ISDIR(st.st_mode):
                continue
            if now - st.st_mtime < STALE_TEMP_SECONDS:
                left += 1  # a write in progress
                continue
            try:
                os.unlink(os.path.join(self._dir_str, name))
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.debug("ringkernel cache: cannot remove stale temp file %s: %s", name, exc)
                left += 1
                continue
            with self._lock:
                self._stale_removed += 1
            log.info("ringkernel cache: removed %s, a temp file of a writer killed %.0f s ago", name, now - st.st_mtime)
        return left

    def _evict(self) -> None:
        assert self.max_bytes is not None
        files = [(st.st_mtime, st.st_size, name) for name, st in self._files()]
        total = sum(size for _, size, _ in files)
        for _, size, name in sorted(files):
            if total <= self.max_bytes:
                break
            try:
                os.unlink(os.path.join(self._dir_str, name))
                total -= size
                log.debug("ringkernel cache: evicted %s (%d bytes)", name, size)
            except OSError:
                pass

    def _count(self, *, hit: bool) -> None:
        with self._lock:
            if hit:
                self._hits += 1
            else:
                self._misses += 1

    # -- maintenance --------------------------------------------------------------------
    def clear(self) -> int:
        """Delete every entry and the temp files of killed writers; returns how many entries were removed.

        Only files the cache wrote are touched (``<key>-<cc>.rkc`` and its ``.rkc-*.tmp``
        temp files); temp files younger than an hour belong to writes in progress and are
        left to their writers. Nothing else in the directory is removed, links are not
        followed, and it works in a directory the cache refuses to use.
        """
        removed = 0
        for name, st in self._scan():
            if stat.S_ISDIR(st.st_mode):
                continue
            if _TEMP_NAME.fullmatch(name):
                continue  # below
            try:
                os.unlink(os.path.join(self._dir_str, name))
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("ringkernel cache: cannot remove %s: %s", os.path.join(self._dir_str, name), exc)
        self._sweep_temp()
        return removed

    def stats(self) -> PtxCacheStats:
        """Entries and bytes on disk (after removing stale temp files), and this object's counters."""
        trusted = self.enabled and self._check_dir()
        files = self._files()
        temp = self._sweep_temp() if trusted else sum(1 for n, _ in self._scan() if _TEMP_NAME.fullmatch(n))
        return PtxCacheStats(
            entries=len(files), bytes=sum(st.st_size for _, st in files), hits=self._hits, misses=self._misses,
            enabled=self.enabled and self._refused is None, directory=str(self.cache_dir) if self.enabled else None,
            temp_files=temp, stale_temp_removed=self._stale_removed, refused_reason=self._refused,
        )  # fmt: skip


# -- reading (the checks of what was read: cache_format.py, cache_trust.py) -----------------
def _read_at_most(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``fd`` (fewer at end of file)."""
    chunks = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 30))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
