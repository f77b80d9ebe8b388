"""The environment a benchmark ran in: GPU, driver, clocks, library versions, host.

Two results are comparable only if the fields in :data:`COMPARABLE_FIELDS` agree;
:meth:`EnvironmentFingerprint.differences` lists those that do not, and regression
comparison warns about (or refuses) them.
"""

from __future__ import annotations

import datetime as _dt
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from . import _fields

__all__ = ["EnvironmentFingerprint", "COMPARABLE_FIELDS"]

#: Fields whose change makes timings incomparable.
COMPARABLE_FIELDS = ("gpu_name", "compute_capability", "driver_version", "backend")
_VERSION_KEYS = ("ringkernel", "numba", "numba-cuda", "numpy")


@dataclass(frozen=True)
class EnvironmentFingerprint:
    """Where a measurement was taken. Missing facts are ``None``, never guessed."""

    backend: str
    gpu_name: str | None = None
    compute_capability: str | None = None
    driver_version: str | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    max_sm_clock_mhz: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    host: str = ""
    platform: str = ""
    python: str = ""
    captured_at: str = ""

    @classmethod
    def capture(cls) -> "EnvironmentFingerprint":
        """Read the current environment (queries the device through numba; nvidia-smi for clocks)."""
        from .._versions import driver_version as _driver_version
        from .._versions import library_versions as _versions
        from ..config import simulator_enabled

        versions = _versions()
        base: dict[str, Any] = dict(
            versions=versions,
            host=platform.node(),
            platform=platform.platform(),
            python=platform.python_version(),
            captured_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        if simulator_enabled():
            return cls(backend="cuda-simulator", gpu_name="numba CUDA simulator", **base)
        from ..device import GpuArchitecture

        arch = GpuArchitecture.current()
        clocks = _read_clocks()
        return cls(
            backend="cuda",
            gpu_name=arch.name,
            compute_capability=f"{arch.compute_capability[0]}.{arch.compute_capability[1]}",
            driver_version=_driver_version(),
            sm_clock_mhz=clocks.get("sm"),
            mem_clock_mhz=clocks.get("mem"),
            max_sm_clock_mhz=clocks.get("max_sm"),
            **base,
        )

    def differences(self, other: "EnvironmentFingerprint") -> list[tuple[str, Any, Any]]:
        """``(field, self's value, other's value)`` for each comparable field that differs.

        Library versions count too (``versions.numba`` etc.): a new compiler can change a
        kernel's speed as much as a new driver.
        """
        out: list[tuple[str, Any, Any]] = []
        for name in COMPARABLE_FIELDS:
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                out.append((name, a, b))
        for key in _VERSION_KEYS:
            a, b = self.versions.get(key), other.versions.get(key)
            if a != b:
                out.append((f"versions.{key}", a, b))
        return out

    def describe(self) -> str:
        parts = [self.gpu_name or self.backend]
        if self.compute_capability:
            parts.append(f"cc {self.compute_capability}")
        if self.driver_version:
            parts.append(f"driver {self.driver_version}")
        if self.sm_clock_mhz:
            parts.append(f"SM {self.sm_clock_mhz} MHz")
        vs = ", ".join(f"{k} {v}" for k, v in self.versions.items() if k in ("ringkernel", "numba-cuda", "numpy"))
        if vs:
            parts.append(vs)
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EnvironmentFingerprint":
        """Read :meth:`to_dict`'s output; unknown keys are ignored, missing ones take their defaults.

        Raises
        ------
        ConfigurationError
            A field has the wrong type; ``details['field']`` names it.
        """
        return _environment_from_dict(data, "")


_TEXT_FIELDS = ("host", "platform", "python", "captured_at")
_OPTIONAL_TEXT_FIELDS = ("gpu_name", "compute_capability", "driver_version")
_OPTIONAL_INT_FIELDS = ("sm_clock_mhz", "mem_clock_mhz", "max_sm_clock_mhz")


def _environment_from_dict(data: Any, where: str) -> EnvironmentFingerprint:
    """``EnvironmentFingerprint.from_dict`` with field paths in errors prefixed by ``where``."""
    data = _fields.require_object(data, where, "an environment fingerprint")
    kwargs: dict[str, Any] = {}
    backend = _fields.get(data, "backend", where, "a string", _fields.is_str, optional=True)
    kwargs["backend"] = "unknown" if backend is None else backend
    for name in _TEXT_FIELDS:
        value = _fields.get(data, name, where, "a string", _fields.is_str, optional=True)
        kwargs[name] = "" if value is None else value
    for name in _OPTIONAL_TEXT_FIELDS:
        kwargs[name] = _fields.get(data, name, where, "a string or null", _fields.is_str, optional=True)
    for name in _OPTIONAL_INT_FIELDS:
        kwargs[name] = _fields.get(data, name, where, "an integer (MHz) or null", _fields.is_int, optional=True)
    versions = _fields.get(data, "versions", where, "an object", lambda v: isinstance(v, Mapping), optional=True)
    for package, version in (versions or {}).items():
        if not isinstance(version, str):
            raise _fields.field_error(_fields.join(where, f"versions.{package}"), "a version string", version)
    kwargs["versions"] = dict(versions or {})
    return EnvironmentFingerprint(**kwargs)


def _read_clocks() -> dict[str, int]:
    """Current SM/memory clocks and the maximum SM clock via nvidia-smi, where it exists."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        out = subprocess.run(
            [exe, "--query-gpu=clocks.sm,clocks.mem,clocks.max.sm", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip().splitlines()  # fmt: skip
        sm, mem, max_sm = (int(x.strip()) for x in out[0].split(","))
        return {"sm": sm, "mem": mem, "max_sm": max_sm}
    except Exception:  # no permission, unexpected format: clocks stay unknown
        return {}
