"""numba's allocator plugin: its pointers are numba's, returned to the pool once, views keep them.

numba's real driver classes are needed (the simulator has no memory-manager interface), so
the checks run in a subprocess without the simulator; the pool under them is simulated and
no GPU is touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import ctypes, gc, json
import numpy as np
from numba.cuda.cudadrv.devicearray import DeviceNDArray
from numba.cuda.cudadrv.driver import MemoryPointer
from ringkernel import GpuMemoryPool
from ringkernel.memory.backend import SimulatorBackend
from ringkernel.memory.numba_plugin import PoolPointer, RingKernelMemoryManager

class Context:  # numba's pointers only keep a weak proxy of it
    pass

out = {}
context = Context()
manager = RingKernelMemoryManager(context=context)
manager.pool = pool = GpuMemoryPool(backend=SimulatorBackend())
live = lambda: pool.diagnostics().live_bytes

# the attributes numba's constructor sets, with the same values
mem = manager.memalloc(1000)
ref = MemoryPointer(mem.context, ctypes.c_void_p(mem.device_pointer_value), 1000, finalizer=lambda: None)
mine, numbas = vars(mem), vars(ref)
out["type"] = type(mem).__name__
out["extra"] = sorted(set(mine) - set(numbas))
out["missing"] = sorted(set(numbas) - set(mine))
out["same_values"] = all(
    (int(mine[k]) == int(numbas[k])) if k in ("device_pointer", "handle") else mine[k] == numbas[k]
    for k in set(mine) & set(numbas) if k != "context"
)
out["pointer"] = mem.device_ctypes_pointer.value == mem.device_pointer_value and mem.owner is mem
out["live_while_held"] = live()
del mem, ref, mine
out["live_after_drop"] = live()  # no collection needed: returned when its last reference goes

# an array over it, and a view that outlives the array (as numba's slices take: slicing
# itself needs a CUDA context)
mem = manager.memalloc(4000)
ptr = mem.device_pointer_value
arr = DeviceNDArray((1000,), (4,), np.float32, gpu_data=mem)
out["array_ptr"] = arr.device_ctypes_pointer.value == ptr
view = arr.gpu_data.view(40)
out["view_ptr"] = view.device_ctypes_pointer.value == ptr + 40
del mem, arr
gc.collect()
out["kept_by_view"] = live()
del view
out["after_view"] = live()

# free() returns the block at once, once; collection afterwards frees nothing twice
mem = manager.memalloc(300_000)  # a large block: cached when freed
mem.free()
out["after_free"] = live()
try:
    mem.free()
    out["second_free"] = "no error"
except RuntimeError as exc:
    out["second_free"] = str(exc)
other = manager.memalloc(300_000)  # gets the same cached block
out["reused"] = other.device_pointer_value == mem.device_pointer_value
del mem
gc.collect()
out["other_still_live"] = live() == 300_000
import copy
out["copies_are_itself"] = copy.copy(other) is other and copy.deepcopy(other) is other  # no second return
del other
out["zero_size"] = manager.memalloc(0).size
# a block numba's pointer holds is not freed by raw pointer (it would be handed out under the array)
from ringkernel import InvalidFree
mem = manager.memalloc(512)
try:
    pool.deallocate(mem.device_pointer_value)
    out["raw_free"] = "freed"
except InvalidFree as exc:
    out["raw_free"] = "refused" if "belongs to an array" in str(exc) else str(exc)
del mem
d = pool.diagnostics()
out["settled"] = d.live_bytes == 0 and d.large_allocations == 0
print(json.dumps(out))
"""


def test_plugin_pointers_are_numbas_and_come_back_once() -> None:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(RINGKERNEL_SIMULATOR="0", PYTHONPATH=f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}")
    run = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["type"] == "PoolPointer"
    # numba's constructor and ours set the same attributes (a new numba version adding one fails here)
    assert out["extra"] == ["_buf"] and out["missing"] == ["_finalizer"] and out["same_values"]
    assert out["pointer"]
    assert out["live_while_held"] == 1000 and out["live_after_drop"] == 0
    assert out["raw_free"] == "refused"
    assert out["array_ptr"] and out["view_ptr"] and out["kept_by_view"] == 4000 and out["after_view"] == 0
    assert out["after_free"] == 0 and out["second_free"] == "Freeing dead memory"
    assert out["reused"] and out["other_still_live"] and out["copies_are_itself"]
    assert out["zero_size"] == 0 and out["settled"]
