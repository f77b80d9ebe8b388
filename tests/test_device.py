"""GpuArchitecture: presets, lookup by compute capability, the simulated default."""

from __future__ import annotations

import pytest

from ringkernel import PRESETS, SIMULATED, ConfigurationError, GpuArchitecture


def test_presets_by_name_ignore_case_and_spaces() -> None:
    assert GpuArchitecture.preset("h200") is PRESETS["H200"]
    assert GpuArchitecture.preset("rtx4090").name == "RTX 4090"
    assert GpuArchitecture.preset("NVIDIA A100").compute_capability == (8, 0)


def test_h200_facts() -> None:
    h200 = GpuArchitecture.preset("H200")
    assert (h200.sm_count, h200.l2_cache_bytes, h200.max_threads_per_sm) == (132, 60 * 2**20, 2048)
    assert h200.cc_string == "sm_90"
    assert h200.max_resident_threads == 132 * 2048


def test_for_compute_capability_prefers_first_preset() -> None:
    assert GpuArchitecture.for_compute_capability((9, 0)).name == "H100"
    assert GpuArchitecture.for_compute_capability((8, 9)).name == "L4"


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as err:
        GpuArchitecture.preset("GTX 480")
    assert "H200" in str(err.value) and "GpuArchitecture.current()" in str(err.value)
    with pytest.raises(ConfigurationError, match="compute capability 2.0"):
        GpuArchitecture.for_compute_capability((2, 0))


def test_invalid_fields_rejected() -> None:
    with pytest.raises(ConfigurationError, match="sm_count"):
        GpuArchitecture(name="x", compute_capability=(9, 0), sm_count=0, l2_cache_bytes=1, max_threads_per_sm=2048)


def test_current_is_simulated_default_on_simulator() -> None:
    arch = GpuArchitecture.current()
    assert arch is SIMULATED and arch.simulated
    assert arch.max_threads_per_block == 1024


def test_with_overrides() -> None:
    cut = PRESETS["H100"].with_overrides(sm_count=114, name="H100 PCIe")
    assert cut.sm_count == 114 and PRESETS["H100"].sm_count == 132
