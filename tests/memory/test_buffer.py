"""ManagedBuffer on the simulator: copies happen only when a side changed."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from ringkernel import ConfigurationError, KernelArgumentError, ManagedBuffer, ResourceClosedError
from ringkernel.kernels import vector_add
from ringkernel.memory import GpuMemoryPool, SimulatorBackend


def test_write_read_roundtrip_without_copy_back(rng: np.random.Generator) -> None:
    data = rng.standard_normal(100).astype(np.float32)
    buf = ManagedBuffer(100, np.float32, data=data)
    np.testing.assert_array_equal(buf.read(), data)
    assert (buf.h2d_copies, buf.d2h_copies) == (1, 0)  # nothing changed on the device
    with pytest.raises(ValueError):
        buf.read()[0] = 1.0  # the shadow is handed out read-only


def test_kernel_output_is_copied_back_once(rng: np.random.Generator) -> None:
    a = rng.standard_normal(300).astype(np.float32)
    b = rng.standard_normal(300).astype(np.float32)
    with ManagedBuffer(300, data=a) as ma, ManagedBuffer(300, data=b) as mb, ManagedBuffer(300) as mc:
        vector_add(ma.device_view(readonly=True), mb.device_view(readonly=True), mc.device)
        np.testing.assert_array_equal(mc.read(), a + b)
        mc.read()
        assert mc.d2h_copies == 1  # the second read had nothing new to fetch
        assert ma.d2h_copies == mb.d2h_copies == 0
        ma.read()
        assert ma.d2h_copies == 0


def test_write_after_kernel_and_stream(rng: np.random.Generator) -> None:
    s = cuda.stream()
    buf = ManagedBuffer((4, 5), np.float64, stream=s)
    np.testing.assert_array_equal(buf.read(), np.zeros((4, 5)))
    buf.mark_device_dirty()
    new = rng.standard_normal((4, 5))
    buf.write(new)  # a write makes both sides agree again
    np.testing.assert_array_equal(buf.read(), new)
    assert buf.d2h_copies == 0


def test_pooled_device_side(rng: np.random.Generator) -> None:
    pool = GpuMemoryPool(backend=SimulatorBackend())
    data = rng.standard_normal(64).astype(np.float32)
    buf = ManagedBuffer(64, data=data, pool=pool)
    assert pool.diagnostics().classes[0].in_use == 1  # 256 B block
    np.testing.assert_array_equal(buf.device.copy_to_host(), data)


def test_bad_input_and_closed() -> None:
    buf = ManagedBuffer(10, np.int32)
    with pytest.raises(KernelArgumentError, match="shape"):
        buf.write(np.zeros(11, np.int32))
    with pytest.raises(KernelArgumentError, match="astype"):
        buf.write(np.zeros(10, np.complex128))
    with pytest.raises(ConfigurationError):
        ManagedBuffer((-1,))
    buf.close()
    buf.close()
    with pytest.raises(ResourceClosedError, match="closed"):
        buf.read()
    assert "closed" in repr(buf)


def test_write_refuses_values_the_buffer_cannot_hold_and_other_shapes() -> None:
    """write() narrowed silently before (an adversarial trial: [100, 200, 300] into int8 gave
    [100, -56, 44]; a (3, 2) array went into a (2, 3) buffer reshaped)."""
    with ManagedBuffer((3,), np.int8) as b:
        with pytest.raises(KernelArgumentError, match="cannot hold"):
            b.write([100, 200, 300])
        b.write([100, -100, 7])  # int64 values that fit: fine
        np.testing.assert_array_equal(b.read(), [100, -100, 7])
    with ManagedBuffer((2,), np.float16) as h:
        with pytest.raises(KernelArgumentError, match="cannot hold"):
            h.write(np.array([1e6, 1.0]))
        h.write(np.array([0.1, np.inf]))  # a float's precision, and an inf already there: fine
        assert h.read()[1] == np.inf
    with ManagedBuffer((2, 3), np.float32) as m:
        with pytest.raises(KernelArgumentError, match="shape"):
            m.write(np.zeros((3, 2), np.float32))
        m.write(np.arange(6, dtype=np.float32))  # flat, as many elements: fine
        np.testing.assert_array_equal(m.read(), np.arange(6).reshape(2, 3))
