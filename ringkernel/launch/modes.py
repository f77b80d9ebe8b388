"""Launch configuration values: kernel modes, access patterns, workload profiles, resources,
``LaunchConfig`` and ``LaunchDecision`` (the ``KernelModeSelector`` that makes them is in
:mod:`.selector`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Sequence

from ..device import GpuArchitecture
from ..errors import ConfigurationError

__all__ = ["ModeKind", "KernelMode", "PatternKind", "AccessPattern", "WorkloadProfile", "KernelResources",
           "LaunchConfig", "LaunchDecision", "GRID_STRIDE_WAVES", "WARP_ROW", "Dim3"]

Dim3 = tuple[int, int, int]

#: Resident-grid multiple used for grid-stride kernels: the grid is capped at
#: ``sm_count * resident_blocks_per_sm * GRID_STRIDE_WAVES`` blocks. Measured on an H200
#: (benchmarks/results/launch_selection.json, 2^28-element vector add): every grid of 1 to
#: 16 full waves reaches 98.7-100% of the best swept configuration, while one thread per
#: element (no cap) reaches 59%. Two waves leave slack for uneven progress between SMs
#: while keeping the per-block overhead of very large grids away.
GRID_STRIDE_WAVES = 2

#: Block extent along the contiguous axis of a 2-D/3-D launch when other dimensions take
#: the rest of the block: one warp, so each warp reads whole 128-byte lines of 4-byte data
#: (two of 8-byte data). See KernelModeSelector.recommended_block_shape.
WARP_ROW = 32

# Candidate block sizes the occupancy search considers, in order of general preference.
_BLOCK_CANDIDATES = (256, 512, 128, 1024, 384, 768, 192, 640, 896, 64, 320, 448, 576, 704, 832, 960)


class ModeKind(Enum):
    """Tag of a :class:`KernelMode`."""

    ELEMENT_CENTRIC = "ElementCentric"
    SOA = "SoA"
    WORK_ITEM_CENTRIC = "WorkItemCentric"
    TILED = "Tiled"
    WARP_COOPERATIVE = "WarpCooperative"
    AUTO = "Auto"


@dataclass(frozen=True)
class KernelMode:
    """How work maps onto threads.

    ``ELEMENT_CENTRIC``: one thread per element. ``SOA``: one thread per element over a
    structure-of-arrays layout (chosen for strided access; the layout is the caller's).
    ``WORK_ITEM_CENTRIC``: one thread per unit of work, for skewed per-element work.
    ``tiled(n)``: one block per tile of ``n`` elements staged through shared memory.
    ``WARP_COOPERATIVE``: one warp per element, for elements with a lot of work each.
    ``AUTO``: let :meth:`KernelModeSelector.select` decide.
    """

    kind: ModeKind
    tile_size: int | None = None

    ELEMENT_CENTRIC: ClassVar["KernelMode"]
    SOA: ClassVar["KernelMode"]
    WORK_ITEM_CENTRIC: ClassVar["KernelMode"]
    WARP_COOPERATIVE: ClassVar["KernelMode"]
    AUTO: ClassVar["KernelMode"]

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ModeKind):
            raise ConfigurationError(f"KernelMode.kind must be a ModeKind, got {self.kind!r}")
        if self.kind is ModeKind.TILED:
            if not isinstance(self.tile_size, int) or self.tile_size <= 0:
                raise ConfigurationError(
                    f"KernelMode.tiled needs a positive integer tile_size, got {self.tile_size!r}",
                    hint="e.g. KernelMode.tiled(256)",
                )
        elif self.tile_size is not None:
            raise ConfigurationError(f"tile_size applies only to Tiled mode, not {self.kind.value}")

    @staticmethod
    def tiled(tile_size: int) -> "KernelMode":
        """Tiled mode with ``tile_size`` elements per tile (one block per tile)."""
        return KernelMode(ModeKind.TILED, tile_size)

    @property
    def is_auto(self) -> bool:
        return self.kind is ModeKind.AUTO

    def __str__(self) -> str:
        if self.kind is ModeKind.TILED:
            return f"Tiled({self.tile_size})"
        return self.kind.value


KernelMode.ELEMENT_CENTRIC = KernelMode(ModeKind.ELEMENT_CENTRIC)
KernelMode.SOA = KernelMode(ModeKind.SOA)
KernelMode.WORK_ITEM_CENTRIC = KernelMode(ModeKind.WORK_ITEM_CENTRIC)
KernelMode.WARP_COOPERATIVE = KernelMode(ModeKind.WARP_COOPERATIVE)
KernelMode.AUTO = KernelMode(ModeKind.AUTO)


class PatternKind(Enum):
    """Tag of an :class:`AccessPattern`."""

    SEQUENTIAL = "Sequential"
    STRIDED = "Strided"
    RANDOM = "Random"
    NEIGHBOR = "Neighbor"


@dataclass(frozen=True)
class AccessPattern:
    """How a kernel walks memory: ``SEQUENTIAL``, ``strided(n)``, ``RANDOM``, ``NEIGHBOR`` (graph-like)."""

    kind: PatternKind
    stride: int = 1

    SEQUENTIAL: ClassVar["AccessPattern"]
    RANDOM: ClassVar["AccessPattern"]
    NEIGHBOR: ClassVar["AccessPattern"]

    def __post_init__(self) -> None:
        if not isinstance(self.kind, PatternKind):
            raise ConfigurationError(f"AccessPattern.kind must be a PatternKind, got {self.kind!r}")
        if not isinstance(self.stride, int) or self.stride <= 0:
            raise ConfigurationError(f"AccessPattern stride must be a positive integer, got {self.stride!r}")
        if self.kind is not PatternKind.STRIDED and self.stride != 1:
            raise ConfigurationError("stride applies only to the Strided access pattern")

    @staticmethod
    def strided(stride: int) -> "AccessPattern":
        return AccessPattern(PatternKind.STRIDED, stride)

    def __str__(self) -> str:
        if self.kind is PatternKind.STRIDED:
            return f"Strided({self.stride})"
        return self.kind.value


AccessPattern.SEQUENTIAL = AccessPattern(PatternKind.SEQUENTIAL)
AccessPattern.RANDOM = AccessPattern(PatternKind.RANDOM)
AccessPattern.NEIGHBOR = AccessPattern(PatternKind.NEIGHBOR)


@dataclass(frozen=True)
class WorkloadProfile:
    """What the selector knows about one launch's work.

    Parameters
    ----------
    element_count:
        Number of elements (``>= 0``).
    max_work_per_element, avg_work_per_element:
        Units of work (e.g. neighbours visited) of the busiest and the average element.
    memory_access_pattern:
        How the kernel walks memory.
    bytes_per_element:
        Bytes the kernel touches per element, when known (working-set estimate for the
        L2 comparison); ``None`` means unknown.
    """

    element_count: int
    max_work_per_element: int = 1
    avg_work_per_element: float = 1.0
    memory_access_pattern: AccessPattern = AccessPattern.SEQUENTIAL
    bytes_per_element: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.element_count, bool) or not isinstance(self.element_count, int) or self.element_count < 0:
            raise ConfigurationError(
                f"WorkloadProfile.element_count must be a non-negative integer, got {self.element_count!r}"
            )
        if not isinstance(self.max_work_per_element, int) or self.max_work_per_element < 1:
            raise ConfigurationError(
                f"max_work_per_element must be an integer >= 1, got {self.max_work_per_element!r}"
            )
        if not (self.avg_work_per_element > 0) or self.avg_work_per_element > self.max_work_per_element:
            raise ConfigurationError(
                f"avg_work_per_element must be in (0, max_work_per_element={self.max_work_per_element}], "
                f"got {self.avg_work_per_element!r}"
            )
        if not isinstance(self.memory_access_pattern, AccessPattern):
            raise ConfigurationError(
                f"memory_access_pattern must be an AccessPattern, got {self.memory_access_pattern!r}",
                hint="e.g. AccessPattern.SEQUENTIAL or AccessPattern.strided(4)",
            )
        if self.bytes_per_element is not None and self.bytes_per_element <= 0:
            raise ConfigurationError(f"bytes_per_element must be positive, got {self.bytes_per_element!r}")

    @property
    def working_set_bytes(self) -> int | None:
        if self.bytes_per_element is None:
            return None
        return self.element_count * self.bytes_per_element


@dataclass(frozen=True)
class KernelResources:
    """What a compiled kernel needs per thread and block (from the compiler, when known)."""

    registers_per_thread: int | None = None
    shared_mem_per_block: int = 0
    max_threads_per_block: int | None = None


def _dim3(value: Any, what: str) -> Dim3:
    if isinstance(value, bool):
        raise ConfigurationError(f"{what} must be an int or a tuple of up to 3 ints, got {value!r}")
    if isinstance(value, int):
        dims: Sequence[Any] = (value,)
    else:
        try:
            dims = tuple(value)
        except TypeError:
            raise ConfigurationError(f"{what} must be an int or a tuple of up to 3 ints, got {value!r}") from None
    if not 1 <= len(dims) <= 3:
        raise ConfigurationError(f"{what} must have 1 to 3 dimensions, got {value!r}")
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int):
            try:
                import operator

                d = operator.index(d)
            except TypeError:
                raise ConfigurationError(f"{what} dimensions must be integers, got {value!r}") from None
        if d < 1:
            raise ConfigurationError(f"{what} dimensions must be >= 1, got {value!r}", details={what: value})
        out.append(int(d))
    while len(out) < 3:
        out.append(1)
    return (out[0], out[1], out[2])


@dataclass(frozen=True)
class LaunchConfig:
    """Grid, block, dynamic shared memory and stream of one launch.

    ``grid`` and ``block`` take an int or a tuple of up to three ints and are stored as
    3-tuples. ``stream`` is anything numba accepts as a stream (``None``: the default).
    """

    grid: Dim3
    block: Dim3
    shared_mem: int = 0
    stream: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", _dim3(self.grid, "grid"))
        object.__setattr__(self, "block", _dim3(self.block, "block"))
        if isinstance(self.shared_mem, bool) or not isinstance(self.shared_mem, int) or self.shared_mem < 0:
            raise ConfigurationError(f"shared_mem must be a non-negative integer of bytes, got {self.shared_mem!r}")

    @property
    def threads_per_block(self) -> int:
        return self.block[0] * self.block[1] * self.block[2]

    @property
    def block_count(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def total_threads(self) -> int:
        return self.threads_per_block * self.block_count

    def violations(self, arch: GpuArchitecture, resources: KernelResources | None = None) -> list[str]:
        """Every device or kernel limit this configuration breaks, as sentences (empty: fine)."""
        problems: list[str] = []
        tpb = self.threads_per_block
        limit = arch.max_threads_per_block
        if resources is not None and resources.max_threads_per_block:
            limit = min(limit, resources.max_threads_per_block)
        if tpb > limit:
            problems.append(
                f"block {self.block} has {tpb} threads; at most {limit} are allowed"
                + (" for this compiled kernel" if limit < arch.max_threads_per_block else f" on {arch.name}")
            )
        for axis, (b, m) in enumerate(zip(self.block, arch.max_block_dim)):
            if b > m:
                problems.append(f"block dimension {'xyz'[axis]}={b} exceeds the device limit {m}")
        for axis, (g, m) in enumerate(zip(self.grid, arch.max_grid_dim)):
            if g > m:
                problems.append(f"grid dimension {'xyz'[axis]}={g} exceeds the device limit {m}")
        static = resources.shared_mem_per_block if resources is not None else 0
        if self.shared_mem + static > arch.max_shared_memory_per_block:
            problems.append(
                f"shared memory {self.shared_mem} B dynamic + {static} B static exceeds "
                f"{arch.max_shared_memory_per_block} B per block"
            )
        return problems


@dataclass(frozen=True)
class LaunchDecision:
    """A chosen configuration and the reasons for it (``kernel.last_config``)."""

    mode: KernelMode
    config: LaunchConfig
    elements: int
    grid_stride: bool
    resident_blocks_per_sm: int
    occupancy: float
    reasons: tuple[str, ...]
    arch_name: str
    #: Grid dimensionality the kernel was planned for (1-3).
    ndim: int = 1
    #: Elements per grid dimension, x first (``None``: a 1-D count, ``elements``).
    extent: tuple[int, ...] | None = None

    @property
    def grid(self) -> Dim3:
        return self.config.grid

    @property
    def block(self) -> Dim3:
        return self.config.block

    def explain(self) -> str:
        """A short human-readable account of the decision."""
        over = f"{self.elements} elements"
        if self.extent is not None and len(self.extent) > 1:
            over = f"{' x '.join(str(e) for e in self.extent)} = {self.elements} elements (x first)"
        lines = [
            f"{self.ndim}-D launch, mode {self.mode}, grid {self.grid[0]}x{self.grid[1]}x{self.grid[2]}, "
            f"block {self.block[0]}x{self.block[1]}x{self.block[2]}, "
            f"{over} on {self.arch_name}",
            f"occupancy {self.occupancy:.0%} ({self.resident_blocks_per_sm} resident blocks/SM), "
            + ("grid-stride safe kernel" if self.grid_stride else "kernel needs one thread per work unit"),
        ]
        lines += [f"- {r}" for r in self.reasons]
        return "\n".join(lines)

    __str__ = explain
