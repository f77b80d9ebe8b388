"""Facts about the GPU that launch planning needs: ``GpuArchitecture``, read once per device.

``GpuArchitecture.current()`` queries the current numba device (cached per process;
``reset()`` forgets it). ``GpuArchitecture.preset("H200")`` and
``GpuArchitecture.for_compute_capability((9, 0))`` plan without a device. Under numba's
CUDA simulator, ``current()`` returns :data:`SIMULATED`: a deliberately small GPU (one SM of
1024 resident threads) so that plans made for grid-stride kernels keep the simulator's
thread count, and so its run time, small. Its limits (1024 threads per block, 48 KiB shared memory) match what
the simulator enforces.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field, replace

from .errors import ConfigurationError, DeviceError

__all__ = ["GpuArchitecture", "PRESETS", "SIMULATED", "reset"]

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class GpuArchitecture:
    """What launch planning needs to know about a GPU.

    Parameters
    ----------
    name:
        Device name as the driver reports it (or the preset's name).
    compute_capability:
        ``(major, minor)``.
    sm_count:
        Number of streaming multiprocessors.
    l2_cache_bytes:
        L2 cache size.
    max_threads_per_sm:
        Resident threads per SM at full occupancy.
    max_threads_per_block:
        Largest block the device accepts.
    max_shared_memory_per_block:
        Shared memory a block may use without opting in to more (48 KiB on every
        architecture since Volta).
    warp_size:
        Threads per warp (32 on every NVIDIA GPU).
    registers_per_sm:
        32-bit registers in one SM's register file.
    max_blocks_per_sm:
        Resident blocks per SM.
    shared_memory_per_sm:
        Shared memory of one SM.
    max_registers_per_thread:
        Most registers one thread may use (255).
    max_block_dim, max_grid_dim:
        Per-dimension limits of block and grid.
    simulated:
        True for the simulator's stand-in.
    """

    name: str
    compute_capability: tuple[int, int]
    sm_count: int
    l2_cache_bytes: int
    max_threads_per_sm: int
    max_threads_per_block: int = 1024
    max_shared_memory_per_block: int = 48 * KiB
    warp_size: int = 32
    registers_per_sm: int = 65536
    max_blocks_per_sm: int = 32
    shared_memory_per_sm: int = 100 * KiB
    max_registers_per_thread: int = 255
    max_block_dim: tuple[int, int, int] = (1024, 1024, 64)
    max_grid_dim: tuple[int, int, int] = (2**31 - 1, 65535, 65535)
    simulated: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        positive = {
            "sm_count": self.sm_count,
            "max_threads_per_sm": self.max_threads_per_sm,
            "max_threads_per_block": self.max_threads_per_block,
            "warp_size": self.warp_size,
            "registers_per_sm": self.registers_per_sm,
            "max_blocks_per_sm": self.max_blocks_per_sm,
        }
        for key, value in positive.items():
            if not isinstance(value, int) or value <= 0:
                raise ConfigurationError(
                    f"GpuArchitecture.{key} must be a positive integer, got {value!r}",
                    details={key: value},
                )
        if len(self.compute_capability) != 2:
            raise ConfigurationError(
                f"compute_capability must be (major, minor), got {self.compute_capability!r}"
            )

    # -- derived ----------------------------------------------------------------------
    @property
    def cc_string(self) -> str:
        """Compute capability as ``"sm_90"``."""
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"

    @property
    def max_resident_threads(self) -> int:
        """Threads the whole device holds at once at full occupancy."""
        return self.sm_count * self.max_threads_per_sm

    def with_overrides(self, **changes: object) -> "GpuArchitecture":
        """A copy with some fields changed (e.g. to plan for a cut-down part)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> "GpuArchitecture":
        """A known GPU by name (case and spaces ignored): ``"H200"``, ``"a100"``, ``"RTX 4090"``."""
        key = _norm(name)
        for preset in PRESETS.values():
            if _norm(preset.name) == key:
                return preset
        raise ConfigurationError(
            f"no GPU preset named {name!r}",
            hint=f"use one of: {', '.join(PRESETS)}; or GpuArchitecture.current() on a machine with the GPU",
            details={"name": name},
        )

    @classmethod
    def for_compute_capability(cls, cc: tuple[int, int]) -> "GpuArchitecture":
        """The representative preset of a compute capability (the data-centre part where one exists)."""
        cc = (int(cc[0]), int(cc[1]))
        for preset in PRESETS.values():
            if preset.compute_capability == cc:
                return preset
        known = sorted({p.compute_capability for p in PRESETS.values()})
        raise ConfigurationError(
            f"no GPU preset for compute capability {cc[0]}.{cc[1]}",
            hint=f"known: {', '.join(f'{a}.{b}' for a, b in known)}; build one with GpuArchitecture(...)",
            details={"compute_capability": cc},
        )

    @classmethod
    def current(cls) -> "GpuArchitecture":
        """The current device, queried once per process and device (simulator: :data:`SIMULATED`).

        Raises :class:`~ringkernel.errors.DeviceError` when the GPU was chosen and is not usable
        (see :func:`ringkernel.config.require_backend`).
        """
        from .config import require_backend

        if require_backend():
            return SIMULATED
        from numba import cuda

        try:
            dev = cuda.get_current_device()
        except Exception as exc:  # numba raises CudaSupportError / CudaDriverError
            raise DeviceError(
                f"no usable CUDA device: {exc}",
                hint="check `nvidia-smi`; to run on numba's CUDA simulator instead, set RINGKERNEL_SIMULATOR=1 "
                "in the environment (and import ringkernel before numba.cuda)",
            ) from exc
        return _query_device(int(dev.id))


def _norm(name: str) -> str:
    return name.lower().replace(" ", "").replace("-", "").replace("_", "").replace("nvidia", "")


_lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def _query_device(device_id: int) -> GpuArchitecture:
    from numba import cuda

    with _lock:
        dev = cuda.get_current_device()

        def attr(name: str, default: int) -> int:
            try:
                return int(getattr(dev, name))
            except Exception:  # attribute unknown to this driver or binding
                return default

        cc = tuple(int(x) for x in dev.compute_capability)
        try:
            base = GpuArchitecture.for_compute_capability(cc)  # type: ignore[arg-type]
        except ConfigurationError:
            base = PRESETS["H100"]
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        return GpuArchitecture(
            name=name,
            compute_capability=cc,  # type: ignore[arg-type]
            sm_count=attr("MULTIPROCESSOR_COUNT", base.sm_count),
            l2_cache_bytes=attr("L2_CACHE_SIZE", base.l2_cache_bytes),
            max_threads_per_sm=attr("MAX_THREADS_PER_MULTI_PROCESSOR", base.max_threads_per_sm),
            max_threads_per_block=attr("MAX_THREADS_PER_BLOCK", base.max_threads_per_block),
            max_shared_memory_per_block=attr("MAX_SHARED_MEMORY_PER_BLOCK", base.max_shared_memory_per_block),
            warp_size=attr("WARP_SIZE", 32),
            registers_per_sm=attr("MAX_REGISTERS_PER_MULTIPROCESSOR", base.registers_per_sm),
            max_blocks_per_sm=attr("MAX_BLOCKS_PER_MULTIPROCESSOR", base.max_blocks_per_sm),
            shared_memory_per_sm=attr("MAX_SHARED_MEMORY_PER_MULTIPROCESSOR", base.shared_memory_per_sm),
            max_block_dim=(
                attr("MAX_BLOCK_DIM_X", 1024),
                attr("MAX_BLOCK_DIM_Y", 1024),
                attr("MAX_BLOCK_DIM_Z", 64),
            ),
            max_grid_dim=(
                attr("MAX_GRID_DIM_X", 2**31 - 1),
                attr("MAX_GRID_DIM_Y", 65535),
                attr("MAX_GRID_DIM_Z", 65535),
            ),
        )


def reset() -> None:
    """Forget queried device facts (tests; after switching devices)."""
    _query_device.cache_clear()


def _p(name: str, cc: tuple[int, int], sms: int, l2_mib: float, threads_sm: int, blocks_sm: int, smem_sm_kib: int) -> GpuArchitecture:
    return GpuArchitecture(
        name=name,
        compute_capability=cc,
        sm_count=sms,
        l2_cache_bytes=int(l2_mib * MiB),
        max_threads_per_sm=threads_sm,
        max_blocks_per_sm=blocks_sm,
        shared_memory_per_sm=smem_sm_kib * KiB,
    )


#: Known GPUs (figures from NVIDIA's architecture whitepapers and the CUDA programming
#: guide's table of per-compute-capability limits). The first preset of each compute
#: capability is the one :meth:`GpuArchitecture.for_compute_capability` returns.
PRESETS: dict[str, GpuArchitecture] = {
    "V100": _p("V100", (7, 0), 80, 6, 2048, 32, 96),
    "T4": _p("T4", (7, 5), 40, 4, 1024, 16, 64),
    "A100": _p("A100", (8, 0), 108, 40, 2048, 32, 164),
    "A10": _p("A10", (8, 6), 72, 6, 1536, 16, 100),
    "RTX 3090": _p("RTX 3090", (8, 6), 82, 6, 1536, 16, 100),
    "L4": _p("L4", (8, 9), 58, 48, 1536, 24, 100),
    "RTX 4090": _p("RTX 4090", (8, 9), 128, 72, 1536, 24, 100),
    "H100": _p("H100", (9, 0), 132, 50, 2048, 32, 228),
    "H200": _p("H200", (9, 0), 132, 60, 2048, 32, 228),
}

#: The simulator's stand-in device; see the module docstring.
SIMULATED = GpuArchitecture(
    name="numba CUDA simulator",
    compute_capability=(5, 2),
    sm_count=1,
    l2_cache_bytes=2 * MiB,
    max_threads_per_sm=1024,
    max_threads_per_block=1024,
    max_blocks_per_sm=8,
    shared_memory_per_sm=96 * KiB,
    simulated=True,
)
