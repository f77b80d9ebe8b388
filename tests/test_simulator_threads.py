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
