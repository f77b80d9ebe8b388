"""``DeviceArray`` (``pool.device_array``) against NumPy on the simulator: copies, views,
writes through views, kernels, the interface, lifetimes and refused input."""

from __future__ import annotations

import copy
import gc
import logging
import pickle
from typing import Any

import numpy as np
import pytest
from numba import cuda

import ringkernel
from ringkernel import ConfigurationError, DeviceArray, GpuContext, GpuMemoryPool, PoolConfig, gpu_kernel
from ringkernel.kernel.args import argument_kind, array_info
from ringkernel.memory import SimulatorBackend

DTYPES = [np.float32, np.float64, np.int16, np.complex64]
SHAPES = [(1,), (37,), (5, 3), (1, 9), (3, 4, 5), (2, 1, 7)]


def _pool(backend: SimulatorBackend | None = None) -> GpuMemoryPool:
    return GpuMemoryPool(PoolConfig(), backend=backend or SimulatorBackend())


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)


def _filled(pool: GpuMemoryPool, host: np.ndarray) -> DeviceArray:
    a = pool.device_array(host.shape, host.dtype)
    a.copy_to_device(host)
    return a


def _in_use(pool: GpuMemoryPool) -> int:
    d = pool.diagnostics()
    return sum(c.in_use for c in d.classes) + d.large_allocations


# -- creation and copies ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> None:
    pool = _pool()
    host = _random(rng, shape, dtype)
    a = pool.device_array(shape, dtype)
    assert isinstance(a, DeviceArray)
    assert (a.shape, a.dtype, a.size, a.ndim) == (host.shape, host.dtype, host.size, host.ndim)
    assert a.itemsize == host.itemsize
    assert a.strides == host.strides and a.nbytes == host.nbytes and len(a) == shape[0]
    a.copy_to_device(host)
    np.testing.assert_array_equal(a.copy_to_host(), host)
    out = np.empty_like(host)
    assert a.copy_to_host(out) is out
    np.testing.assert_array_equal(out, host)
    np.testing.assert_array_equal(a.copy().copy_to_host(), host)  # a device-to-device copy
    b = pool.device_array(shape, dtype)
    b.copy_to_device(a)  # from a device array
    np.testing.assert_array_equal(b.copy_to_host(), host)


def test_copies_between_pools_with_their_own_simulated_memory(rng: np.random.Generator) -> None:
    one, two = _pool(), _pool()  # two simulated memories whose addresses coincide
    host = _random(rng, (50,), np.float32)
    a = _filled(one, host)
    b = two.device_array(50, np.float32)
    b.copy_to_device(np.zeros(50, np.float32))
    assert a.ptr == b.ptr  # the same address, in two memories
    b.copy_to_device(a)
    np.testing.assert_array_equal(b.copy_to_host(), host)
    b[10:20] = a[:10]
    host2 = host.copy()
    host2[10:20] = host[:10]
    np.testing.assert_array_equal(b.copy_to_host(), host2)
    with ringkernel.ManagedBuffer(50, pool=one) as m:  # its interface points into `one`'s memory
        with pytest.raises(ConfigurationError, match="not in this array's memory"):
            b.copy_to_device(m)


def test_int_shape_lists_numbers_and_zero_sizes(rng: np.random.Generator) -> None:
    pool = _pool()
    a = pool.device_array(np.int64(6), "float64")  # type: ignore[arg-type]
    assert a.shape == (6,) and a.dtype == np.float64
    a.copy_to_device([1, 2, 3, 4, 5, 6])  # lists take this array's dtype
    np.testing.assert_array_equal(a.copy_to_host(), np.arange(1.0, 7.0))
    assert pool.device_array([2, np.int32(3)], np.int8).shape == (2, 3)  # type: ignore[list-item]
    for shape in ((0,), (3, 0), (0, 4, 2)):
        z = pool.device_array(shape, np.float32)
        assert z.size == 0 and z.copy_to_host().shape == shape
        z.copy_to_device(np.empty(shape, np.float32))
        assert z.__cuda_array_interface__["shape"] == shape
    s = pool.device_array((), np.float32)  # 0-d
    s.copy_to_device(np.float32(2.5))
    assert s.copy_to_host()[()] == 2.5 and s[()].shape == ()


def test_a_context_allocates_device_arrays(rng: np.random.Generator) -> None:
    with GpuContext(streams=1) as ctx:
        x = ctx.allocate((4, 6), np.float64)
        assert isinstance(x, DeviceArray) and x.pool is ctx.pool
        h = rng.random((4, 6))
        x.copy_to_device(h)
        np.testing.assert_array_equal(x.copy_to_host(), h)
    assert "DeviceArray" in ringkernel.__all__ and ringkernel.DeviceArray is DeviceArray


# -- views -----------------------------------------------------------------------------------
VIEWS: list[tuple[tuple[int, ...], Any]] = [
    ((37,), np.s_[3:20]),
    ((37,), np.s_[::3]),
    ((37,), np.s_[::-1]),
    ((37,), np.s_[30:2:-4]),
    ((37,), np.s_[-5:]),
    ((37,), np.s_[5:2]),  # empty
    ((37,), np.s_[None, 4:9]),
    ((5, 3), np.s_[1]),
    ((5, 3), np.s_[-1]),
    ((5, 3), np.s_[:, 1]),
    ((5, 3), np.s_[::-2, ::2]),
    ((5, 3), np.s_[1:4, ::-1]),
    ((5, 3), np.s_[..., 0]),
    ((3, 4, 5), np.s_[1, :, ::2]),
    ((3, 4, 5), np.s_[::-1, 2]),
    ((3, 4, 5), np.s_[..., 1:3]),
    ((3, 4, 5), np.s_[2, ..., -1]),
    ((3, 4, 5), np.s_[:, None, 1:, ::-3]),
    ((3, 4, 5), np.s_[1:2, 3]),
]


def _same_strides(view: DeviceArray, expect: np.ndarray) -> bool:
    """NumPy's strides where they mean something: axes longer than 1 of a non-empty array."""
    if not expect.size:
        return True
    return all(a == b for n, a, b in zip(expect.shape, view.strides, expect.strides) if n > 1)


def _check_view(a: DeviceArray, host: np.ndarray, key: Any) -> None:
    view, expect = a[key], host[key]
    assert isinstance(view, DeviceArray) and view.base is a
    assert view.shape == expect.shape and _same_strides(view, expect), key
    if expect.size:
        offset = expect.__array_interface__["data"][0] - host.__array_interface__["data"][0]
        assert view.ptr - a.ptr == offset, key
    np.testing.assert_array_equal(view.copy_to_host(), expect)
    assert view.is_c_contiguous() == expect.flags.c_contiguous or expect.size <= 1 or 1 in expect.shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,key", VIEWS)
def test_views_match_numpy(rng: np.random.Generator, shape: tuple[int, ...], key: Any, dtype: Any) -> None:
    host = _random(rng, shape, dtype)
    _check_view(_filled(_pool(), host), host, key)


def _random_key(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[Any, ...]:
    def pick(*options: Any) -> Any:
        return options[int(rng.integers(len(options)))]

    key: list[Any] = []
    for n in shape[: int(rng.integers(0, len(shape) + 1))]:
        r = rng.random()
        if r < 0.3 and n:
            key.append(int(rng.integers(-n, n)))
        else:
            bound = lambda: pick(None, int(rng.integers(-n - 2, n + 3)))  # noqa: E731
            key.append(slice(bound(), bound(), pick(None, 1, 2, 3, -1, -2, -5)))
    if rng.random() < 0.2:
        key.insert(int(rng.integers(len(key) + 1)), None)
    if rng.random() < 0.2:
        key.append(Ellipsis)  # the axes not indexed, as they are
    return tuple(key)


def test_random_views_and_views_of_views(rng: np.random.Generator) -> None:
    pool = _pool()
    for shape in ((23,), (6, 7), (4, 5, 6)):
        host = _random(rng, shape, np.float64)
        a = _filled(pool, host)
        for _ in range(150):
            key = _random_key(rng, shape)
            expect = host[key]
            if not expect.ndim:
                assert a[key] == expect  # every axis an int: the element itself
                continue
            _check_view(a, host, key)
            if expect.ndim and expect.shape[0] > 1:  # a view of a view
                key2 = _random_key(rng, expect.shape)
                sub, sub_expect = a[key][key2], expect[key2]
                if sub_expect.ndim:
                    assert sub.base is a and sub.shape == sub_expect.shape and _same_strides(sub, sub_expect)
                    np.testing.assert_array_equal(sub.copy_to_host(), sub_expect)


def test_elements_are_read_and_written_like_numba_arrays(rng: np.random.Generator) -> None:
    host = _random(rng, (4, 5), np.float32)
    a = _filled(_pool(), host)
    assert a[2, 3] == host[2, 3] and a[-1, -2] == host[-1, -2] and type(a[0, 0]) is np.float32
    a[1, 2] = 7.5
    a[3] = np.arange(5)  # a row: contiguous
    a[0, 1:4] = -1  # broadcast into a contiguous range
    host[1, 2], host[3], host[0, 1:4] = 7.5, np.arange(5), -1
    np.testing.assert_array_equal(a.copy_to_host(), host)
    assert list(a[2]) == list(host[2])  # iteration by index stops at IndexError


def test_writes_through_views_reach_the_base(rng: np.random.Generator) -> None:
    pool = _pool()
    host = _random(rng, (6, 8), np.float64)
    a = _filled(pool, host)
    row = rng.random(8)
    a[4].copy_to_device(row)
    block = rng.random((2, 8))
    a[1:3].copy_to_device(block)
    host[4], host[1:3] = row, block
    np.testing.assert_array_equal(a.copy_to_host(), host)
    flat = a.reshape(-1)
    part = rng.random(10)
    flat[5:15].copy_to_device(part)
    host.reshape(-1)[5:15] = part
    np.testing.assert_array_equal(a.copy_to_host(), host)


def test_strided_views_copy_out_but_refuse_copies_in(rng: np.random.Generator) -> None:
    host = _random(rng, (6, 8), np.float32)
    a = _filled(_pool(), host)
    col = a[:, 3]
    out = np.empty(6, np.float32)
    np.testing.assert_array_equal(col.copy_to_host(out), host[:, 3])
    c = col.copy()  # strided source: a contiguous copy
    assert c.is_c_contiguous() and c.base is None
    np.testing.assert_array_equal(c.copy_to_host(), host[:, 3])
    f_out = np.empty((8, 6), np.float32, order="F")  # a non-contiguous destination is fine too
    np.testing.assert_array_equal(a.T.copy_to_host(f_out), host.T)
    with pytest.raises(ConfigurationError, match="strided view") as err:
        col.copy_to_device(np.zeros(6, np.float32))
    assert "base.copy_to_device" in (err.value.hint or "")
    with pytest.raises(ConfigurationError, match="strided view"):
        a[:, 1] = 0.0
    with pytest.raises(ConfigurationError, match="copy it first"):
        col.reshape(2, 3)
    np.testing.assert_array_equal(a.copy_to_host(), host)  # nothing was written


def test_reshape_transpose_ravel(rng: np.random.Generator) -> None:
    host = _random(rng, (4, 6), np.int16)
    a = _filled(_pool(), host)
    for shape in ((24,), (2, 12), (2, 3, 4), (-1, 8), (3, -1)):
        r = a.reshape(shape)
        assert r.base is a and r.shape == host.reshape(shape).shape
        np.testing.assert_array_equal(r.copy_to_host(), host.reshape(shape))
    assert a.reshape(8, 3).shape == (8, 3)
    np.testing.assert_array_equal(a.ravel().copy_to_host(), host.ravel())
    np.testing.assert_array_equal(a.T.copy_to_host(), host.T)
    assert a.T.strides == host.T.strides and a.T.is_f_contiguous()
    b = _filled(_pool(), _random(rng, (2, 3, 4), np.int16))
    hb = b.copy_to_host()
    np.testing.assert_array_equal(b.transpose(1, 0, 2).copy_to_host(), hb.transpose(1, 0, 2))
    np.testing.assert_array_equal(b.transpose((2, 0, 1)).copy_to_host(), hb.transpose((2, 0, 1)))
    with pytest.raises(ConfigurationError, match="cannot reshape"):
        a.reshape(5, 5)
    with pytest.raises(ConfigurationError, match="only one dimension"):
        a.reshape(-1, -1)
    with pytest.raises(ConfigurationError, match="permutation"):
        b.transpose(0, 0, 1)


# -- the interface and kernels ---------------------------------------------------------------
def test_cuda_array_interface(rng: np.random.Generator) -> None:
    a = _pool().device_array((5, 4), np.complex64)
    cai = a.__cuda_array_interface__
    assert cai == {"shape": (5, 4), "strides": None, "typestr": np.dtype(np.complex64).str,
                   "data": (a.ptr, False), "version": 3, "stream": None}  # fmt: skip
    v = a[1:, ::-2]
    cai = v.__cuda_array_interface__
    assert cai["strides"] == (32, -16) and cai["shape"] == (4, 2) and cai["data"] == (a.ptr + 32 + 24, False)
    assert a[2:4].__cuda_array_interface__["strides"] is None  # contiguous view: None, as the spec says
    assert isinstance(a.ptr, int) and isinstance(a.shape, tuple) and isinstance(a.strides, tuple)
    assert argument_kind(a) == "array" and argument_kind(v) == "array"
    info = array_info(v)
    assert info is not None and (info.shape, info.dtype, info.size, info.strides) == ((4, 2), a.dtype, 8, (32, -16))


@cuda.jit
def _add_index(x):  # type: ignore[no-untyped-def]
    i, j = cuda.grid(2)
    if i < x.shape[0] and j < x.shape[1]:
        x[i, j] += i * 100 + j


@gpu_kernel
def _scale(x, out, s):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < out.size:
        out[i] = s * x[i]


def test_numba_kernels_write_into_arrays_and_views(rng: np.random.Generator) -> None:
    host = _random(rng, (6, 9), np.float64)
    a = _filled(_pool(), host)
    _add_index[(1, 1), (8, 16)](a)
    ii, jj = np.indices(host.shape)
    expect = host + ii * 100 + jj
    np.testing.assert_array_equal(a.copy_to_host(), expect)
    v = a[::-2, 1::3]  # a strided view: the kernel writes into the base's memory
    _add_index[(1, 1), (8, 8)](v)
    vi, vj = np.indices(expect[::-2, 1::3].shape)
    expect[::-2, 1::3] += vi * 100 + vj
    np.testing.assert_array_equal(a.copy_to_host(), expect)


def test_gpu_kernels_take_device_arrays(rng: np.random.Generator) -> None:
    pool = _pool()
    x = rng.standard_normal(1000).astype(np.float32)
    dx, out = _filled(pool, x), pool.device_array(1000, np.float32)
    _scale(dx, out, np.float32(3.0))
    np.testing.assert_array_equal(out.copy_to_host(), np.float32(3.0) * x)
    _scale(dx[::-1], out[:500], np.float32(-1.0))  # views: reversed input, half the output
    np.testing.assert_array_equal(out.copy_to_host()[:500], -x[::-1][:500])
    from ringkernel.kernels import sum_reduce, vector_add

    c = pool.device_array(1000, np.float32)
    vector_add(dx, dx, c)
    np.testing.assert_array_equal(c.copy_to_host(), x + x)
    assert np.isclose(sum_reduce(dx), np.sum(x, dtype=np.float64))


def test_as_numba_shares_memory_and_keeps_the_array_alive(rng: np.random.Generator) -> None:
    backend = SimulatorBackend()
    pool = _pool(backend)
    host = _random(rng, (4, 5), np.float32)
    a = _filled(pool, host)
    n = a.as_numba()
    np.testing.assert_array_equal(n.copy_to_host(), host)
    n[1, 2] = 99.0
    assert a[1, 2] == 99.0
    nv = a[::2, ::-1].as_numba()
    np.testing.assert_array_equal(nv.copy_to_host(), a.copy_to_host()[::2, ::-1])
    part = n[2:]  # a slice of numba's array: still holds the DeviceArray
    del a, n, nv
    gc.collect()
    assert _in_use(pool) == 1
    assert part[0, 0] == host[2, 0]
    del part
    gc.collect()
    assert _in_use(pool) == 0


# -- lifetimes ---------------------------------------------------------------------------------
class _CountingPool(GpuMemoryPool):
    releases: list[int]

    def _release(self, item: Any) -> None:
        self.releases.append(getattr(item, "ptr", item))
        super()._release(item)


def test_the_block_returns_once_when_the_base_and_every_view_are_gone(caplog: pytest.LogCaptureFixture) -> None:
    backend = SimulatorBackend()
    pool = _CountingPool(PoolConfig(), backend=backend)
    pool.releases = []
    for order in ("base first", "views first"):
        a = pool.device_array((64, 4), np.float32)
        ptr = a.ptr
        views = [a[1:], a[::2, 1], a.T, a.reshape(-1)[10:20], a[3:][1:]]
        assert all(v.base is a for v in views) and _in_use(pool) == 1
        if order == "base first":
            del a
            gc.collect()
            assert _in_use(pool) == 1 and pool.releases.count(ptr) == 0
            del views[:4]
            gc.collect()
            assert _in_use(pool) == 1
            del views
        else:
            del views
            gc.collect()
            assert _in_use(pool) == 1
            del a
        gc.collect()
        assert _in_use(pool) == 0 and pool.releases.count(ptr) == 1, order
        pool.releases.clear()
    again = pool.device_array((64, 4), np.float32)
    assert again.ptr == ptr  # the block was reused: LIFO
    with caplog.at_level(logging.ERROR, logger="ringkernel.memory.pool"):
        del again
        gc.collect()
        pool.diagnostics()
    assert not [r for r in caplog.records if "failed" in r.getMessage()]  # no double free reported
    pool.close()
    assert backend.allocated_bytes == 0


def test_arrays_in_reference_cycles_are_returned() -> None:
    pool = _pool()

    class Node:
        other: Any
        arr: Any

    for _ in range(50):
        x, y = Node(), Node()
        x.other, y.other = y, x
        x.arr = pool.device_array(100, np.float32)
        y.arr = x.arr[10:]
    del x, y
    gc.collect()
    assert _in_use(pool) == 0 and pool.diagnostics().live_bytes == 0


def test_the_array_keeps_its_pool_and_outlives_close(rng: np.random.Generator) -> None:
    backend = SimulatorBackend()
    pool = _pool(backend)
    host = _random(rng, (300,), np.float64)
    a = _filled(pool, host)
    big = _filled(pool, np.arange(100_000.0))  # a direct (large) block
    view = a[100:]
    pool.close()
    np.testing.assert_array_equal(view.copy_to_host(), host[100:])  # still valid after close()
    with pytest.raises(ringkernel.ResourceClosedError):
        view.copy()  # a new array needs the pool
    fin = pool._finalizer
    del pool, a
    gc.collect()
    assert fin.alive and backend.allocated_bytes > 0
    np.testing.assert_array_equal(big[-3:].copy_to_host(), [99_997.0, 99_998.0, 99_999.0])
    del view, big
    gc.collect()
    assert not fin.alive and backend.allocated_bytes == 0


def test_a_managed_buffer_over_the_pool(rng: np.random.Generator) -> None:
    pool = _pool()
    data = rng.standard_normal(64).astype(np.float32)
    with ringkernel.ManagedBuffer(64, data=data, pool=pool) as buf:
        assert isinstance(buf.device, DeviceArray)
        _scale(buf.device_view(readonly=True), buf.device, np.float32(2.0))
        np.testing.assert_array_equal(buf.read(), 2 * data)
    gc.collect()
    assert _in_use(pool) == 0


# -- metadata never changes; refused input -------------------------------------------------------
def test_metadata_is_read_only() -> None:
    a = _pool().device_array((3, 4), np.float32)
    for name, value in (("ptr", 0), ("shape", (12,)), ("strides", (4,)), ("dtype", np.float64), ("size", 1),
                        ("_base", None), ("anything", 1)):  # fmt: skip
        with pytest.raises(AttributeError, match="read-only"):
            setattr(a, name, value)
    with pytest.raises(AttributeError, match="cannot be deleted"):
        del a.shape
    assert a.shape == (3, 4) and a.strides == (16, 4)


def test_no_implicit_host_copies_pickles_or_direct_construction() -> None:
    a = _pool().device_array(10, np.float32)
    with pytest.raises(TypeError, match=r"pool.device_array\(shape, dtype\)"):
        DeviceArray()
    with pytest.raises(TypeError, match=r"copy_to_host\(\)"):
        np.asarray(a)
    with pytest.raises(TypeError, match=r"copy_to_host\(\)"):
        np.array([a, a])
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(a)
    with pytest.raises(TypeError, match="pickled"):
        copy.copy(a)


@pytest.mark.parametrize(
    "shape,match",
    [(-1, "non-negative"), ((3, -2), "non-negative"), (2.0, "int or a tuple of ints"), ((2, 1.5), "float"),
     (True, "int or a tuple of ints"), ("7", "int or a tuple of ints")],
)  # fmt: skip
def test_bad_shapes(shape: Any, match: str) -> None:
    pool = _pool()
    with pytest.raises(ConfigurationError, match=match) as err:
        pool.device_array(shape, np.float32)
    assert err.value.hint
    assert _in_use(pool) == 0  # refused before allocating


@pytest.mark.parametrize(
    "dtype,match,hint",
    [(object, "Python objects", "numeric"), ([("a", "f4"), ("b", "i4")], "structured", "one array per field"),
     ("U5", "text", "uint8"), ("M8[s]", "datetime", "int64"), (">f4", "byte order", "newbyteorder"),
     ("nope", "not a dtype", "np.float32"), (("f4", (3,)), "only numbers", "float")],
)  # fmt: skip
def test_bad_dtypes(dtype: Any, match: str, hint: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as err:
        _pool().device_array(4, dtype)
    assert hint in (err.value.hint or "")


def test_bad_indices(rng: np.random.Generator) -> None:
    a = _filled(_pool(), _random(rng, (4, 5), np.float32))
    with pytest.raises(IndexError, match="out of bounds for axis 1 with size 5"):
        a[0, 5]
    with pytest.raises(IndexError, match="out of bounds for axis 0 with size 4"):
        a[-5]
    with pytest.raises(IndexError, match="too many indices"):
        a[1, 2, 3]
    with pytest.raises(IndexError, match="single ellipsis"):
        a[..., ...]
    for fancy in ([0, 2], np.array([1, 2]), np.array([True, False, True, False]), True, 1.0, "x"):
        with pytest.raises(IndexError, match=r"copy_to_host\(\)\[idx\]"):
            a[fancy]
    with pytest.raises(TypeError, match="0-d"):
        len(_pool().device_array((), np.float32))


def test_bad_copies_say_what_to_pass(rng: np.random.Generator) -> None:
    pool = _pool()
    a = pool.device_array((3, 4), np.float32)
    with pytest.raises(ConfigurationError, match="dtype float64, this array holds float32") as err:
        a.copy_to_device(np.zeros((3, 4)))
    assert "astype(np.float32)" in (err.value.hint or "")
    with pytest.raises(ConfigurationError, match=r"shape \(4, 3\), this array has shape \(3, 4\)") as err:
        a.copy_to_device(np.zeros((4, 3), np.float32))
    assert "reshape" in (err.value.hint or "")
    a.copy_to_device(np.ones((1, 3, 4), np.float32))  # a squeezable shape is fine, as with numba
    with pytest.raises(ConfigurationError, match="out has shape") as err:
        a.copy_to_host(np.empty(12, np.float32))
    assert "np.empty((3, 4), np.float32)" in (err.value.hint or "")
    with pytest.raises(ConfigurationError, match="out has dtype"):
        a.copy_to_host(np.empty((3, 4), np.float64))
    ro = np.empty((3, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ConfigurationError, match="read-only"):
        a.copy_to_host(ro)
    with pytest.raises(ConfigurationError, match="must be a NumPy array"):
        a.copy_to_host([0] * 12)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="source has dtype"):
        a.copy_to_device(pool.device_array((3, 4), np.int32))
    with pytest.raises(ConfigurationError, match="source has shape"):
        a.copy_to_device(pool.device_array((2, 4), np.float32))
    with pytest.raises(ConfigurationError, match="strided view"):
        a[:2].copy_to_device(pool.device_array((2, 8), np.float32)[:, ::2])
    np.testing.assert_array_equal(a.copy_to_host(), 1.0)  # the refused copies wrote nothing


def test_a_device_arrays_block_is_not_freed_by_pointer(rng: np.random.Generator) -> None:
    """pool.deallocate(a.ptr) would hand the block out again under the array (an adversarial
    trial found it): refused, open or closed, and the array's data and the block's accounting
    are untouched; a PooledBuffer's raw pointer is still freed (documented)."""
    from ringkernel import InvalidFree

    pool = GpuMemoryPool(backend=SimulatorBackend())
    for n in (7, 100_003):  # a pooled class and a large block
        want = rng.standard_normal(n)
        a = pool.device_array(n, np.float64)
        a.copy_to_device(want)
        live = pool.diagnostics().live_bytes
        with pytest.raises(InvalidFree, match="belongs to an array") as exc:
            pool.deallocate(a.ptr)
        assert "drop the array" in str(exc.value)
        b = pool.device_array(n, np.float64)  # not handed a's block
        assert b.ptr != a.ptr
        b.copy_to_device(np.zeros(n))
        np.testing.assert_array_equal(a.copy_to_host(), want)
        assert pool.diagnostics().live_bytes == live + b.nbytes
        del a, b
        gc.collect()
        assert pool.diagnostics().live_bytes == 0
    raw = pool.allocate(64)
    pool.deallocate(raw.ptr)  # a buffer's pointer: freed as before
    a = pool.device_array(16, np.float32)
    pool.close()
    with pytest.raises(InvalidFree, match="belongs to an array"):
        pool.deallocate(a.ptr)  # closed: the array still holds its block
    a.copy_to_device(np.arange(16, dtype=np.float32))
    np.testing.assert_array_equal(a.copy_to_host(), np.arange(16))


def test_assigned_values_are_stored_exactly_or_refused() -> None:
    """x[:] = np.array([300, -1, 256]) into uint8 stored [44, 255, 0] (copy_to_device refused it);
    [1.9, 1e10] into int32 truncated and wrapped; a complex lost its imaginary part."""
    pool = _pool()
    u8 = pool.device_array(3, np.uint8)
    i32 = pool.device_array(2, np.int32)
    f32 = pool.device_array(1, np.float32)
    for target, bad in ((u8, np.array([300, -1, 256])), (i32, np.array([1.9, 2.0])), (i32, np.array([1e10, 0.0])),
                        (f32, np.array([1 + 5j])), (i32, np.array([np.nan, 1.0]))):  # fmt: skip
        with pytest.raises(ConfigurationError, match="cannot hold exactly"):
            target[:] = bad
    u8[:] = np.array([255, 0, 7])  # fits: stored
    i32[:] = [3.0, -4.0]
    f32[0] = 2
    assert u8.copy_to_host().tolist() == [255, 0, 7] and i32.copy_to_host().tolist() == [3, -4]
    assert f32.copy_to_host().tolist() == [2.0]


def test_managed_buffer_refuses_unsigned_values_a_signed_buffer_cannot_hold() -> None:
    from ringkernel import KernelArgumentError, ManagedBuffer

    for src, dst, v in ((np.uint32, np.int32, 2**32 - 1), (np.uint16, np.int16, 40000), (np.uint8, np.int8, 200)):
        mb = ManagedBuffer(4, dst, pool=_pool())
        with pytest.raises(KernelArgumentError, match="cannot hold"):
            mb.write(np.full(4, v, src))  # (read back as -1, -25536, -56 before)
        mb.write(np.full(4, 7, src))
        assert mb.read().tolist() == [7] * 4
