"""ResourceGuard and MemoryEstimate, and the InsufficientMemory message quoted in docs/memory.md."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from ringkernel import ConfigurationError, InsufficientMemory, MemoryEstimate, ResourceGuard

ROOT = Path(__file__).resolve().parents[2]


def test_estimate() -> None:
    e = MemoryEstimate.for_arrays(1000, 4, 4, 4, overhead_bytes=100)
    assert (e.per_element_bytes, e.total_bytes) == (12, 12_100)
    with pytest.raises(ConfigurationError):
        MemoryEstimate(-1, 10)


def test_guard_arithmetic() -> None:
    g = ResourceGuard(max_memory_bytes=10_000, safety_margin=0.3)
    assert g.available_bytes == 7000
    assert g.can_allocate(MemoryEstimate(7, 1000)) and not g.can_allocate(MemoryEstimate(7, 1001))
    assert g.max_safe_elements(12) == 583 and g.max_safe_elements(12, overhead_bytes=1000) == 500
    for bad in (dict(safety_margin=1.0), dict(safety_margin=-0.1), dict(max_memory_bytes=0)):
        with pytest.raises(ConfigurationError):
            ResourceGuard(**bad)  # type: ignore[arg-type]


def test_guard_reads_device_memory_through_mem_info() -> None:
    g = ResourceGuard(safety_margin=0.5, mem_info=lambda: (8_000, 16_000))
    assert g.available_bytes == 4000
    sim = ResourceGuard()  # the simulator backend's stand-in device
    assert sim.available_bytes > 0


def test_insufficient_memory_message_is_the_documented_one() -> None:
    g = ResourceGuard(max_memory_bytes=4 * 2**30, safety_margin=0.3)  # a 4 GiB budget
    with pytest.raises(InsufficientMemory) as err:
        g.check_allocation(MemoryEstimate.for_arrays(400_000_000, 4, 4, 4))
    e = err.value
    assert (e.needed, e.available, e.recommended_max) == (4_800_000_000, 3_006_477_107, 250_539_758)
    first_line = str(e).splitlines()[0]
    assert first_line == (
        "Insufficient GPU memory: need 4800000000 bytes, have 3006477107 bytes. Reduce workload to 250539758 elements."
    )
    doc = (ROOT / "docs" / "memory.md").read_text()
    assert first_line in doc and str(e).splitlines()[1].strip() in doc


def test_reserve_holds_and_releases() -> None:
    g = ResourceGuard(max_memory_bytes=1000, safety_margin=0.0)
    with g.reserve(MemoryEstimate(1, 600)):
        assert g.available_bytes == 400
        with pytest.raises(InsufficientMemory):
            with g.reserve(MemoryEstimate(1, 500)):
                pass
    assert g.available_bytes == 1000


def test_reserve_is_thread_safe() -> None:
    g = ResourceGuard(max_memory_bytes=100, safety_margin=0.0)
    granted: list[int] = []
    barrier = threading.Barrier(8)

    def take() -> None:
        barrier.wait()
        try:
            with g.reserve(MemoryEstimate(1, 30)):
                granted.append(1)
                barrier_ok.wait()
        except InsufficientMemory:
            barrier_ok.wait()

    barrier_ok = threading.Barrier(8)
    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 3  # 3 x 30 <= 100 < 4 x 30
    assert re.match(r"\d+", str(g.available_bytes))


def test_estimates_take_numpy_ints_and_warm_bucket_takes_a_count() -> None:
    """np.int64 sizes were refused as "not an int"; warm_bucket(cls, 5000.5) raised a raw
    NumPy TypeError (an adversarial trial)."""
    import numpy as np

    from ringkernel import ConfigurationError
    from ringkernel.memory import GpuMemoryPool, MemoryEstimate, SimulatorBackend, SizeClass

    e = MemoryEstimate(np.int64(4), np.int32(10), np.uint8(2))
    assert e.total_bytes == 42 and type(e.per_element_bytes) is int
    with GpuMemoryPool(backend=SimulatorBackend()) as pool:
        with pytest.raises(ConfigurationError, match="count of blocks"):
            pool.warm_bucket(SizeClass.SIZE_4KB, 5000.5)  # type: ignore[arg-type]
        pool.warm_bucket(SizeClass.SIZE_4KB, np.int64(3))
