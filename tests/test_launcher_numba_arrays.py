"""The launcher's reader and guard for numba's own ``DeviceNDArray`` (the GPU's hot path).

numba's real array classes are needed (the simulator has others), so the checks run in a
subprocess without the simulator, over ``MemoryPointer`` objects at made-up addresses: no
memory is allocated, no driver is called, no GPU is touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import ctypes, json
import numpy as np
from numba.cuda.cudadrv.devicearray import DeviceNDArray
from numba.cuda.cudadrv.driver import MemoryPointer
from ringkernel.compile import launcher as L

def arr(ptr, shape, dtype=np.float32, order="C"):
    dt = np.dtype(dtype)
    strides = np.empty(shape, dt, order=order).strides
    mp = MemoryPointer(context=None, pointer=ctypes.c_void_p(ptr), size=int(np.prod(shape)) * dt.itemsize)
    return DeviceNDArray(shape, strides, dt, gpu_data=mp)

out = {}
a = arr(0x10000, (37, 11))
info = L.describe_arg(a)
cai = a.__cuda_array_interface__
out["values"] = list(info.values)
out["expect"] = [0, 0, 37 * 11, 4, cai["data"][0], 37, 11, 44, 4]
out["key"] = list(info.type_key)
out["cached"] = info.ref is not None and L.describe_arg(a) is info
guard, stream_check = L.guard_for(a)
out["stream_check"] = stream_check
out["same_layout"] = guard(arr(0x20000, (37, 11)))
out["shape"] = guard(arr(0x50000, (36, 11)))  # another shape: refused
out["f_order"] = guard(arr(0x30000, (37, 11), order="F"))  # same shape, other strides
out["dtype"] = guard(arr(0x40000, (37, 11), np.int32))  # same strides, other dtype
out["numpy"] = guard(np.zeros((37, 11), np.float32))
print(json.dumps(out))
"""


def test_numba_arrays_are_read_and_guarded_from_their_attributes() -> None:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(RINGKERNEL_SIMULATOR="0", PYTHONPATH=f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}")
    run = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["values"] == out["expect"]  # what the interface says, read from the attributes
    assert out["key"] == ["array", "<f4", 2, "C", False] and out["cached"]
    assert out["stream_check"] is None
    assert out["same_layout"] == 0x20000
    assert out["shape"] is None and out["f_order"] is None and out["dtype"] is None and out["numpy"] is None
