"""A kernel's indexing analysed while another thread's kernel runs on numba's simulator, which
swaps the `cuda` module in the kernel module's globals during a launch: the analysis must still
see cuda.grid (it failed every time before; found by a review's 8-thread stress of @elementwise)."""

import threading
import numpy as np
from numba import cuda
from ringkernel import gpu_kernel


def body_a(x):
    i = cuda.grid(1)
    if i < x.size:
        x[i] += 1


def body_b(x):
    i = cuda.grid(1)
    if i < x.size:
        x[i] *= 2


def test_indexing_while_another_kernel_runs_on_the_simulator() -> None:
    """(On a GPU nothing is swapped: the test passes there trivially.)"""
    ka = gpu_kernel(body_a)
    x = cuda.to_device(np.zeros(64))
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            ka(x)

    t = threading.Thread(target=spin)
    t.start()
    bad = 0
    try:
        for _ in range(300):
            ix = gpu_kernel(body_b).indexing
            bad += ix.ndim != 1
    finally:
        stop.set()
        t.join()
    assert bad == 0, bad


def test_a_plain_cuda_jit_kernel_launched_beside_a_gpu_kernel() -> None:
    """A plain @cuda.jit kernel launched in a loop on another thread while GpuKernels launch
    here: numba's simulator keeps a launch's context in a module global, so the plain launches
    take ringkernel's simulated-launch lock too (a review's stress: AttributeError before)."""
    from ringkernel.kernel.core import _lock_simulated_launches

    _lock_simulated_launches()

    @cuda.jit
    def plain(x):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < x.size:
            x[i] += 1

    kb = gpu_kernel(body_b)
    xp = cuda.to_device(np.zeros(64))
    stop = threading.Event()
    errors: list[BaseException] = []
    launched = [0]

    def spin() -> None:
        try:
            while not stop.is_set():
                plain[2, 32](xp)
                launched[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    y = cuda.to_device(np.ones(64))  # (before: this module's `cuda` is swapped during the plain launches)
    t = threading.Thread(target=spin)
    t.start()
    try:
        for _ in range(50):
            kb(y)
    finally:
        stop.set()
        t.join()
    assert not errors, errors[0]
    np.testing.assert_array_equal(y.copy_to_host(), 2.0 ** 50)
    np.testing.assert_array_equal(xp.copy_to_host(), float(launched[0]))


_FIRST_USE_FROM_16_THREADS = r"""
import os, sys, threading
sys.setswitchinterval(1e-6)
import numpy as np
from ringkernel import GpuMemoryPool
assert "numba.cuda" not in sys.modules, "numba.cuda imported before the threads start"
pool = GpuMemoryPool()
errs = []
def work(i):
    try:
        if i % 2:
            b = pool.allocate(64)
            try:
                a = b.as_array(16, np.float32)
                a.copy_to_device(np.arange(16, dtype=np.float32))
                assert (a.copy_to_host() == np.arange(16)).all()
            finally:
                b.free()
        else:
            pool.device_array(16, np.float32)
    except BaseException as e:
        errs.append(f"{type(e).__name__}: {e}")
ts = [threading.Thread(target=work, args=(i,)) for i in range(16)]
[t.start() for t in ts]
[t.join() for t in ts]
print("ERRORS", errs[:3], len(errs))
"""


def test_first_use_of_numba_cuda_from_many_threads_at_once() -> None:
    """numba.cuda imported for the first time by 16 threads at once (each making a pool array):
    Python's import machinery raised `_DeadlockError` in 1-3 of them in every run (the
    simulator's modules imported in opposite orders); `config.ensure_numba_cuda` serialises it.
    Two fresh interpreters (the race needs a first import)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "RINGKERNEL_SIMULATOR": "1"}
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", _FIRST_USE_FROM_16_THREADS], capture_output=True, text=True,
                           timeout=300, env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        assert "ERRORS [] 0" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
