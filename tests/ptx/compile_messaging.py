"""Compile the queues' device code for sm_90 with NVIDIA's real compiler (NVVM), without a GPU.

Run by tests/test_device_code_ptx.py in a subprocess (the simulator must be off before numba is
imported). Prints one JSON object: kernel name -> counts of the PTX instructions that matter.
numba asks the current device for its compute capability when it compiles a device function
for a kernel; there is no device here, so that one question is answered with (9, 0) (the H200).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "gpu")]

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import cuda, types  # noqa: E402
import numba.cuda.dispatcher as _dispatcher  # noqa: E402

import ringkernel  # noqa: E402,F401


class _H200:
    compute_capability = (9, 0)


_dispatcher.get_current_device = lambda: _H200()  # type: ignore[attr-defined]

import test_messaging_gpu as gpu_tests  # noqa: E402

from ringkernel.messaging import inbox_try_pop, inbox_try_push, pq_try_pop_into  # noqa: E402

PATTERNS = {
    "byte_load": r"ld\.global\.u8", "byte_store": r"st\.global\.u8", "wide_load": r"ld(?:\.global|\.local)?\.v2\.u64",
    "wide_store": r"st(?:\.global|\.local)?\.v2\.u64", "relaxed_load": r"ld\.relaxed\.gpu", "fence_acq_rel": r"fence\.acq_rel\.gpu",
    "fence_sc": r"fence\.sc|membar\.gl", "cas": r"atom(?:\.global)?\.cas", "atom": r"atom\.", "vote": r"vote\.",
    "shfl": r"shfl\.sync", "bar_warp": r"bar\.warp\.sync",
}  # fmt: skip


def arr(dtype: object, ndim: int = 1) -> types.Array:
    return types.Array(numba.from_dtype(np.dtype(dtype)), ndim, "C")


def main() -> None:
    M, I64, I32 = arr(gpu_tests.MSG), arr(np.int64), arr(np.int32, 2)
    P = (arr(np.int64, 2), arr(np.int64, 2), arr(gpu_tests.MSG, 2))
    (tp, tc), (wp, wc) = gpu_tests._kernels()
    mixed = gpu_tests._mixed_kernels()
    msg = gpu_tests.MSG

    def one_message(header, seqs, slots, ok):  # type: ignore[no-untyped-def]
        m = cuda.local.array(1, msg)  # a local message: the copy checks alignment at run time
        m[0]["producer"] = 7
        ok[0] = 1 if inbox_try_push(header, seqs, slots, m) else 0
        ok[1] = 1 if inbox_try_pop(header, seqs, slots, m) else 0

    def pop_one(headers, seqs, slots, p, outs, ok):  # type: ignore[no-untyped-def]
        ok[0] = 1 if pq_try_pop_into(headers, seqs, slots, p, outs, 0) else 0

    kernels = {
        "produce_thread": (tp, (I64, I64, M, types.int64, M, I64)),
        "consume_thread": (tc, (I64, I64, M, types.int64, I64, M, I64)),
        "produce_warp": (wp, (I64, I64, M, types.int64, M, I64)),
        "consume_warp": (wc, (I64, I64, M, types.int64, I64, M, I64)),
        "mixed_thread": (mixed["thread"], (I64, I64, M, types.int64, M, M, I64, I32, I64)),
        "mixed_warp": (mixed["warp"], (I64, I64, M, types.int64, M, M, I64, I32, I64)),
        "mixed_partitioned": (mixed["partitioned"], (*P, types.int64, M, M, I64, I32, I64)),
        "one_local_message": (one_message, (I64, I64, M, I64)),
        "pq_pop_one": (pop_one, (*P, types.int64, M, I64)),
    }  # fmt: skip
    out = {}
    for name, (fn, sig) in kernels.items():
        ptx, _ = cuda.compile_ptx(getattr(fn, "py_func", fn), sig, cc=(9, 0))
        out[name] = {k: len(re.findall(p, ptx)) for k, p in PATTERNS.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
