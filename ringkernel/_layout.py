"""Array layout arithmetic shared by the launcher and the memory backends (no imports)."""

from __future__ import annotations

from typing import Any

__all__ = ["c_strides"]


def c_strides(shape: Any, itemsize: int) -> tuple[int, ...]:
    """Byte strides of a C-contiguous array of ``shape``."""
    strides = []
    acc = itemsize
    for dim in reversed(tuple(shape)):
        strides.append(acc)
        acc *= dim
    return tuple(reversed(strides))
