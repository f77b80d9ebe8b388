"""The pool's size classes, its configuration (``PoolConfig``) and its diagnostics
(``PoolDiagnostics``, ``ClassDiagnostics``): plain values, no device memory."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from enum import Enum
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigurationError

__all__ = ["SizeClass", "PoolConfig", "PoolDiagnostics", "ClassDiagnostics"]

KiB, MiB = 1024, 1024 * 1024


class SizeClass(Enum):
    """Pool block sizes."""

    SIZE_256B = 256
    SIZE_1KB = 1 * KiB
    SIZE_4KB = 4 * KiB
    SIZE_16KB = 16 * KiB
    SIZE_64KB = 64 * KiB
    SIZE_256KB = 256 * KiB

    def bytes(self) -> int:
        return self.value

    @classmethod
    def for_size(cls, nbytes: int) -> "SizeClass | None":
        """The smallest class holding ``nbytes``; ``None`` above 256 KB (a direct allocation)."""
        i = _class_index(nbytes)
        return None if i < 0 else _CLASSES[i]


_CLASSES: tuple[SizeClass, ...] = tuple(SizeClass)
_INDEX = {c: i for i, c in enumerate(_CLASSES)}
_LIMITS = [c.value for c in _CLASSES]


def _class_index(nbytes: int) -> int:
    """Index of the smallest class holding ``nbytes``; -1 above 256 KB. Validates ``nbytes``."""
    if type(nbytes) is not int:  # noqa: E721 - exact int is the fast path; bool is refused
        if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)):
            raise ConfigurationError(f"allocation size must be a positive integer of bytes, got {nbytes!r}")
        nbytes = int(nbytes)
    if nbytes <= 0:
        raise ConfigurationError(f"allocation size must be a positive integer of bytes, got {nbytes!r}")
    if nbytes > 262144:
        return -1
    return bisect_left(_LIMITS, nbytes)


def _six(values: Sequence[int], name: str) -> tuple[int, ...]:
    t = tuple(int(v) for v in values)
    if len(t) != len(_CLASSES) or any(v < 0 for v in t):
        raise ConfigurationError(f"{name} needs {len(_CLASSES)} non-negative counts (256B..256KB), got {values!r}")
    return t


@dataclass(frozen=True)
class PoolConfig:
    """How a pool grows and where it stops.

    Parameters
    ----------
    initial_counts:
        Blocks per class allocated up front (256B, 1KB, 4KB, 16KB, 64KB, 256KB).
    max_counts:
        Most blocks per class; beyond, requests become direct (tracked) allocations.
    track_allocations:
        Keep the requested size of each live allocation for diagnostics (live bytes,
        internal fragmentation). Costs a little per call.
    max_pool_bytes:
        Hard cap on everything the pool holds (slabs and direct allocations); ``None``:
        no cap. An allocation that would pass it raises :class:`InsufficientMemory`.
    slab_bytes:
        Size of the driver allocation blocks are carved from (at least one block).
    large_limit:
        Largest request above 256 KB that is pooled: such blocks are rounded up to
        quarter-power-of-two sizes (1, 1.25, 1.5, 1.75 x 2^k bytes: at most 25% waste) and,
        when freed, kept for the next request of their size. Larger requests are direct
        allocations, returned to the device when freed.
    max_cached_large_bytes:
        Most bytes of freed large blocks kept for reuse; a freed block that would pass it
        goes back to the device. ``None`` (default): an eighth of the device's memory, read
        when the pool is created (other libraries in the process cannot make this pool give
        its cache back, so it stays modest). Whatever the cap, cached blocks are released
        and the allocation retried before an allocation of this pool fails for lack of memory.
    large_cache_headroom:
        How far cached large blocks may take the pool past the demand it has seen: before
        the pool takes new memory from the device (a new large block, a slab, a direct
        allocation), it gives cached large blocks back (small ones and ones cached long
        ago last: GreedyDual-Size) until everything it holds fits in
        ``(1 + large_cache_headroom)`` x the most bytes ever live (requested) at once; a
        request that would pass it may instead take a larger cached block. So cached blocks
        never make the pool grow past that; only blocks in use (with their rounding) can.
        ``math.inf``: no such limit (the cache is then bounded by
        ``max_cached_large_bytes`` alone).
    large_reuse_bins:
        When a large request's own bin has no cached block, how many bins above it may
        serve it (1: a block less than 1.5 x the request; 0: only its own bin).
    """

    initial_counts: tuple[int, ...] = (0, 0, 0, 0, 0, 0)
    max_counts: tuple[int, ...] = (1 << 16, 1 << 15, 1 << 14, 1 << 12, 1 << 11, 1 << 10)
    track_allocations: bool = True
    max_pool_bytes: int | None = None
    slab_bytes: int = 1 * MiB
    large_limit: int = 1 << 30
    max_cached_large_bytes: int | None = None
    large_cache_headroom: float = 0.25
    large_reuse_bins: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial_counts", _six(self.initial_counts, "initial_counts"))
        object.__setattr__(self, "max_counts", _six(self.max_counts, "max_counts"))
        if any(i > m for i, m in zip(self.initial_counts, self.max_counts)):
            raise ConfigurationError(f"initial_counts {self.initial_counts} exceed max_counts {self.max_counts}")
        if self.max_pool_bytes is not None and self.max_pool_bytes <= 0:
            raise ConfigurationError(f"max_pool_bytes must be positive or None, got {self.max_pool_bytes!r}")
        if self.slab_bytes < SizeClass.SIZE_256B.value:
            raise ConfigurationError(f"slab_bytes must be at least 256, got {self.slab_bytes!r}")
        for name in ("large_limit", "max_cached_large_bytes"):
            v = getattr(self, name)
            if v is None and name == "max_cached_large_bytes":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigurationError(f"{name} must be a non-negative int of bytes, got {v!r}")
        h = self.large_cache_headroom
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not h >= 0:  # `not >=`: NaN too
            raise ConfigurationError(
                f"large_cache_headroom must be a non-negative number (math.inf: no limit), got {h!r}"
            )
        r = self.large_reuse_bins
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= 4:
            raise ConfigurationError(f"large_reuse_bins must be an int from 0 to 4, got {r!r}")
        if self.max_pool_bytes is not None:
            warm = sum(c.value * n for c, n in zip(_CLASSES, self.initial_counts))
            if warm > self.max_pool_bytes:
                raise ConfigurationError(
                    f"initial_counts need {warm} bytes, more than max_pool_bytes={self.max_pool_bytes}"
                )

    @classmethod
    def default(cls) -> "PoolConfig":
        return cls()

    @classmethod
    def for_compute(cls) -> "PoolConfig":
        """Many mid-size scratch buffers: warm 64 x 64KB and 16 x 256KB blocks."""
        return cls(initial_counts=(0, 0, 64, 64, 64, 16))

    @classmethod
    def for_messaging(cls) -> "PoolConfig":
        """Many small message buffers: warm 1024 x 256B and 256 x 1KB blocks."""
        return cls(initial_counts=(1024, 256, 0, 0, 0, 0))

    @classmethod
    def minimal(cls, max_pool_bytes: int = 64 * MiB) -> "PoolConfig":
        """Nothing up front, small slabs, a hard cap: tests and constrained devices."""
        return cls(max_pool_bytes=max_pool_bytes, slab_bytes=256 * KiB)


@dataclass(frozen=True)
class ClassDiagnostics:
    size_class: SizeClass
    in_use: int
    free: int
    slabs: int

    @property
    def in_use_bytes(self) -> int:
        return self.in_use * self.size_class.value

    @property
    def free_bytes(self) -> int:
        return self.free * self.size_class.value


@dataclass(frozen=True)
class PoolDiagnostics:
    """A snapshot of the pool.

    After ``close()``, ``closed`` is true, ``in_use``/``large_allocations`` count the blocks
    still in use (their memory stays valid until they are freed), ``free`` is 0 (a closed
    pool hands nothing out) and ``pool_bytes`` is what the pool still holds from the device.
    """

    classes: tuple[ClassDiagnostics, ...]
    large_allocations: int
    large_bytes: int
    hits: int
    misses: int
    pool_bytes: int
    peak_pool_bytes: int
    live_bytes: int
    peak_live_bytes: int
    live_block_bytes: int
    max_pool_bytes: int | None
    closed: bool = False
    #: Bytes of freed large blocks kept for reuse (part of ``pool_bytes``).
    cached_large_bytes: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    @property
    def free_bytes(self) -> int:
        return sum(c.free_bytes for c in self.classes)

    @property
    def internal_fragmentation(self) -> float:
        """Share of live block bytes not requested (a 300 B request in a 1 KB block wastes 70%)."""
        return 1 - self.live_bytes / self.live_block_bytes if self.live_block_bytes else 0.0

    @property
    def external_fragmentation(self) -> float:
        """Share of the pool's bytes sitting in free blocks."""
        return self.free_bytes / self.pool_bytes if self.pool_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": [{"size": c.size_class.value, "in_use": c.in_use, "free": c.free, "slabs": c.slabs} for c in self.classes],
            "large_allocations": self.large_allocations, "large_bytes": self.large_bytes,
            "hits": self.hits, "misses": self.misses, "hit_rate": self.hit_rate,
            "pool_bytes": self.pool_bytes, "peak_pool_bytes": self.peak_pool_bytes,
            "live_bytes": self.live_bytes, "peak_live_bytes": self.peak_live_bytes,
            "live_block_bytes": self.live_block_bytes, "cached_large_bytes": self.cached_large_bytes,
            "internal_fragmentation": self.internal_fragmentation,
            "external_fragmentation": self.external_fragmentation,
            "closed": self.closed,
        }  # fmt: skip
