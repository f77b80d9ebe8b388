"""``PtxCache``: compiled kernels (PTX and the linked cubin) on disk, verified on every read.

One file per key, ``<key>-<compute capability>.rkc``::

    b"RKCACHE\\n"                 magic
    4 bytes, little endian        length of the header
    header (JSON, UTF-8)          {"format", "key", "compute_cap", "sha256", "ptx_bytes",
                                   "cubin_bytes", "meta", "created"}
    payload                       PTX bytes, then cubin bytes

A file whose magic, header, key, lengths or SHA-256 do not match is a miss: it is logged,
never loaded, and replaced by the next ``put``. Writes go to a temp file in the same
directory and are ``os.replace``d into place, so readers and concurrent writers only ever
see whole entries. An unwritable directory (read-only, full) turns caching off for that
cache object with one warning; compiling still works.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .._fileio import atomic_write_bytes
from ..config import settings  # at import: a first import here cost 1.5 ms inside the first cache hit
from ..errors import ConfigurationError

__all__ = ["CACHE_VERSION", "PtxCache", "CacheEntry", "PtxCacheStats", "default_cache_dir"]

log = logging.getLogger(__name__)

#: Bumped whenever the file format or what goes into a key changes.
CACHE_VERSION = 2

_MAGIC = b"RKCACHE\n"
_HEX = re.compile(r"[0-9a-fA-F]+")
_CC = re.compile(r"\w+", re.ASCII)
_SUFFIX = ".rkc"


def default_cache_dir() -> Path:
    """``RINGKERNEL_CACHE_DIR`` if set, else platformdirs' user cache dir + ``ringkernel``."""
    configured = settings().cache_dir
    if configured is not None:
        return configured
    import platformdirs

    return Path(platformdirs.user_cache_dir("ringkernel", appauthor=False))


@dataclass(frozen=True)
class CacheEntry:
    """A cached kernel: its PTX, the linked cubin (may be empty) and metadata (entry name, ...)."""

    key: str
    compute_cap: str
    ptx: str
    cubin: bytes = b""
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PtxCacheStats:
    """Entries and bytes on disk; hits and misses of this cache object."""

    entries: int
    bytes: int
    hits: int
    misses: int
    enabled: bool
    directory: str | None

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class PtxCache:
    """File-based cache of compiled kernels.

    Parameters
    ----------
    cache_dir:
        Directory (created owner-only on first write). ``None``: :func:`default_cache_dir`.
    max_bytes:
        Optional size cap; after a ``put`` the least recently used entries are evicted
        until the cache fits. Loading an entry marks it used.
    enabled:
        ``False`` makes every ``get`` a miss and every ``put`` a no-op.
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None, *, max_bytes: int | None = None, enabled: bool = True) -> None:
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0):
            raise ConfigurationError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        # Resolved now, not at the first lookup: a cache object keeps its directory, and the
        # lookup on a kernel's first launch does no configuration work.
        if cache_dir is not None:
            self._dir: Path | None = Path(cache_dir).expanduser()
        else:
            self._dir = default_cache_dir() if enabled else None
        self._dir_str = str(self._dir) if self._dir is not None else ""
        self.max_bytes = max_bytes
        self.enabled = enabled
        self._hits = 0
        self._misses = 0
        self._warned = False
        self._lock = threading.Lock()

    # -- constructors (the design proposal's names) ------------------------------------
    @classmethod
    def with_dir(cls, cache_dir: str | os.PathLike[str], *, max_bytes: int | None = None) -> "PtxCache":
        return cls(cache_dir, max_bytes=max_bytes)

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

    # -- entries ------------------------------------------------------------------------
    def get_entry(self, key: str, compute_cap: str) -> CacheEntry | None:
        """The whole entry, verified; ``None`` (a miss) if absent, unreadable or corrupt."""
        if not self.enabled:
            self._count(hit=False)
            return None
        path = self._file(key, compute_cap)  # a str: pathlib costs more than the read itself here
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            self._count(hit=False)
            return None
        except OSError as exc:
            log.warning("ringkernel cache: cannot read %s (%s); compiling instead", path, exc)
            self._count(hit=False)
            return None
        entry = self._decode(data, key, compute_cap, path)
        self._count(hit=entry is not None)
        if entry is not None and self.max_bytes is not None:
            try:
                os.utime(path)  # mark used, for least-recently-used eviction
            except OSError:
                pass
        return entry

    def _decode(self, data: bytes, key: str, compute_cap: str, path: str | Path) -> CacheEntry | None:
        def bad(why: str) -> None:
            log.warning("ringkernel cache: ignoring %s: %s (it will be recompiled and replaced)", path, why)

        if len(data) < len(_MAGIC) + 4 or not data.startswith(_MAGIC):
            bad("not a ringkernel cache entry" if data else "empty file")
            return None
        (hlen,) = struct.unpack_from("<I", data, len(_MAGIC))
        start = len(_MAGIC) + 4
        if start + hlen > len(data):
            bad("truncated header")
            return None
        try:
            header = json.loads(data[start : start + hlen].decode("utf-8"))
            fmt, hkey, hcc = header["format"], header["key"], header["compute_cap"]
            nptx, ncubin, digest = int(header["ptx_bytes"]), int(header["cubin_bytes"]), header["sha256"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            bad(f"unreadable header ({exc})")
            return None
        if fmt != CACHE_VERSION:
            bad(f"format {fmt}, this ringkernel writes {CACHE_VERSION}")
            return None
        if hkey != key or hcc != compute_cap:
            bad(f"holds key {hkey[:12]}/{hcc}, expected {key[:12]}/{compute_cap}")
            return None
        payload = memoryview(data)[start + hlen :]  # no copies of the payload until the end
        if len(payload) != nptx + ncubin:
            bad(f"payload is {len(payload)} bytes, header says {nptx + ncubin} (truncated?)")
            return None
        if hashlib.sha256(payload).hexdigest() != digest:
            bad("checksum mismatch")
            return None
        try:
            ptx = str(payload[:nptx], "utf-8")
        except UnicodeDecodeError:
            bad("PTX is not UTF-8")
            return None
        return CacheEntry(key, compute_cap, ptx, payload[nptx:].tobytes(), dict(header.get("meta") or {}))

    def put_entry(self, entry: CacheEntry) -> Path | None:
        """Write ``entry`` atomically; returns its path, or ``None`` if caching is off or failed."""
        if not self.enabled:
            return None
        path = self._path(entry.key, entry.compute_cap)
        ptx = entry.ptx.encode("utf-8")
        payload = ptx + bytes(entry.cubin)
        header = json.dumps({
            "format": CACHE_VERSION, "key": entry.key, "compute_cap": entry.compute_cap,
            "sha256": hashlib.sha256(payload).hexdigest(), "ptx_bytes": len(ptx), "cubin_bytes": len(entry.cubin),
            "meta": dict(entry.meta), "created": time.time(),
        }).encode("utf-8")  # fmt: skip
        blob = _MAGIC + struct.pack("<I", len(header)) + header + payload
        try:
            atomic_write_bytes(path, blob, dir_mode=0o700)
        except OSError as exc:
            self._warn_unwritable(exc)
            return None
        if self.max_bytes is not None:
            self._evict()
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

    def _files(self) -> list[Path]:
        try:
            return [p for p in self.cache_dir.iterdir() if p.suffix == _SUFFIX and p.is_file()]
        except OSError:
            return []

    def _evict(self) -> None:
        assert self.max_bytes is not None
        files = []
        for p in self._files():
            try:
                st = p.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in files)
        for _, size, p in sorted(files):
            if total <= self.max_bytes:
                break
            try:
                p.unlink()
                total -= size
                log.debug("ringkernel cache: evicted %s (%d bytes)", p.name, size)
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
        """Delete every entry (and stray temp files); returns how many entries were removed."""
        removed = 0
        try:
            items = list(self.cache_dir.iterdir())
        except OSError:
            return 0
        for p in items:
            if p.suffix == _SUFFIX or (p.name.startswith(".") and p.suffix == ".tmp"):
                try:
                    p.unlink()
                    removed += p.suffix == _SUFFIX
                except OSError as exc:
                    log.warning("ringkernel cache: cannot remove %s: %s", p, exc)
        return removed

    def stats(self) -> PtxCacheStats:
        files = self._files()
        size = 0
        for p in files:
            try:
                size += p.stat().st_size
            except OSError:
                pass
        return PtxCacheStats(
            entries=len(files), bytes=size, hits=self._hits, misses=self._misses, enabled=self.enabled,
            directory=str(self.cache_dir) if self.enabled else None,
        )  # fmt: skip
