"""The queues' device code compiled for the H200 (sm_90) by NVIDIA's own compiler, in CI.

The simulator never compiles device code: it cannot show that the warp forms compile at all,
that a message moves in 16-byte accesses rather than byte by byte, or that the memory-ordering
instructions are the ones docs/messaging.md argues for. NVVM (the ``nvidia-nvvm`` wheel) and
NVRTC (``nvidia-cuda-nvrtc``) compile without a GPU, so this runs on every CI machine; the GPU
tests then run the same code on the H200.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).parent / "ptx" / "compile_messaging.py"
#: messages copied by each kernel (a push copies one in, a pop one out)
COPIES = {
    "produce_thread": 1, "consume_thread": 1, "produce_warp": 1, "consume_warp": 1, "mixed_thread": 2,
    "mixed_warp": 2, "mixed_partitioned": 2, "one_local_message": 2, "pq_pop_one": 1,
}  # fmt: skip


@pytest.fixture(scope="module")
def ptx_counts() -> dict[str, dict[str, int]]:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "RINGKERNEL_SIMULATOR": "0"}
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=600)
    if r.returncode and ("libnvvm" in r.stderr or "libnvrtc" in r.stderr):
        pytest.skip("NVVM/NVRTC not installed: pip install nvidia-nvvm nvidia-cuda-nvrtc (the test extra has them)")
    assert r.returncode == 0, r.stderr[-4000:]
    counts: Any = json.loads(r.stdout.strip().splitlines()[-1])
    return counts


def test_every_kernel_compiles(ptx_counts: dict[str, dict[str, int]]) -> None:
    assert set(ptx_counts) == set(COPIES)


def test_messages_move_in_16_byte_accesses(ptx_counts: dict[str, dict[str, int]]) -> None:
    # a 64-byte message: four 16-byte loads and stores per copy (the byte path is only the
    # fallback for a misaligned address, behind a run-time check)
    # (not counted for the local message: the compiler keeps parts of it in registers)
    for name, c in ptx_counts.items():
        if name != "one_local_message":
            assert c["wide_load"] == c["wide_store"] == 4 * COPIES[name], (name, c)


def test_ordering_instructions_are_the_documented_ones(ptx_counts: dict[str, dict[str, int]]) -> None:
    for name, c in ptx_counts.items():
        copies = COPIES[name]
        assert c["fence_sc"] == 0, f"{name}: fence.sc/membar.gl where fence.acq_rel.gpu suffices"
        assert c["cas"] == 0, f"{name}: a CAS loop (claims are fetch-and-add)"
        assert c["fence_acq_rel"] == 2 * copies, f"{name}: an acquire and a release fence per message"
        assert c["relaxed_load"] >= 3 * copies, f"{name}: ld.relaxed.gpu for the claim check and the spin"


def test_warp_forms_vote_shuffle_and_sync(ptx_counts: dict[str, dict[str, int]]) -> None:
    for name, c in ptx_counts.items():
        warp = name.endswith("_warp")
        assert (c["vote"] > 0) == warp and (c["shfl"] > 0) == warp and (c["bar_warp"] > 0) == warp, (name, c)
