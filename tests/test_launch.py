"""KernelModeSelector and friends: pure arithmetic, checked against device limits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkernel import (
    PRESETS,
    AccessPattern,
    ConfigurationError,
    GpuArchitecture,
    KernelMode,
    KernelModeSelector,
    KernelResources,
    LaunchConfig,
    ModeKind,
    WorkloadProfile,
)
from ringkernel.launch import GRID_STRIDE_WAVES

H200 = GpuArchitecture.preset("H200")


@pytest.fixture
def sel() -> KernelModeSelector:
    return KernelModeSelector(H200)


# -- modes --------------------------------------------------------------------------------
def test_mode_values_and_str() -> None:
    assert str(KernelMode.tiled(128)) == "Tiled(128)"
    assert KernelMode.tiled(128) == KernelMode(ModeKind.TILED, 128)
    assert str(AccessPattern.strided(4)) == "Strided(4)"
    assert KernelMode.AUTO.is_auto and not KernelMode.SOA.is_auto
    with pytest.raises(ConfigurationError):
        KernelMode.tiled(0)
    with pytest.raises(ConfigurationError):
        KernelMode(ModeKind.SOA, 16)
    with pytest.raises(ConfigurationError):
        AccessPattern.strided(0)


def test_profile_validation() -> None:
    with pytest.raises(ConfigurationError, match="non-negative"):
        WorkloadProfile(-1)
    with pytest.raises(ConfigurationError, match="avg_work_per_element"):
        WorkloadProfile(10, max_work_per_element=2, avg_work_per_element=3.0)
    with pytest.raises(ConfigurationError, match="AccessPattern"):
        WorkloadProfile(10, memory_access_pattern="sequential")  # type: ignore[arg-type]


def test_select_rules(sel: KernelModeSelector) -> None:
    assert sel.select(WorkloadProfile(10**6)) == KernelMode.ELEMENT_CENTRIC
    assert sel.select(WorkloadProfile(10**6, max_work_per_element=1000, avg_work_per_element=8)) == KernelMode.WORK_ITEM_CENTRIC
    assert sel.select(WorkloadProfile(10**4, max_work_per_element=100, avg_work_per_element=64)) == KernelMode.WARP_COOPERATIVE
    assert sel.select(WorkloadProfile(10**6, memory_access_pattern=AccessPattern.strided(8))) == KernelMode.SOA
    big = WorkloadProfile(10**8, memory_access_pattern=AccessPattern.NEIGHBOR, bytes_per_element=8)
    mode = sel.select(big)
    assert mode.kind is ModeKind.TILED and mode.tile_size is not None
    assert mode.tile_size * 8 <= H200.max_shared_memory_per_block
    small = WorkloadProfile(1000, memory_access_pattern=AccessPattern.NEIGHBOR, bytes_per_element=8)
    assert sel.select(small) == KernelMode.ELEMENT_CENTRIC
    assert sel.select(WorkloadProfile(10**8, memory_access_pattern=AccessPattern.RANDOM, bytes_per_element=8)) == KernelMode.ELEMENT_CENTRIC


# -- occupancy ----------------------------------------------------------------------------
def test_occupancy_thread_limit(sel: KernelModeSelector) -> None:
    assert sel.resident_blocks_per_sm(256) == 8
    assert sel.occupancy(256) == 1.0
    assert sel.resident_blocks_per_sm(64) == 32 and sel.occupancy(64) == 1.0
    assert sel.resident_blocks_per_sm(2048) == 0


def test_occupancy_register_limit(sel: KernelModeSelector) -> None:
    # 128 regs/thread: a 256-thread block needs 32768 registers -> 2 blocks per SM -> 25%.
    res = KernelResources(registers_per_thread=128)
    assert sel.resident_blocks_per_sm(256, res) == 2
    assert sel.occupancy(256, res) == pytest.approx(0.25)
    # Allocation granularity: 33 regs round up to 40 per thread (1280 per warp).
    assert sel.resident_blocks_per_sm(1024, KernelResources(registers_per_thread=33)) == 1


def test_occupancy_shared_memory_limit(sel: KernelModeSelector) -> None:
    res = KernelResources(shared_mem_per_block=40 * 1024)
    # 228 KiB per SM / (40 KiB + 1 KiB reserved) = 5 blocks
    assert sel.resident_blocks_per_sm(128, res) == 5
    assert sel.resident_blocks_per_sm(128, KernelResources(shared_mem_per_block=64 * 1024)) == 0


def test_block_size_follows_registers(sel: KernelModeSelector) -> None:
    assert sel.recommended_block_size(KernelMode.ELEMENT_CENTRIC) == (256, 1, 1)
    # 80 regs/thread -> 2560 per warp -> 25 warps per SM; 256-thread blocks (8 warps) fit 3
    # blocks = 24 warps, 128-thread blocks fit 6 = 24 warps, 192 (6 warps) fit 4 = 24,
    # 64-thread (2 warps) fit 12 = 24 warps; 256 stays, being preferred at equal occupancy.
    res = KernelResources(registers_per_thread=80)
    best = sel.recommended_block_size(KernelMode.ELEMENT_CENTRIC, resources=res)[0]
    assert sel.occupancy(best, res) == max(sel.occupancy(b, res) for b in range(64, 1025, 32))
    # A kernel that can only run 384 threads per block never gets more.
    capped = KernelResources(registers_per_thread=168, max_threads_per_block=384)
    assert sel.recommended_block_size(KernelMode.ELEMENT_CENTRIC, resources=capped)[0] <= 384


def test_small_element_counts_shrink_the_block(sel: KernelModeSelector) -> None:
    assert sel.recommended_block_size(KernelMode.ELEMENT_CENTRIC, elements=1) == (32, 1, 1)
    assert sel.recommended_block_size(KernelMode.ELEMENT_CENTRIC, elements=33) == (64, 1, 1)
    assert sel.recommended_block_size(KernelMode.WARP_COOPERATIVE, elements=2) == (64, 1, 1)


# -- grid ---------------------------------------------------------------------------------
def test_grid_one_thread_per_element(sel: KernelModeSelector) -> None:
    assert sel.recommended_grid_size(KernelMode.ELEMENT_CENTRIC, 1_000_003, block=256) == (3907, 1, 1)
    assert sel.recommended_grid_size(KernelMode.WARP_COOPERATIVE, 100, block=256) == (13, 1, 1)
    assert sel.recommended_grid_size(KernelMode.tiled(1024), 10_000, block=256) == (10, 1, 1)


def test_grid_stride_caps_the_grid(sel: KernelModeSelector) -> None:
    n = 1 << 28
    full = sel.recommended_grid_size(KernelMode.ELEMENT_CENTRIC, n, block=256)
    capped = sel.recommended_grid_size(KernelMode.ELEMENT_CENTRIC, n, block=256, grid_stride=True)
    assert full == (n // 256, 1, 1)
    assert capped == (132 * 8 * GRID_STRIDE_WAVES, 1, 1) or capped == full
    assert capped[0] <= full[0]


def test_grid_over_device_limit_needs_grid_stride() -> None:
    tiny = H200.with_overrides(max_grid_dim=(1000, 65535, 65535))
    sel = KernelModeSelector(tiny)
    with pytest.raises(ConfigurationError, match="grid-stride safe"):
        sel.recommended_grid_size(KernelMode.ELEMENT_CENTRIC, 10**6, block=256)
    assert sel.recommended_grid_size(KernelMode.ELEMENT_CENTRIC, 10**6, block=256, grid_stride=True)[0] <= 1000


def test_plan_explains(sel: KernelModeSelector) -> None:
    d = sel.plan(WorkloadProfile(1 << 20), resources=KernelResources(registers_per_thread=32))
    assert d.mode == KernelMode.ELEMENT_CENTRIC
    text = d.explain()
    assert "ElementCentric" in text and "32 registers/thread" in text and "grid 4096" in text


def test_auto_resolves_to_concrete_mode(sel: KernelModeSelector) -> None:
    assert sel.plan(WorkloadProfile(10)).mode != KernelMode.AUTO
    assert not sel.recommended_block_size(KernelMode.AUTO)[0] == 0


# -- LaunchConfig -------------------------------------------------------------------------
def test_launch_config_normalises_and_validates() -> None:
    c = LaunchConfig(grid=10, block=(16, 16))
    assert c.grid == (10, 1, 1) and c.block == (16, 16, 1) and c.total_threads == 2560
    for bad in (0, (1, 2, 3, 4), "x", -5, (2, 0)):
        with pytest.raises(ConfigurationError):
            LaunchConfig(grid=bad, block=32)
    with pytest.raises(ConfigurationError):
        LaunchConfig(grid=1, block=32, shared_mem=-1)
    assert LaunchConfig(1, 2048).violations(H200)
    assert LaunchConfig(1, (1, 1, 128)).violations(H200)
    assert LaunchConfig(1, 1024, shared_mem=64 * 1024).violations(H200)
    assert LaunchConfig(1, 256).violations(H200, KernelResources(max_threads_per_block=128))
    assert LaunchConfig(1, 1024).violations(H200) == []


# -- properties over all presets ----------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    arch=st.sampled_from(list(PRESETS.values())),
    n=st.integers(min_value=1, max_value=2**34),
    avg=st.floats(min_value=1.0, max_value=200.0),
    skew=st.integers(min_value=1, max_value=50),
    regs=st.one_of(st.none(), st.integers(min_value=16, max_value=255)),
    smem=st.sampled_from([0, 1024, 16384, 48 * 1024]),
    grid_stride=st.booleans(),
    pattern=st.sampled_from([AccessPattern.SEQUENTIAL, AccessPattern.RANDOM, AccessPattern.NEIGHBOR, AccessPattern.strided(3)]),
)
def test_plans_never_exceed_device_limits(arch, n, avg, skew, regs, smem, grid_stride, pattern) -> None:  # type: ignore[no-untyped-def]
    sel = KernelModeSelector(arch)
    mx = max(1, math.ceil(avg * skew))
    profile = WorkloadProfile(n, max_work_per_element=mx, avg_work_per_element=avg, memory_access_pattern=pattern, bytes_per_element=8)
    res = KernelResources(registers_per_thread=regs, shared_mem_per_block=smem)
    try:
        d = sel.plan(profile, grid_stride=grid_stride, resources=res)
    except ConfigurationError as exc:
        # Only allowed failure: a non-grid-stride kernel with more blocks than the grid holds.
        assert not grid_stride and "grid limit" in str(exc)
        return
    assert d.mode != KernelMode.AUTO
    assert d.config.violations(arch, res) == []
    assert d.block[0] % arch.warp_size == 0
    threads = d.config.total_threads
    if d.mode.kind is ModeKind.TILED:
        assert d.grid[0] * d.mode.tile_size >= n or grid_stride
    elif not grid_stride:
        assert threads >= sel.threads_needed(d.mode, n)  # every work unit has a thread
    if regs is not None or smem:
        assert d.resident_blocks_per_sm >= 1 or smem > arch.max_shared_memory_per_block


def test_launches_from_several_threads_on_the_simulator() -> None:
    """A @gpu_kernel using ringkernel's intrinsics, launched from four threads at once (numba's
    simulator swaps module globals during a launch: ringkernel serialises simulated launches)."""
    import threading

    import numpy as np
    from numba import cuda

    from ringkernel import global_thread_id, gpu_kernel, grid_stride

    @gpu_kernel(grid_stride=True)
    def scale_by(x, s, out):  # type: ignore[no-untyped-def]
        for i in range(global_thread_id(), out.size, grid_stride()):
            out[i] = x[i] * s

    x = cuda.to_device(np.arange(9.0))
    outs = [cuda.device_array(9) for _ in range(4)]
    errors: list[str] = []

    def worker(k: int) -> None:
        try:
            for _ in range(3):
                scale_by(x, float(k), outs[k])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k in range(4):
        np.testing.assert_allclose(outs[k].copy_to_host(), np.arange(9.0) * k)
