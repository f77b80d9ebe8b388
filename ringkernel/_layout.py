"""Array layout arithmetic shared by the launcher and the memory backends (no imports)."""

from __future__ import annotations

from typing import Any

__all__ = ["c_strides", "span", "is_c_contiguous"]


def c_strides(shape: Any, itemsize: int) -> tuple[int, ...]:
    """Byte strides of a C-contiguous array of ``shape``."""
    strides = []
    acc = itemsize
    for dim in reversed(tuple(shape)):
        strides.append(acc)
        acc *= dim
    return tuple(reversed(strides))


def span(shape: Any, strides: Any, itemsize: int) -> tuple[int, int]:
    """Byte offsets ``[lo, hi)`` from the first element that an array's elements cover
    (negative strides reach below it; an empty array covers nothing: ``(0, 0)``)."""
    lo = hi = 0
    for n, st in zip(shape, strides):
        if n == 0:
            return 0, 0
        if st < 0:
            lo += (n - 1) * st
        else:
            hi += (n - 1) * st
    return lo, hi + itemsize


def is_c_contiguous(shape: Any, strides: Any, itemsize: int) -> bool:
    """Whether the elements are packed in C order (axes of length 1 may have any stride)."""
    expect = itemsize
    for n, st in zip(reversed(tuple(shape)), reversed(tuple(strides))):
        if n == 0:
            return True
        if n != 1 and st != expect:
            return False
        expect *= n
    return True
