"""``KernelModeSelector``: a kernel mode, block and grid for a workload on a GPU (arithmetic on
a :class:`~ringkernel.device.GpuArchitecture` and a :class:`~.modes.WorkloadProfile`)."""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..device import GpuArchitecture
from ..errors import ConfigurationError
from .modes import (
    _BLOCK_CANDIDATES,
    GRID_STRIDE_WAVES,
    WARP_ROW,
    Dim3,
    KernelMode,
    KernelResources,
    LaunchConfig,
    LaunchDecision,
    ModeKind,
    PatternKind,
    WorkloadProfile,
    _dim3,
)

__all__ = ["KernelModeSelector"]


class KernelModeSelector:
    """Chooses a kernel mode, block and grid for a workload on a GPU.

    Parameters
    ----------
    gpu_arch:
        The GPU to plan for.
    preferred_block:
        Block size preferred for element-wise work (default 256, or
        ``RINGKERNEL_DEFAULT_BLOCK``); the occupancy search departs from it only when
        another size keeps more threads resident.
    """

    def __init__(self, gpu_arch: GpuArchitecture, *, preferred_block: int | None = None) -> None:
        if not isinstance(gpu_arch, GpuArchitecture):
            raise ConfigurationError(f"KernelModeSelector needs a GpuArchitecture, got {type(gpu_arch).__name__}")
        if preferred_block is None:
            from ..config import settings

            preferred_block = settings().default_block or 256
        if preferred_block <= 0 or preferred_block % gpu_arch.warp_size or preferred_block > gpu_arch.max_threads_per_block:
            raise ConfigurationError(
                f"preferred_block={preferred_block} must be a positive multiple of {gpu_arch.warp_size} "
                f"and at most {gpu_arch.max_threads_per_block}"
            )
        self.gpu_arch = gpu_arch
        self.preferred_block = preferred_block

    # -- mode -------------------------------------------------------------------------
    def select(self, profile: WorkloadProfile) -> KernelMode:
        """A concrete mode for ``profile`` (never ``AUTO``)."""
        return self._select(profile)[0]

    def _select(self, profile: WorkloadProfile) -> tuple[KernelMode, str]:
        arch = self.gpu_arch
        avg, mx = profile.avg_work_per_element, profile.max_work_per_element
        pattern = profile.memory_access_pattern
        if avg >= arch.warp_size:
            return KernelMode.WARP_COOPERATIVE, (
                f"average work per element {avg:g} >= warp size {arch.warp_size}: one warp per element"
            )
        if mx >= arch.warp_size and mx > 4 * avg:
            return KernelMode.WORK_ITEM_CENTRIC, (
                f"work per element is skewed (max {mx} > 4x average {avg:g}): one thread per work item balances load"
            )
        if pattern.kind is PatternKind.STRIDED and pattern.stride > 1:
            return KernelMode.SOA, (
                f"strided access (stride {pattern.stride}) does not coalesce: use a structure-of-arrays layout"
            )
        ws = profile.working_set_bytes
        if pattern.kind is PatternKind.NEIGHBOR and ws is not None and ws > arch.l2_cache_bytes:
            tile = self._tile_for(profile.bytes_per_element or 4)
            return KernelMode.tiled(tile), (
                f"neighbour access over {ws} B > L2 {arch.l2_cache_bytes} B: stage tiles of {tile} elements in shared memory"
            )
        why = "uniform work, coalesced access: one thread per element"
        if pattern.kind is PatternKind.RANDOM:
            why = "random access gains nothing from tiling: one thread per element for the most memory parallelism"
        elif pattern.kind is PatternKind.NEIGHBOR:
            why = "neighbour access whose working set fits in L2: one thread per element"
        return KernelMode.ELEMENT_CENTRIC, why

    def _tile_for(self, bytes_per_element: int) -> int:
        # Half the per-block shared memory, so two blocks fit per SM; power of two.
        budget = self.gpu_arch.max_shared_memory_per_block // 2
        tile = 1 << max(5, int(math.log2(max(1, budget // bytes_per_element))))
        return min(tile, 8192)

    def _resolve(self, mode: KernelMode, profile: WorkloadProfile | None) -> KernelMode:
        if not isinstance(mode, KernelMode):
            raise ConfigurationError(f"mode must be a KernelMode, got {mode!r}")
        if mode.is_auto:
            return self.select(profile) if profile is not None else KernelMode.ELEMENT_CENTRIC
        return mode

    # -- occupancy --------------------------------------------------------------------
    def resident_blocks_per_sm(self, block_threads: int, resources: KernelResources | None = None) -> int:
        """Blocks of ``block_threads`` one SM holds at once, limited by threads, blocks, registers, shared memory."""
        arch = self.gpu_arch
        if block_threads <= 0 or block_threads > arch.max_threads_per_block:
            return 0
        warps = -(-block_threads // arch.warp_size)
        limits = [arch.max_threads_per_sm // (warps * arch.warp_size), arch.max_blocks_per_sm]
        if resources is not None:
            if resources.max_threads_per_block and block_threads > resources.max_threads_per_block:
                return 0
            if resources.registers_per_thread:
                # Registers are allocated per warp in units of 256.
                per_warp = -(-resources.registers_per_thread * arch.warp_size // 256) * 256
                limits.append(arch.registers_per_sm // (per_warp * warps))
            if resources.shared_mem_per_block:
                if resources.shared_mem_per_block > arch.max_shared_memory_per_block:
                    return 0
                reserved = 1024 if arch.compute_capability >= (8, 0) else 0
                limits.append(arch.shared_memory_per_sm // (resources.shared_mem_per_block + reserved))
        return max(0, min(limits))

    def occupancy(self, block_threads: int, resources: KernelResources | None = None) -> float:
        """Fraction of the SM's thread slots that blocks of ``block_threads`` keep busy."""
        blocks = self.resident_blocks_per_sm(block_threads, resources)
        return blocks * block_threads / self.gpu_arch.max_threads_per_sm

    # -- block and grid ---------------------------------------------------------------
    def _preferred_block(self, mode: KernelMode) -> int:
        arch = self.gpu_arch
        if mode.kind is ModeKind.TILED:
            t = min(mode.tile_size or self.preferred_block, arch.max_threads_per_block)
            return max(arch.warp_size, t - t % arch.warp_size)
        if mode.kind is ModeKind.WORK_ITEM_CENTRIC:
            return min(128, self.preferred_block)
        return self.preferred_block

    def recommended_block_size(
        self,
        mode: KernelMode,
        *,
        resources: KernelResources | None = None,
        elements: int | None = None,
    ) -> Dim3:
        """Block shape for ``mode``: the preferred size unless another keeps more threads resident.

        With ``elements`` known and small, the block shrinks to the warps those elements need.
        """
        arch = self.gpu_arch
        mode = self._resolve(mode, None)
        preferred = self._preferred_block(mode)
        limit = arch.max_threads_per_block
        if resources is not None and resources.max_threads_per_block:
            limit = min(limit, resources.max_threads_per_block)
        limit -= limit % arch.warp_size
        if limit <= 0:
            raise ConfigurationError(
                f"the kernel allows {resources.max_threads_per_block if resources else 0} threads per block, "
                "less than one warp",
                hint="reduce the kernel's register or shared-memory use",
            )
        # Preferred first, then the usual sizes, then every other warp multiple; among equal
        # occupancies the earliest wins.
        ordered = [preferred, *_BLOCK_CANDIDATES, *range(arch.warp_size, limit + 1, arch.warp_size)]
        candidates = list(dict.fromkeys(c for c in ordered if c <= limit)) or [limit]
        rank = {c: i for i, c in enumerate(candidates)}
        best = max(candidates, key=lambda c: (self.occupancy(c, resources), -rank[c]))
        if self.occupancy(best, resources) == 0:
            # Nothing fits at full size (e.g. big static shared memory): fall back to the limit.
            best = limit
        if elements is not None and mode.kind is not ModeKind.TILED:
            threads_needed = elements * (arch.warp_size if mode.kind is ModeKind.WARP_COOPERATIVE else 1)
            small = -(-max(threads_needed, 1) // arch.warp_size) * arch.warp_size
            best = min(best, small)
        return (best, 1, 1)

    def threads_needed(self, mode: KernelMode, elements: int) -> int:
        """Threads that cover ``elements`` in ``mode`` with one work unit each."""
        mode = self._resolve(mode, None)
        if mode.kind is ModeKind.WARP_COOPERATIVE:
            return elements * self.gpu_arch.warp_size
        return elements

    def recommended_grid_size(
        self,
        mode: KernelMode,
        elements: int,
        *,
        block: int | Sequence[int] | None = None,
        grid_stride: bool = False,
        resources: KernelResources | None = None,
    ) -> Dim3:
        """Grid shape covering ``elements`` in ``mode``.

        Without ``grid_stride`` the grid always has at least one thread per work unit (and
        raises :class:`ConfigurationError` if that exceeds the device's grid limit). With it,
        the grid is capped at ``GRID_STRIDE_WAVES`` full waves of resident blocks.
        """
        return self._grid(mode, elements, block, grid_stride, resources)[0]

    def _grid(
        self,
        mode: KernelMode,
        elements: int,
        block: int | Sequence[int] | None,
        grid_stride: bool,
        resources: KernelResources | None,
    ) -> tuple[Dim3, str]:
        arch = self.gpu_arch
        if isinstance(elements, bool) or not isinstance(elements, int) or elements < 0:
            raise ConfigurationError(f"elements must be a non-negative integer, got {elements!r}")
        mode = self._resolve(mode, None)
        if block is None:
            block = self.recommended_block_size(mode, resources=resources, elements=elements)
        tpb = math.prod(_dim3(block, "block"))
        if mode.kind is ModeKind.TILED:
            assert mode.tile_size is not None
            full = max(1, -(-elements // mode.tile_size))
            why = f"one block per tile of {mode.tile_size} elements"
        else:
            full = max(1, -(-self.threads_needed(mode, elements) // tpb))
            why = "one thread per " + ("warp-element" if mode.kind is ModeKind.WARP_COOPERATIVE else "work unit")
        grid = full
        if grid_stride:
            resident = max(1, self.resident_blocks_per_sm(tpb, resources))
            cap = min(arch.sm_count * resident * GRID_STRIDE_WAVES, arch.max_grid_dim[0])
            if full > cap:
                grid = cap
                why = (
                    f"grid-stride: capped at {GRID_STRIDE_WAVES} waves of {resident} resident blocks x "
                    f"{arch.sm_count} SMs = {cap} blocks (each thread loops ~{-(-full // cap)} times)"
                )
        if grid > arch.max_grid_dim[0]:
            raise ConfigurationError(
                f"{elements} elements need {grid} blocks of {tpb} threads, over the device's grid limit "
                f"{arch.max_grid_dim[0]}",
                hint="declare the kernel grid-stride safe (gpu_kernel(grid_stride=True)) and loop over elements",
                details={"elements": elements, "grid": grid, "limit": arch.max_grid_dim[0]},
            )
        return (grid, 1, 1), why

    def plan(
        self,
        profile: WorkloadProfile,
        *,
        mode: KernelMode = KernelMode.AUTO,
        grid_stride: bool = False,
        resources: KernelResources | None = None,
        block: int | Sequence[int] | None = None,
        shared_mem: int = 0,
        stream: Any = None,
    ) -> LaunchDecision:
        """Mode, block and grid for ``profile``, with the reasons (what ``@gpu_kernel`` launches with)."""
        reasons: list[str] = []
        if mode.is_auto:
            mode, why = self._select(profile)
            reasons.append(f"mode {mode}: {why}")
        else:
            mode = self._resolve(mode, profile)
            reasons.append(f"mode {mode}: fixed by the kernel")
        if block is None:
            block3 = self.recommended_block_size(mode, resources=resources, elements=profile.element_count)
            detail = f"block {block3[0]}: occupancy {self.occupancy(block3[0], resources):.0%}"
        else:
            block3 = _dim3(block, "block")
            detail = f"block {block3[0]}x{block3[1]}x{block3[2]} fixed by the kernel: occupancy " + (
                f"{self.occupancy(math.prod(block3), resources):.0%}"
            )
        if resources is not None and resources.registers_per_thread:
            detail += f" at {resources.registers_per_thread} registers/thread"
        if resources is not None and resources.shared_mem_per_block:
            detail += f", {resources.shared_mem_per_block} B static shared memory"
        reasons.append(detail)
        grid, why = self._grid(mode, profile.element_count, block3, grid_stride, resources)
        reasons.append(f"grid {grid[0]}: {why}")
        config = LaunchConfig(grid=grid, block=block3, shared_mem=shared_mem, stream=stream)
        tpb = config.threads_per_block
        return LaunchDecision(
            mode=mode,
            config=config,
            elements=profile.element_count,
            grid_stride=grid_stride,
            resident_blocks_per_sm=self.resident_blocks_per_sm(tpb, resources),
            occupancy=self.occupancy(tpb, resources),
            reasons=tuple(reasons),
            arch_name=self.gpu_arch.name,
        )

    # -- 2-D and 3-D ------------------------------------------------------------------
    def recommended_block_shape(
        self,
        extent: Sequence[int],
        *,
        contiguous_dim: int | None = 0,
        resources: KernelResources | None = None,
        threads: int | None = None,
    ) -> Dim3:
        """Block shape for an N-D launch over ``extent`` (elements per grid dimension, x first).

        Rules, in order:

        1. The thread count is the 1-D occupancy choice (:meth:`recommended_block_size`), or
           ``threads``.
        2. Warps are formed x-fastest, so a warp reads consecutive addresses only along the
           grid dimension that runs along the array's contiguous axis (``contiguous_dim``).
           It gets one warp row (:data:`WARP_ROW`) when later dimensions exist, else all the
           threads; later dimensions take the rest in order, and threads they cannot use go
           back to it.
        3. No dimension is wider than its extent rounded up to a power of two (small arrays
           get small blocks), nor than the device's per-dimension limit.
        4. Dimensions before the contiguous one stay 1 (wider, they would split every warp
           across rows), unless the block would otherwise hold less than one warp. A block
           smaller than the occupancy choice is then accepted: small blocks still fill an
           SM up to its resident-block limit.
        """
        arch = self.gpu_arch
        ext = _extent(extent)
        nd = len(ext)
        c = 0 if contiguous_dim is None else contiguous_dim
        if not 0 <= c < nd:
            raise ConfigurationError(f"contiguous_dim={contiguous_dim} is not a dimension of a {nd}-D extent")
        total = threads if threads is not None else self.recommended_block_size(
            KernelMode.ELEMENT_CENTRIC, resources=resources, elements=math.prod(ext)
        )[0]
        cap = [min(_pow2_at_least(e), m) for e, m in zip(ext, arch.max_block_dim)]
        block = [1] * nd
        left = total
        for d in [c] + [d for d in range(nd) if d > c]:
            want = left
            if d == c and any(cap[o] > 1 for o in range(c + 1, nd)):
                want = min(WARP_ROW, left)
            block[d] = max(1, min(want, cap[d]))
            left = max(1, left // block[d])
        # Threads the later dimensions could not use go back to the contiguous one.
        used = math.prod(block)
        if used < total and cap[c] > block[c]:
            block[c] = min(cap[c], block[c] * max(1, total // used))
        # Dimensions before the contiguous one break coalescing when wider than 1 (lanes run
        # x-first): they only fill a block that would otherwise be less than one warp.
        for d in range(c - 1, -1, -1):
            used = math.prod(block)
            if used >= arch.warp_size:
                break
            block[d] = max(1, min(cap[d], arch.warp_size // used))
        while len(block) < 3:
            block.append(1)
        return (block[0], block[1], block[2])

    def plan_nd(
        self,
        extent: Sequence[int],
        *,
        contiguous_dim: int | None = 0,
        grid_stride: bool = False,
        resources: KernelResources | None = None,
        block: int | Sequence[int] | None = None,
        shared_mem: int = 0,
        stream: Any = None,
        notes: Sequence[str] = (),
    ) -> LaunchDecision:
        """Block and grid of a 2-D or 3-D element-wise launch over ``extent`` (x first).

        Without ``grid_stride`` every element gets a thread (grid = extent / block, rounded
        up, per dimension); with it the grid is capped at ``GRID_STRIDE_WAVES`` waves of
        resident blocks, shrinking the slowest dimensions first. ``notes`` are prepended to
        the reasons (what the caller knows about where the extent came from).
        """
        arch = self.gpu_arch
        ext = _extent(extent)
        nd = len(ext)
        reasons = list(notes)
        if block is None:
            b3 = self.recommended_block_shape(ext, contiguous_dim=contiguous_dim, resources=resources)
            cdesc = "xyz"[contiguous_dim] if contiguous_dim is not None else "none known"
            detail = (
                f"block {b3[0]}x{b3[1]}x{b3[2]}: {math.prod(b3)} threads at occupancy "
                f"{self.occupancy(math.prod(b3), resources):.0%}; warps run along {cdesc} (the contiguous axis)"
            )
        else:
            b3 = _dim3(block, "block")
            detail = f"block {b3[0]}x{b3[1]}x{b3[2]} fixed by the kernel: occupancy {self.occupancy(math.prod(b3), resources):.0%}"
        reasons.append(detail)
        full = [max(1, -(-e // b)) for e, b in zip(ext, b3)] + [1] * (3 - nd)
        grid = list(full)
        why = "one thread per element in every dimension"
        if grid_stride:
            tpb = math.prod(b3)
            resident = max(1, self.resident_blocks_per_sm(tpb, resources))
            cap = arch.sm_count * resident * GRID_STRIDE_WAVES
            for d in range(3):
                grid[d] = min(grid[d], arch.max_grid_dim[d])
            for d in (2, 1, 0):  # slowest dimension first
                if math.prod(grid) <= cap:
                    break
                others = math.prod(grid) // grid[d]
                grid[d] = max(1, cap // others)
            if grid != full:
                why = (
                    f"grid-stride: capped at {GRID_STRIDE_WAVES} waves of {resident} resident blocks x "
                    f"{arch.sm_count} SMs = {cap} blocks, slowest dimensions shrunk first"
                )
        for d in range(3):
            if grid[d] > arch.max_grid_dim[d]:
                raise ConfigurationError(
                    f"extent {ext} needs {grid[d]} blocks along {'xyz'[d]}, over the device's limit {arch.max_grid_dim[d]}",
                    hint="declare the kernel grid-stride safe (gpu_kernel(grid_stride=True)) and loop over "
                    "elements with cuda.gridsize, or launch it explicitly",
                    details={"extent": ext, "grid": tuple(grid), "limit": arch.max_grid_dim},
                )
        reasons.append(f"grid {grid[0]}x{grid[1]}x{grid[2]}: {why}")
        config = LaunchConfig(grid=(grid[0], grid[1], grid[2]), block=b3, shared_mem=shared_mem, stream=stream)
        tpb = config.threads_per_block
        return LaunchDecision(
            mode=KernelMode.ELEMENT_CENTRIC,
            config=config,
            elements=math.prod(ext),
            grid_stride=grid_stride,
            resident_blocks_per_sm=self.resident_blocks_per_sm(tpb, resources),
            occupancy=self.occupancy(tpb, resources),
            reasons=tuple(reasons),
            arch_name=arch.name,
            ndim=nd,
            extent=ext,
        )


def _extent(extent: Sequence[int]) -> tuple[int, ...]:
    try:
        ext = tuple(extent)
    except TypeError:
        raise ConfigurationError(f"extent must be a tuple of 1 to 3 positive ints, got {extent!r}") from None
    if not 1 <= len(ext) <= 3 or not all(type(e) is int or (hasattr(e, "__index__") and not isinstance(e, bool)) for e in ext):
        raise ConfigurationError(f"extent must be a tuple of 1 to 3 positive ints, got {extent!r}")
    ext = tuple(int(e) for e in ext)
    if any(e < 1 for e in ext):
        raise ConfigurationError(
            f"extent {ext} has an empty dimension",
            hint="skip the launch when there is nothing to do",
            details={"extent": ext},
        )
    return ext


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())
