"""Every argument is checked before launch: wrong kinds are refused naming the parameter and the fix."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numba import cuda

from ringkernel import GpuMemoryPool, KernelArgumentError, LaunchConfigError, ManagedBuffer, gpu_kernel


@gpu_kernel
def axpy(a, x, y):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < y.size:
        y[i] = a * x[i] + y[i]


class _HostThing:
    """Looks like an array (``__array__``) but lives in host memory, like a CPU tensor."""

    def __array__(self, dtype: Any = None) -> np.ndarray:
        return np.zeros(3)


def _pool_buffer() -> Any:
    pool = GpuMemoryPool()
    return pool.allocate(64)


BAD = [
    # (what is passed as x, words the message must contain, words the hint must contain)
    ([1.0, 2.0, 3.0], ["'x'", "list"], ["to_device"]),
    (None, ["'x'", "None"], ["device array"]),
    ("abc", ["'x'", "str"], ["frombuffer"]),
    (b"abc", ["'x'", "bytes"], ["frombuffer"]),
    ({"a": 1}, ["'x'", "dict"], ["separate arguments"]),
    (np.float32(3)[()] if False else np.array(3.0), ["'x'", "0-d"], ["item()"]),
    (object(), ["'x'", "builtins.object"], ["__cuda_array_interface__"]),
    (_HostThing(), ["'x'", "host memory"], ["to_device"]),
    ((1.0, "a"), ["'x'", "tuple"], ["numbers and device arrays"]),
]


@pytest.mark.parametrize("value, in_msg, in_hint", BAD, ids=[type(b[0]).__name__ for b in BAD])
def test_bad_argument_refused(value: Any, in_msg: list[str], in_hint: list[str]) -> None:
    y = cuda.to_device(np.zeros(5, np.float32))
    with pytest.raises(KernelArgumentError) as err:
        axpy(np.float32(2), value, y)
    e = err.value
    for word in in_msg:
        assert word in e.message, (word, e.message)
    assert e.hint is not None
    for word in in_hint:
        assert word in e.hint, (word, e.hint)
    assert e.details["parameter"] == "x" and e.details["position"] == 1
    assert "tid=" not in str(e) and "ctaid" not in str(e)  # refused before any simulated thread ran


def test_integer_beyond_64_bits_refused() -> None:
    y = cuda.to_device(np.zeros(5, np.float32))
    with pytest.raises(KernelArgumentError, match="'a'.*64 bits"):
        axpy(2**70, cuda.to_device(np.ones(5, np.float32)), y)


def test_pooled_buffer_refused_with_method() -> None:
    buf = _pool_buffer()
    y = cuda.to_device(np.zeros(5, np.float32))
    with pytest.raises(KernelArgumentError) as err:
        axpy(np.float32(1), buf, y)
    assert "PooledBuffer" in err.value.message and "'x'" in err.value.message
    assert "as_array(shape, dtype)" in (err.value.hint or "")
    x = buf.as_array(5, np.float32)  # the method the hint names works
    x.copy_to_device(np.arange(5, dtype=np.float32))
    axpy(np.float32(2), x, y)
    np.testing.assert_array_equal(y.copy_to_host(), 2 * np.arange(5, dtype=np.float32))
    buf.free()


def test_managed_buffer_accepted(rng: np.random.Generator) -> None:
    n = 37
    xs = rng.random(n, dtype=np.float32)
    ys = rng.random(n, dtype=np.float32)
    with ManagedBuffer(n, np.float32, data=xs) as mx, ManagedBuffer(n, np.float32, data=ys) as my:
        axpy(np.float32(3), mx, my)
        np.testing.assert_allclose(my.read(), 3 * xs + ys, rtol=1e-6)
        assert mx.d2h_copies == 0  # x is only read: its host side stays valid, nothing copied back
        np.testing.assert_array_equal(mx.read(), xs)
        assert mx.d2h_copies == 0


def test_strided_array_against_contiguous_signature(rng: np.random.Generator) -> None:
    @gpu_kernel(signatures=["void(float32[::1], float32[::1])"])
    def copy(src, dst):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < dst.size:
            dst[i] = src[i]

    base = cuda.to_device(rng.random(40, dtype=np.float32))
    strided = base[::2]
    dst = cuda.device_array(20, np.float32)
    with pytest.raises(KernelArgumentError) as err:
        copy(strided, dst)
    msg = str(err.value)
    assert "strided" in msg and "float32[::1]" in msg
    copy(cuda.to_device(np.ascontiguousarray(strided.copy_to_host())), dst)  # contiguous: accepted

    @gpu_kernel(signatures=["void(float32[:], float32[:])"])
    def copy_any(src, dst):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < dst.size:
            dst[i] = src[i]

    copy_any(strided, dst)  # declared any layout: strided is read correctly
    np.testing.assert_array_equal(dst.copy_to_host(), base.copy_to_host()[::2])


def test_host_transfer_copies_back_only_written_arrays(rng: np.random.Generator) -> None:
    x = rng.random(33, dtype=np.float32)
    x.flags.writeable = False  # an input: copying into it would raise
    y = rng.random(33, dtype=np.float32)
    expect = 2 * x + y
    axpy(np.float32(2), x, y, host_transfer=True)
    np.testing.assert_allclose(y, expect, rtol=1e-6)


def test_host_transfer_refuses_read_only_output_before_launch(rng: np.random.Generator) -> None:
    x = rng.random(9, dtype=np.float32)
    y = np.zeros(9, np.float32)
    y.flags.writeable = False
    with pytest.raises(KernelArgumentError) as err:
        axpy(np.float32(2), x, y, host_transfer=True)
    assert "'y'" in err.value.message and "read-only" in err.value.message
    assert "copy()" in (err.value.hint or "")


def test_tuple_of_numbers_passes() -> None:
    @gpu_kernel
    def affine(coef, out):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < out.size:
            out[i] = coef[0] * i + coef[1]

    out = cuda.device_array(7, np.float64)
    affine((2.0, 1.0), out)
    np.testing.assert_array_equal(out.copy_to_host(), 2.0 * np.arange(7) + 1.0)


def test_structured_scalar_refused() -> None:
    rec = np.zeros(1, dtype=[("a", np.float32), ("b", np.int32)])[0]
    with pytest.raises(KernelArgumentError, match="structured NumPy scalar"):
        axpy(rec, cuda.to_device(np.ones(5, np.float32)), cuda.to_device(np.zeros(5, np.float32)))


def test_host_transfer_into_a_strided_view_is_refused(rng: np.random.Generator) -> None:
    base = np.zeros(40, np.float32)
    with pytest.raises(KernelArgumentError) as err:
        axpy(np.float32(2), rng.random(20, dtype=np.float32), base[::2], host_transfer=True)
    assert "non-contiguous" in err.value.message and "np.ascontiguousarray" in (err.value.hint or "")
    x = rng.random(40, dtype=np.float32)[::2]  # a strided *input* is fine: it is only copied in
    y = np.zeros(20, np.float32)
    axpy(np.float32(2), x, y, host_transfer=True)
    np.testing.assert_allclose(y, 2 * x, rtol=1e-6)


def test_per_block_output_is_refused() -> None:
    @gpu_kernel
    def partial_sums(a, out, sums):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < a.size:
            out[i] = a[i]
            cuda.atomic.add(sums, cuda.blockIdx.x, a[i])

    with pytest.raises(LaunchConfigError, match="blockIdx.x without threadIdx.x"):
        partial_sums(cuda.to_device(np.ones(100)), cuda.to_device(np.zeros(100)), cuda.to_device(np.zeros(4)))


# -- an adversarial trial's silent wrong answers with host_transfer (each now right, or refused) ----
@cuda.jit(device=True)
def _put(src, dst, i):  # type: ignore[no-untyped-def]
    dst[i] = src[i] + 1


@cuda.jit(device=True)
def _put_star(*arrs):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < arrs[1].size:
        arrs[1][i] = arrs[0][i] + 1


def test_writes_the_analysis_used_to_miss_are_copied_back() -> None:
    @gpu_kernel
    def caller_star(a, out):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < out.size:
            t = (a, out, i)
            _put(*t)

    @gpu_kernel
    def callee_star(a, out):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < a.size:
            _put_star(a, out)

    rec = np.dtype([("x", np.float64), ("y", np.float64)])

    @gpu_kernel
    def field(a, out):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < a.size:
            out[i].x = 2 * a[i]

    for k in (caller_star, callee_star):
        a, out = np.arange(8, dtype=np.float32), np.zeros(8, np.float32)
        k[1, 32](a, out, host_transfer=True)
        np.testing.assert_array_equal(out, a + 1, err_msg=k.name)
    a, out = np.arange(6.0), np.zeros(6, rec)
    field[1, 32](a, out, host_transfer=True)
    np.testing.assert_array_equal(out["x"], 2 * a)


def test_host_arrays_sharing_memory_are_refused_with_host_transfer() -> None:
    """Each host array is copied to a device array of its own: (h, h) with x[i] += 1; y[i] += 1
    gave 1 where device arrays give 2. Refused where one of them is written."""

    @gpu_kernel
    def inc2(x, y):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < x.size:
            x[i] += 1
            y[i] += 1

    @gpu_kernel
    def copy(a, out):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < out.size:
            out[i] = a[i]

    h = np.zeros(8)
    with pytest.raises(KernelArgumentError, match="share memory") as info:
        inc2(h[:6], h[2:], host_transfer=True)  # overlapping views
    assert "to_device" in info.value.hint
    inc2(h, h, host_transfer=True)  # the very same array twice: one device array, as on the device
    np.testing.assert_array_equal(h, np.full(8, 2.0))
    copy(h[:4], h[4:], host_transfer=True)  # views that share no element: fine
    d = cuda.to_device(np.zeros(8))
    inc2(d, d)  # device arrays: one buffer
    np.testing.assert_array_equal(d.copy_to_host(), np.full(8, 2.0))
