"""``ResourceGuard``: check a workload against free device memory before allocating it.

An out-of-memory error in the middle of a long run loses the run; the guard turns it into
an answer up front: "need N bytes, have M, reduce the workload to K elements".
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..errors import ConfigurationError, InsufficientMemory

__all__ = ["MemoryEstimate", "ResourceGuard"]


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a workload needs: ``element_count * per_element_bytes + overhead_bytes``."""

    per_element_bytes: int
    element_count: int
    overhead_bytes: int = 0

    def __post_init__(self) -> None:
        for name in ("per_element_bytes", "element_count", "overhead_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ConfigurationError(f"MemoryEstimate.{name} must be a non-negative int, got {v!r}")
            object.__setattr__(self, name, int(v))  # (NumPy's ints too: sizes often come from arrays)

    @property
    def total_bytes(self) -> int:
        return self.element_count * self.per_element_bytes + self.overhead_bytes

    @classmethod
    def for_arrays(cls, element_count: int, *itemsizes: int, overhead_bytes: int = 0) -> "MemoryEstimate":
        """E.g. ``for_arrays(n, 4, 4, 4)`` for three float32 arrays of ``n`` elements."""
        return cls(sum(itemsizes), element_count, overhead_bytes)


class ResourceGuard:
    """Allows allocations only within ``(1 - safety_margin)`` of the memory there is.

    Parameters
    ----------
    max_memory_bytes:
        Memory to plan against; ``None``: the device's free memory, read on each check.
    safety_margin:
        Fraction kept free (0.3 keeps 30% headroom for the driver, libraries, fragmentation).
    mem_info:
        ``() -> (free, total)``; default: the device (or the simulator's stand-in).
    """

    def __init__(
        self,
        max_memory_bytes: int | None = None,
        safety_margin: float = 0.3,
        *,
        mem_info: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        if not 0 <= safety_margin < 1:
            raise ConfigurationError(f"safety_margin must be in [0, 1), got {safety_margin!r}", hint="e.g. 0.3")
        if max_memory_bytes is not None and max_memory_bytes <= 0:
            raise ConfigurationError(f"max_memory_bytes must be positive, got {max_memory_bytes!r}")
        self.max_memory_bytes = max_memory_bytes
        self.safety_margin = safety_margin
        self._mem_info = mem_info
        self._reserved = 0
        self._lock = threading.Lock()

    def _free_bytes(self) -> int:
        if self.max_memory_bytes is not None:
            return self.max_memory_bytes
        if self._mem_info is None:
            from .backend import default_backend

            self._mem_info = default_backend().mem_info
        return int(self._mem_info()[0])

    @property
    def available_bytes(self) -> int:
        """Bytes that may still be allocated: free memory less the margin and current reservations."""
        return max(0, int(self._free_bytes() * (1 - self.safety_margin)) - self._reserved)

    def can_allocate(self, estimate: MemoryEstimate) -> bool:
        return estimate.total_bytes <= self.available_bytes

    def max_safe_elements(self, per_element_bytes: int, overhead_bytes: int = 0) -> int:
        """The most elements of ``per_element_bytes`` that fit (after ``overhead_bytes``)."""
        if per_element_bytes <= 0:
            raise ConfigurationError(f"per_element_bytes must be positive, got {per_element_bytes!r}")
        return max(0, (self.available_bytes - overhead_bytes) // per_element_bytes)

    def check_allocation(self, estimate: MemoryEstimate) -> None:
        """Raise :class:`InsufficientMemory` (needed, available, recommended max elements) if it does not fit."""
        available = self.available_bytes
        if estimate.total_bytes > available:
            recommended = (
                self.max_safe_elements(estimate.per_element_bytes, estimate.overhead_bytes)
                if estimate.per_element_bytes
                else 0
            )
            raise InsufficientMemory(
                estimate.total_bytes, available, recommended,
                hint=f"split the work into chunks of at most {recommended} elements, or lower safety_margin "
                f"(now {self.safety_margin:.0%})",
            )  # fmt: skip

    @contextlib.contextmanager
    def reserve(self, estimate: MemoryEstimate) -> Iterator[MemoryEstimate]:
        """Check, then hold ``estimate`` against this guard until the block ends."""
        with self._lock:
            self.check_allocation(estimate)
            self._reserved += estimate.total_bytes
        try:
            yield estimate
        finally:
            with self._lock:
                self._reserved -= estimate.total_bytes
