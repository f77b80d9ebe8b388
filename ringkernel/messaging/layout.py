"""The device-memory layout of a queue (header words, limits) and the checks on its options.

Pure Python and NumPy: no numba, no device. The header is an ``int64`` array of
:data:`HEADER_WORDS` words; each counter that kernels hammer (``head``, ``tail``, ``free``,
``avail``, ``overflow``) sits alone on its own 128-byte line so that producers, consumers and
the overflow counter never share a cache line; the constants share a sixth line.

``free`` and ``avail`` are the reservation counters of the Broker Queue (Kerbl et al., 2018):
a producer first takes one of ``free`` (slots no producer has claimed), a consumer one of
``avail`` (messages no consumer has claimed); only then do they take a position with a
fetch-and-add on ``head`` / ``tail``. When no operation is in flight, ``avail == head - tail``
and ``free == capacity - avail``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigurationError

__all__ = [
    "HEAD", "TAIL", "OVERFLOW", "FREE", "AVAIL", "CAPACITY", "MASK", "MSG_SIZE", "HEADER_WORDS", "HEADER_DTYPE",
    "SEQ_DTYPE", "MAX_MESSAGE_BYTES", "MAX_CAPACITY", "check_capacity", "check_dtype", "partition_of",
    "new_header",
]  # fmt: skip

#: Word indices into the header (int64 words; 16 words = one 128-byte line).
HEAD = 0  # producers' next position (the proposal's "sender increments")
TAIL = 16  # consumers' next position (the proposal's "receiver increments")
OVERFLOW = 32  # pushes refused because the queue was full
FREE = 48  # slots not claimed by a producer (starts at capacity)
AVAIL = 64  # messages not claimed by a consumer (starts at 0)
CAPACITY = 80  # constant after creation: slots, a power of two
MASK = 81  # constant: capacity - 1
MSG_SIZE = 82  # constant: bytes per message (the dtype's itemsize)
HEADER_WORDS = 96  # six 128-byte lines
HEADER_DTYPE = np.dtype(np.int64)
SEQ_DTYPE = np.dtype(np.int64)
#: The largest message: 256 bytes (64 B typical).
MAX_MESSAGE_BYTES = 256
#: The largest capacity per queue: positions are int64 and never wrap; 2**30 slots bounds memory.
MAX_CAPACITY = 2**30


def check_capacity(capacity: Any, *, what: str = "capacity") -> int:
    """``capacity`` as an int, or a ConfigurationError saying which power of two to use."""
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
        raise ConfigurationError(
            f"{what} must be an int (a power of two), got {capacity!r}", hint="pass e.g. 1024",
            details={what: repr(capacity)},
        )  # fmt: skip
    c = int(capacity)
    if c < 2 or c > MAX_CAPACITY or c & (c - 1):
        up = 2 if c < 2 else min(1 << (c - 1).bit_length(), MAX_CAPACITY)
        raise ConfigurationError(
            f"{what} must be a power of two between 2 and {MAX_CAPACITY}, got {c}",
            hint=f"use {up} (slot = position & (capacity - 1) needs a power of two)", details={what: c},
        )  # fmt: skip
    return c


def check_dtype(dtype: Any) -> np.dtype:
    """The message dtype, or a ConfigurationError: fixed-size, no Python objects, at most 256 bytes."""
    if dtype is None:
        raise ConfigurationError(
            "the message dtype is None", hint="pass a NumPy dtype, e.g. np.dtype([('src', 'u4'), ('value', 'f8')])"
        )
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ConfigurationError(
            f"{dtype!r} is not a dtype ({exc})", hint="pass a NumPy dtype, e.g. np.dtype([('src', 'u4'), ('value', 'f8')])"
        ) from None
    if dt.hasobject:
        raise ConfigurationError(
            f"message dtype {dt} holds Python objects, which cannot live in device memory",
            hint="use fixed-size fields (integers, floats, fixed-length arrays of them)", details={"dtype": str(dt)},
        )  # fmt: skip
    if dt.subdtype is not None:
        raise ConfigurationError(
            f"message dtype {dt} is a sub-array dtype; a message is one record",
            hint=f"wrap it in a field: np.dtype([('data', {dt.subdtype[0].str!r}, {dt.subdtype[1]})])",
        )
    if dt.kind in "SUmM" or (dt.kind == "V" and not dt.fields):
        raise ConfigurationError(
            f"message dtype {dt} is not supported in kernels", hint="use numbers or a structured dtype of numbers",
            details={"dtype": str(dt)},
        )  # fmt: skip
    if not dt.isnative and not dt.fields:
        raise ConfigurationError(f"message dtype {dt} is not in the machine's byte order", hint="use dt.newbyteorder('=')")
    for name, field_dt in _leaf_fields(dt):
        if field_dt.kind not in "biufc":
            raise ConfigurationError(
                f"field {name!r} of message dtype {dt} is {field_dt}: kernels take fields of numbers",
                hint="use integers, floats, complex numbers or fixed-length arrays of them",
                details={"dtype": str(dt)},
            )  # fmt: skip
        if not field_dt.isnative:
            raise ConfigurationError(
                f"field {name!r} of message dtype {dt} is not in the machine's byte order ({field_dt.str}): numba "
                "cannot compile kernels over it", hint="use native-order fields (e.g. '<i4' on x86, or '=i4')",
                details={"dtype": str(dt)},
            )  # fmt: skip
    if dt.itemsize == 0 or dt.itemsize > MAX_MESSAGE_BYTES:
        raise ConfigurationError(
            f"a message of dtype {dt} takes {dt.itemsize} bytes; messages take 1 to {MAX_MESSAGE_BYTES}",
            hint="send larger payloads as an index into a separate device array", details={"itemsize": dt.itemsize},
        )  # fmt: skip
    return dt


def _leaf_fields(dt: np.dtype, prefix: str = "") -> list[tuple[str, np.dtype]]:
    """``(dotted name, base dtype)`` of every non-record field of a structured dtype, nested ones included."""
    out: list[tuple[str, np.dtype]] = []
    for name in dt.names or ():
        base = dt.fields[name][0].base  # type: ignore[index]
        if base.names:
            out += _leaf_fields(base, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", base))
    return out


def partition_of(hint: int, num_partitions: int) -> int:
    """The partition a ``partition_hint`` maps to: a multiplicative hash (Knuth's 2654435761) of
    the hint's low 32 bits, folded; the device's ``partition_of`` computes the same number."""
    h = int(hint) & 0xFFFFFFFF
    h = (h * 2654435761) & 0xFFFFFFFF
    h ^= h >> 16
    return h % int(num_partitions)


def new_header(capacity: int, itemsize: int) -> np.ndarray:
    """A fresh header on the host: positions 0, every slot free, the constants filled in."""
    h = np.zeros(HEADER_WORDS, HEADER_DTYPE)
    h[CAPACITY], h[MASK], h[MSG_SIZE] = capacity, capacity - 1, itemsize
    h[FREE] = capacity
    return h
