"""``ProfileCategory`` (kernel, memory, algorithm, I/O, sync, custom) with colours, and ``TransferDirection``."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from ..errors import ConfigurationError

__all__ = ["ProfileCategory", "TransferDirection"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:/-]{0,62}$")


@dataclass(frozen=True)
class ProfileCategory:
    """What a range or mark is about; each category has a colour (``0xRRGGBB``).

    The five built-in categories are class attributes (``ProfileCategory.KERNEL``, ``MEMORY``,
    ``ALGORITHM``, ``IO``, ``SYNC``); :meth:`custom` makes more. Each maps to one NVTX
    category of the ``"ringkernel"`` domain (same name), so Nsight Systems groups and colours
    the ranges alike, and to the ``cat`` field of the Chrome trace.
    """

    name: str
    color: int
    builtin: bool = False

    KERNEL: ClassVar["ProfileCategory"]
    MEMORY: ClassVar["ProfileCategory"]
    ALGORITHM: ClassVar["ProfileCategory"]
    IO: ClassVar["ProfileCategory"]
    SYNC: ClassVar["ProfileCategory"]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigurationError(
                f"a profile category name must be 1-63 letters, digits, spaces or '_.:/-', got {self.name!r}"
            )
        if isinstance(self.color, bool) or not isinstance(self.color, int) or not 0 <= self.color <= 0xFFFFFF:
            raise ConfigurationError(
                f"a profile category colour is an RGB integer 0x000000..0xFFFFFF, got {self.color!r}",
                hint="e.g. ProfileCategory.custom('io-prefetch', color=0x8E44AD)",
            )

    @classmethod
    def custom(cls, name: str, color: int = 0x7F8C8D) -> "ProfileCategory":
        """A category of your own, e.g. ``ProfileCategory.custom("io-prefetch", color=0x8E44AD)``.

        Asking twice for a name returns the same category; a built-in name, or a known name
        with another colour, is refused (one name must mean one colour in every tool).
        """
        with _lock:
            known = _REGISTRY.get(name)
            if known is not None:
                if known.builtin:
                    raise ConfigurationError(
                        f"{name!r} is a built-in category", hint=f"use ProfileCategory.{name.upper()}"
                    )
                if known.color != color:
                    raise ConfigurationError(
                        f"category {name!r} already exists with colour 0x{known.color:06X}, not 0x{color:06X}"
                    )
                return known
            cat = cls(name, color)
            _REGISTRY[name] = cat
            return cat

    @property
    def argb(self) -> int:
        """The colour as NVTX wants it (opaque ``0xFFRRGGBB``)."""
        return 0xFF000000 | self.color

    @property
    def hex(self) -> str:
        return f"#{self.color:06x}"

    def __str__(self) -> str:
        return self.name


_lock = threading.Lock()
_REGISTRY: dict[str, ProfileCategory] = {}


def _builtin(name: str, color: int) -> ProfileCategory:
    cat = ProfileCategory(name, color, builtin=True)
    _REGISTRY[name] = cat
    return cat


# Colours of the Rust original's categories (green kernels, blue memory, ...), kept apart in hue.
ProfileCategory.KERNEL = _builtin("kernel", 0x2ECC71)
ProfileCategory.MEMORY = _builtin("memory", 0x3498DB)
ProfileCategory.ALGORITHM = _builtin("algorithm", 0xF39C12)
ProfileCategory.IO = _builtin("io", 0x9B59B6)
ProfileCategory.SYNC = _builtin("sync", 0xE74C3C)


def reset() -> None:
    """Forget custom categories (for tests)."""
    with _lock:
        for name in [n for n, c in _REGISTRY.items() if not c.builtin]:
            del _REGISTRY[name]


class TransferDirection(Enum):
    """Direction of a copy, for :meth:`GpuProfiler.annotate_transfer`."""

    HOST_TO_DEVICE = "HtoD"
    DEVICE_TO_HOST = "DtoH"
    DEVICE_TO_DEVICE = "DtoD"
    PEER_TO_PEER = "PtoP"

    @classmethod
    def parse(cls, value: Any) -> "TransferDirection":
        """The direction itself, or its short name (``"HtoD"``, ``"DtoH"``, ``"DtoD"``, ``"PtoP"``)."""
        if isinstance(value, cls):
            return value
        for d in cls:
            if isinstance(value, str) and value.lower() == d.value.lower():
                return d
        raise ConfigurationError(
            f"unknown transfer direction {value!r}",
            hint="pass a TransferDirection (e.g. TransferDirection.HOST_TO_DEVICE) or one of "
            + ", ".join(repr(d.value) for d in cls),
        )
