"""Launch hooks on the simulator path (the GPU paths are in tests/test_runtime_fake_driver.py)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from ringkernel import ConfigurationError, add_launch_hook, gpu_kernel, launch_hooks, remove_launch_hook

pytestmark = pytest.mark.usefixtures("launch_reports")


@gpu_kernel
def double(a, out):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < out.size:
        out[i] = 2 * a[i]


def test_hooks_see_automatic_and_explicit_launches(rng: np.random.Generator) -> None:
    a = cuda.to_device(rng.random(300))
    out = cuda.device_array(300)
    seen = []
    h = add_launch_hook(seen.append)
    assert seen.append in launch_hooks()
    try:
        double(a, out)
        double[2, 256](a, out)
    finally:
        remove_launch_hook(h)
        remove_launch_hook(h)  # twice: harmless
    double(a, out)
    assert [e.kind for e in seen] == ["auto", "explicit"]
    assert seen[0].elements == 300 and seen[1].grid == (2, 1, 1)
    assert seen[0].timestamp_ns <= seen[1].timestamp_ns
    np.testing.assert_array_equal(out.copy_to_host(), 2 * a.copy_to_host())


def test_hook_must_be_callable() -> None:
    with pytest.raises(ConfigurationError, match="callable"):
        add_launch_hook(42)  # type: ignore[arg-type]


def test_closed_kernel_refuses_launches() -> None:
    from ringkernel import ResourceClosedError

    @gpu_kernel
    def once(a):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < a.size:
            a[i] = 1

    a = cuda.to_device(np.zeros(5))
    with once:
        once(a)
    assert once.closed
    with pytest.raises(ResourceClosedError, match="GpuKernel 'once'"):
        once(a)
    with pytest.raises(ResourceClosedError):
        once[1, 32](a)
