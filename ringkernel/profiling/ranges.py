"""``RangeHandle``: an open profiler range (and the checks of range arguments)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .categories import ProfileCategory

if TYPE_CHECKING:
    from .profiler import GpuProfiler

__all__ = ["RangeHandle"]


class Open:
    """A range between begin and end (internal)."""

    __slots__ = ("id", "name", "category", "start_ns", "track_key", "track_id", "parent_id", "nvtx_id", "args", "ended")

    def __init__(self, id: int, name: str, category: ProfileCategory, start_ns: int, track_key: Any, track_id: int,
                 parent_id: int | None, args: dict[str, Any]) -> None:  # fmt: skip
        self.id, self.name, self.category, self.start_ns = id, name, category, start_ns
        self.track_key, self.track_id, self.parent_id, self.args = track_key, track_id, parent_id, args
        self.nvtx_id: Any = None
        self.ended = False


class RangeHandle:
    """An open range: pass it to :meth:`GpuProfiler.end_range`, or use it as a context manager
    (``with profiler.annotate_memory("staging", n): ...`` ends it at the block's end)."""

    __slots__ = ("_profiler", "_open", "__weakref__")

    def __init__(self, profiler: "GpuProfiler | None", open_: Open | None) -> None:
        self._profiler = profiler
        self._open = open_

    @property
    def id(self) -> int:
        """0 for the handles of a disabled profiler (ending them does nothing)."""
        return self._open.id if self._open is not None else 0

    @property
    def name(self) -> str:
        return self._open.name if self._open is not None else ""

    @property
    def ended(self) -> bool:
        return self._open is None or self._open.ended

    def end(self) -> None:
        if self._profiler is not None:
            self._profiler.end_range(self)

    def __enter__(self) -> "RangeHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()

    def __repr__(self) -> str:
        return f"RangeHandle({self.name!r}, id={self.id}{', ended' if self.ended else ''})"


DISABLED = RangeHandle(None, None)


def check_bytes(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{what} must be a non-negative integer of bytes, got {value!r}")
    return value


def check_name(name: Any, what: str = "a range name") -> str:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{what} must be a non-empty string, got {name!r}")
    return name


def check_category(category: Any) -> ProfileCategory:
    if not isinstance(category, ProfileCategory):
        raise ConfigurationError(
            f"category must be a ProfileCategory, got {category!r}",
            hint="e.g. ProfileCategory.ALGORITHM, or ProfileCategory.custom('name', color=0x123456)",
        )
    return category
