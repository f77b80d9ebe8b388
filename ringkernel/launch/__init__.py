"""Launch configuration: kernel modes, workload profiles and the ``KernelModeSelector``.

Everything here is arithmetic on a :class:`~ringkernel.device.GpuArchitecture` and a
:class:`WorkloadProfile`; nothing touches the GPU, so every rule is unit-tested on a laptop.

The Rust design's enums with payloads (``KernelMode::Tiled { tile_size }``,
``AccessPattern::Strided { stride }``) become frozen dataclasses carrying an ``Enum`` tag
(``mode.kind``) and the payload, with the payload-free members as class constants:
``KernelMode.ELEMENT_CENTRIC``, ``KernelMode.tiled(256)``. They are immutable, hashable and
work with ``match mode.kind:``.
"""

from .modes import (
    GRID_STRIDE_WAVES,
    WARP_ROW,
    AccessPattern,
    KernelMode,
    KernelResources,
    LaunchConfig,
    LaunchDecision,
    ModeKind,
    PatternKind,
    WorkloadProfile,
)
from .selector import KernelModeSelector

__all__ = [
    "ModeKind",
    "KernelMode",
    "PatternKind",
    "AccessPattern",
    "WorkloadProfile",
    "KernelResources",
    "LaunchConfig",
    "LaunchDecision",
    "KernelModeSelector",
    "GRID_STRIDE_WAVES",
    "WARP_ROW",
]
