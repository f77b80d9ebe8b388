"""Versions of ringkernel, its dependencies and the CUDA driver, for reports and fingerprints."""

from __future__ import annotations

import platform

_PACKAGES = (
    "numba", "numba-cuda", "numpy", "scipy", "nvtx", "platformdirs",
    "cuda-bindings", "cupy-cuda13x", "cupy-cuda12x",
)  # fmt: skip


def library_versions() -> dict[str, str]:
    """Installed versions of Python, ringkernel and the packages it works with."""
    from importlib import metadata

    from . import __version__

    out = {"python": platform.python_version(), "ringkernel": __version__}
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def driver_version() -> str | None:
    """The CUDA driver's version as ``"13.0"`` (``None`` without a driver or on the simulator)."""
    try:
        from numba import cuda

        major, minor = cuda.cudadrv.driver.driver.get_version()
        return f"{major}.{minor}"
    except Exception:
        return None
