"""The fast launcher's parameter packing, checked against numba's kernel ABI without a GPU.

``cuLaunchKernel`` is replaced by a ctypes callback that decodes the parameter block, so
the exact bytes the driver would receive are checked in CI.
"""

from __future__ import annotations

import ctypes
import struct

import pytest
from numba.core import types

from ringkernel import driver as D
from ringkernel._layout import c_strides
from ringkernel.compile import launcher as L
from ringkernel.errors import DriverError

U = ctypes.c_uint
PROTO = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, U, U, U, U, U, U, U, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


@pytest.fixture
def fake_driver(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    calls: list[dict] = []
    slots = {"n": 0}

    def launch(f, gx, gy, gz, bx, by, bz, shm, stream, params, extra):  # type: ignore[no-untyped-def]
        ptrs = ctypes.cast(params, ctypes.POINTER(ctypes.c_void_p))
        raw = [ctypes.string_at(ptrs[i], 8) for i in range(slots["n"])]
        calls.append({"f": f, "grid": (gx, gy, gz), "block": (bx, by, bz), "shm": shm, "stream": stream, "raw": raw})
        return 0

    cb = PROTO(launch)
    monkeypatch.setattr(D, "_lib", object())  # driver.lib() returns without loading libcuda
    monkeypatch.setattr(L, "_launch_fn", cb)
    return calls, slots, cb


def _array_info(ptr: int, shape: tuple[int, ...], itemsize: int) -> L.ArgInfo:
    strides = c_strides(shape, itemsize)
    size = 1
    for s in shape:
        size *= s
    return L.ArgInfo(("array",), size, (0, 0, size, itemsize, ptr, *shape, *strides), True, None, None)


def test_numba_array_and_scalar_abi(fake_driver) -> None:  # type: ignore[no-untyped-def]
    calls, slots, _ = fake_driver
    argtypes = (types.float32, types.Array(types.float32, 1, "C"), types.Array(types.float64, 2, "C"), types.int32)
    lau = L.KernelLauncher(0xABC, argtypes, "k")
    slots["n"] = lau._slots
    assert lau._slots == 1 + 7 + 9 + 1
    infos = [
        L.ArgInfo(("scalar", "float"), 0, (2.5,), False),
        _array_info(0x7000_0000, (1000,), 4),
        _array_info(0x7100_0000, (3, 5), 8),
        L.ArgInfo(("scalar", "int"), 0, (-7,), False),
    ]
    lau.launch(infos, (4, 1, 1), (256, 1, 1), 128, 0)
    (call,) = calls
    assert call["f"] == 0xABC and call["grid"] == (4, 1, 1) and call["block"] == (256, 1, 1) and call["shm"] == 128
    assert call["stream"] is None
    raw = call["raw"]
    assert struct.unpack("<f", raw[0][:4])[0] == 2.5
    q = [struct.unpack("<q", r)[0] for r in raw[1:17]]
    # meminfo, parent, nitems, itemsize, data, shape, strides
    assert q[:7] == [0, 0, 1000, 4, 0x7000_0000, 1000, 4]
    assert q[7:16] == [0, 0, 15, 8, 0x7100_0000, 3, 5, 40, 8]
    assert struct.unpack("<i", raw[17][:4])[0] == -7


def test_constant_block_and_stream(fake_driver) -> None:  # type: ignore[no-untyped-def]
    calls, slots, cb = fake_driver
    lau = L.KernelLauncher(0x1, (types.Array(types.int32, 1, "C"),), "k")
    slots["n"] = lau._slots
    info = [_array_info(0x5000, (10,), 4)]
    buf, ptrs = lau.pack_constant(info)
    # what a launch-memo entry calls: the whole argument list prepared in advance
    assert cb(lau._chandle, 1, 1, 1, 32, 1, 1, 0, ctypes.c_void_p(0x99), ptrs, None) == 0
    assert calls[-1]["stream"] == 0x99
    assert struct.unpack("<q", calls[-1]["raw"][4])[0] == 0x5000
    # a regular launch on another thread's buffer does not disturb the constant block
    lau.launch([_array_info(0x6000, (10,), 4)], (1, 1, 1), (32, 1, 1), 0, 0)
    assert struct.unpack("<q", calls[-1]["raw"][4])[0] == 0x6000
    cb(lau._chandle, 1, 1, 1, 32, 1, 1, 0, None, ptrs, None)
    assert struct.unpack("<q", calls[-1]["raw"][4])[0] == 0x5000


def test_complex_scalars_take_two_slots(fake_driver) -> None:  # type: ignore[no-untyped-def]
    calls, slots, _ = fake_driver
    lau = L.KernelLauncher(0x1, (types.complex128, types.bool_), "k")
    slots["n"] = lau._slots
    assert lau._slots == 3
    lau.launch([L.ArgInfo(("scalar", "complex"), 0, (1.5 - 2j,), False), L.ArgInfo(("scalar", "bool"), 0, (True,), False)],
               (1, 1, 1), (1, 1, 1), 0, 0)  # fmt: skip
    raw = calls[-1]["raw"]
    assert struct.unpack("<d", raw[0])[0] == 1.5 and struct.unpack("<d", raw[1])[0] == -2.0 and raw[2][0] == 1


def test_unsupported_argument_type() -> None:
    with pytest.raises(NotImplementedError):
        L._format_for(types.UniTuple(types.int32, 2))


def test_driver_library_is_found_by_its_usual_name_before_find_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """``find_library`` runs ``ldconfig`` in a subprocess (ms): it is only the fallback, in
    the launcher and in ``gpu_present``."""
    import ctypes.util

    from ringkernel import config

    opened: list[str] = []

    class FakeLib:
        cuLaunchKernel = ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 0)
        cuStreamSynchronize = ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 0)

        def cuInit(self, flags: int) -> int:
            return 0

        def cuDeviceGetCount(self, ref: object) -> int:
            return 0

    def fake_cdll(name: str) -> FakeLib:
        opened.append(name)
        if name != "libcuda.so.1":
            raise OSError(f"{name}: not here")
        return FakeLib()

    def no_find_library(name: str) -> str:
        raise AssertionError("find_library must not run when libcuda.so.1 loads")

    for attr in ("_lib", "launch_fn", "sync_fn"):  # whatever this test loads is forgotten after it
        monkeypatch.setattr(D, attr, None)
    monkeypatch.setattr(ctypes, "CDLL", fake_cdll)
    monkeypatch.setattr(ctypes.util, "find_library", no_find_library)
    assert isinstance(D._load_library(), FakeLib)
    config.gpu_present.cache_clear()
    try:
        assert config.gpu_present() is False  # loads, but no device
    finally:
        config.gpu_present.cache_clear()
    assert opened == ["libcuda.so.1", "libcuda.so.1"]

    # the fallback: every usual name fails, find_library's answer is tried, then a clear error
    opened.clear()

    def no_cdll(name: str) -> FakeLib:
        opened.append(name)
        raise OSError(f"{name}: not here")

    monkeypatch.setattr(ctypes, "CDLL", no_cdll)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libcuda-found.so")
    with pytest.raises(DriverError, match="cannot load the CUDA driver library"):
        D._load_library()
    assert opened == ["libcuda.so.1", "libcuda.so", "nvcuda.dll", "libcuda-found.so"]
