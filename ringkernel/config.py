"""The one place that reads ``RINGKERNEL_*`` (and the simulator's) environment variables.

=============================  ==========================================================
variable                       meaning
=============================  ==========================================================
``RINGKERNEL_CACHE_DIR``       directory of the on-disk kernel cache (default: the
                               platform's user cache dir + ``ringkernel``)
``RINGKERNEL_GPU_TESTS``       ``1``: the test suite runs on the real GPU instead of the
                               CUDA simulator
``RINGKERNEL_DEFAULT_BLOCK``   override of the selector's preferred block size (testing
                               and tuning; must be a multiple of 32, at most 1024)
``NUMBA_ENABLE_CUDASIM``       numba's own switch: ``1`` runs kernels on the simulator
=============================  ==========================================================

:func:`settings` reads them once and caches the result; :func:`reset` forgets it (tests).
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigurationError

__all__ = ["Settings", "settings", "reset", "simulator_enabled", "use_simulator_if_no_gpu", "gpu_present"]


@dataclass(frozen=True)
class Settings:
    """A snapshot of the environment variables ringkernel reads."""

    cache_dir: Path | None
    gpu_tests: bool
    default_block: int | None

    @classmethod
    def from_environ(cls, environ: os._Environ[str] | dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        raw_dir = env.get("RINGKERNEL_CACHE_DIR") or None
        raw_block = env.get("RINGKERNEL_DEFAULT_BLOCK") or None
        block: int | None = None
        if raw_block is not None:
            try:
                block = int(raw_block)
            except ValueError:
                raise ConfigurationError(
                    f"RINGKERNEL_DEFAULT_BLOCK={raw_block!r} is not an integer",
                    hint="set it to a multiple of 32 between 32 and 1024, or unset it",
                ) from None
            if block <= 0 or block > 1024 or block % 32:
                raise ConfigurationError(
                    f"RINGKERNEL_DEFAULT_BLOCK={block} is out of range",
                    hint="set it to a multiple of 32 between 32 and 1024, or unset it",
                    details={"value": block},
                )
        return cls(
            cache_dir=Path(raw_dir).expanduser() if raw_dir else None,
            gpu_tests=env.get("RINGKERNEL_GPU_TESTS", "") == "1",
            default_block=block,
        )


@functools.lru_cache(maxsize=1)
def settings() -> Settings:
    """The environment as ringkernel sees it (read once, cached; :func:`reset` re-reads)."""
    return Settings.from_environ()


def reset() -> None:
    """Forget the cached settings so the next :func:`settings` call re-reads the environment."""
    settings.cache_clear()
    gpu_present.cache_clear()


def simulator_enabled() -> bool:
    """True when numba's CUDA simulator is (or, once numba is imported, will be) in use."""
    if "numba" in sys.modules:
        from numba import config as numba_config

        return bool(getattr(numba_config, "ENABLE_CUDASIM", 0))
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@functools.lru_cache(maxsize=1)
def gpu_present() -> bool:
    """Whether a CUDA driver with at least one device is present, asked without numba.

    Uses ``cuInit`` and ``cuDeviceGetCount`` from ``libcuda`` through ctypes, so it can run
    before numba is imported (numba decides between GPU and simulator at import time).
    """
    import ctypes

    from .compile.launcher import _load_driver_library  # imports no numba

    try:
        lib = _load_driver_library()
    except OSError:
        return False
    try:
        if lib.cuInit(0) != 0:
            return False
        count = ctypes.c_int(0)
        if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return False
        return count.value > 0
    except AttributeError:
        return False


def use_simulator_if_no_gpu() -> bool:
    """Turn on numba's CUDA simulator when there is no GPU; return True if it is on.

    Must run before ``numba`` is imported to have an effect; afterwards it only reports.
    Used by the command line (``ringkernel demo``) so the demo runs anywhere.
    """
    if "numba" not in sys.modules and not simulator_enabled() and not gpu_present():
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    return simulator_enabled()
