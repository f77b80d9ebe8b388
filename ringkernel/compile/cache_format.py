"""The cache entry file format: ``CacheEntry``, the header and ``meta`` checks and the SHA-256 that covers them."""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["CACHE_VERSION", "CacheEntry"]

#: Bumped whenever the file format or what goes into a key changes (3: the SHA-256 covers ``meta``).
CACHE_VERSION = 4

_MAGIC = b"RKCACHE\n"
_MAX_HEADER = 64 << 10
_SHA256 = re.compile(r"[0-9a-f]{64}")

# meta: what the compiler stores; anything else is refused on read and on write.
_META_MAX_KEYS = 64
_META_MAX_LIST = 4096
_META_STR_FIELDS = ("entry_name", "name", "code_type", "indexing")
_INT_RANGE = 1 << 63


@dataclass(frozen=True)
class CacheEntry:
    """A cached kernel: its PTX, the linked cubin (may be empty) and metadata (entry name, ...).

    ``meta`` maps strings to JSON scalars (``str``, ``int``, finite ``float``, ``bool``,
    ``None``) or lists of them; ``entry_name``, ``name``, ``code_type`` and ``indexing`` are
    strings, ``cooperative`` a bool and ``argtypes`` a list of strings.
    """

    key: str
    compute_cap: str
    ptx: str
    cubin: bytes = b""
    meta: Mapping[str, Any] = field(default_factory=dict)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a key appears twice")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _small_int(text: str) -> int:
    if len(text.lstrip("-")) > 20:
        raise ValueError(f"integer of {len(text)} digits")
    return int(text)


_REQUIRED = frozenset(("format", "key", "compute_cap", "sha256", "ptx_bytes", "cubin_bytes"))
_OPTIONAL = frozenset(("meta", "created"))


def _scalar_ok(v: object) -> bool:
    if v is None or isinstance(v, (bool, str)):
        return True
    if isinstance(v, int):
        return -_INT_RANGE <= v < _INT_RANGE
    return isinstance(v, float) and math.isfinite(v)


def _meta_problem(meta: object) -> str | None:
    """Why ``meta`` is not what an entry may carry, or ``None``."""
    if not isinstance(meta, dict):
        return f"meta is {type(meta).__name__}, not an object"
    if len(meta) > _META_MAX_KEYS:
        return f"meta has {len(meta)} fields, more than {_META_MAX_KEYS}"
    for k, v in meta.items():
        if not isinstance(k, str) or len(k) > 256:
            return f"meta field name {_short(k)} is not a short string"
        if isinstance(v, list):
            if len(v) > _META_MAX_LIST or not all(_scalar_ok(x) for x in v):
                return f"meta[{k!r}] is not a list of at most {_META_MAX_LIST} JSON scalars"
        elif not _scalar_ok(v):
            return f"meta[{k!r}] is {type(v).__name__} {_short(v)}, not a JSON scalar or list of scalars"
    for k in _META_STR_FIELDS:
        if k in meta and not isinstance(meta[k], str):
            return f"meta[{k!r}] is {type(meta[k]).__name__}, not str"
    if "cooperative" in meta and not isinstance(meta["cooperative"], bool):
        return f"meta['cooperative'] is {type(meta['cooperative']).__name__}, not bool"
    if "argtypes" in meta and not (isinstance(meta["argtypes"], list) and all(isinstance(t, str) for t in meta["argtypes"])):
        return "meta['argtypes'] is not a list of strings"
    return None


def _header_problem(header: object, key: str, compute_cap: str, payload: int, max_payload: int) -> str | None:
    """Why ``header`` (parsed JSON) does not describe entry ``key``/``compute_cap`` of ``payload`` bytes."""
    if not isinstance(header, dict):
        return f"the header is {type(header).__name__}, not an object"
    missing = _REQUIRED - header.keys()
    if missing:
        return f"the header lacks {', '.join(sorted(missing))}"
    unknown = header.keys() - _REQUIRED - _OPTIONAL
    if unknown:
        return f"the header has unknown fields {', '.join(sorted(_short(u) for u in unknown))}"
    fmt = header["format"]
    if not _is_int(fmt) or fmt != CACHE_VERSION:
        return f"format {_short(fmt)}, this ringkernel reads {CACHE_VERSION}"
    hkey, hcc = header["key"], header["compute_cap"]
    if not isinstance(hkey, str) or not isinstance(hcc, str):
        return f"key {_short(hkey)} and compute_cap {_short(hcc)} must be strings"
    if hkey != key or hcc != compute_cap:
        return f"holds key {hkey[:12]}/{hcc[:12]}, expected {key[:12]}/{compute_cap}"
    digest = header["sha256"]
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        return f"sha256 {_short(digest)} is not 64 lowercase hex digits"
    nptx, ncubin = header["ptx_bytes"], header["cubin_bytes"]
    for name, n in (("ptx_bytes", nptx), ("cubin_bytes", ncubin)):
        if not _is_int(n) or not 0 <= n <= max_payload:
            return f"{name} {_short(n)} is not an int between 0 and {max_payload}"
    if nptx + ncubin != payload:
        return f"payload is {payload} bytes, header says {nptx + ncubin} (truncated?)"
    created = header.get("created", 0.0)
    if isinstance(created, bool) or not isinstance(created, (int, float)) or not 0 <= created < 1e11:
        return f"created {_short(created)} is not a time stamp"
    if "meta" in header:
        return _meta_problem(header["meta"])
    return None


def _digest(meta: Mapping[str, Any], payload: bytes | memoryview, key: str, compute_cap: str, ptx_bytes: int) -> str:
    """The ``sha256`` field: of the header fields the entry is used by (``key``,
    ``compute_cap``, ``ptx_bytes``: where the PTX ends and the cubin starts) and ``meta`` as
    canonical JSON, a NUL byte, and ``payload``. (Format 3 hashed only ``meta`` and the payload:
    a header that moved the PTX/cubin split was loaded as a hit; from an adversarial trial.)"""
    h = hashlib.sha256(f"{key}\0{compute_cap}\0{int(ptx_bytes)}\0".encode("utf-8"))
    h.update(json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii"))
    h.update(b"\0")
    h.update(payload)
    return h.hexdigest()


def _parse_entry(data: bytes, key: str, compute_cap: str, max_payload: int) -> CacheEntry | str:
    """The entry ``data`` holds, or why it holds none. Never raises, whatever ``data`` is."""
    start = len(_MAGIC) + 4
    if len(data) < start or not data.startswith(_MAGIC):
        return "not a ringkernel cache entry" if data else "empty file"
    (hlen,) = struct.unpack_from("<I", data, len(_MAGIC))
    if hlen > _MAX_HEADER:
        return f"header length {hlen} is more than {_MAX_HEADER}"
    if start + hlen > len(data):
        return "truncated header"
    try:
        header = json.loads(
            data[start : start + hlen].decode("utf-8"),
            object_pairs_hook=_unique_object, parse_constant=_no_constant, parse_int=_small_int,
        )  # fmt: skip
    except (ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
        return f"unreadable header ({type(exc).__name__}: {str(exc)[:80]})"
    payload = memoryview(data)[start + hlen :]  # no copies of the payload until the end
    why = _header_problem(header, key, compute_cap, len(payload), max_payload)
    if why is not None:
        return why
    meta = header.get("meta", {})
    if _digest(meta, payload, header["key"], header["compute_cap"], header["ptx_bytes"]) != header["sha256"]:
        return "checksum mismatch"
    nptx = header["ptx_bytes"]
    try:
        ptx = str(payload[:nptx], "utf-8")
    except UnicodeDecodeError:
        return "PTX is not UTF-8"
    return CacheEntry(key, compute_cap, ptx, payload[nptx:].tobytes(), meta)
