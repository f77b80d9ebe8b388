"""The fake driver and argument stand-ins of the launch-path review tests."""
import ctypes, struct
import numpy as np
import pytest

from ringkernel.compile import compiler as C
from ringkernel import driver as D
from ringkernel.compile import launcher as L

U = ctypes.c_uint
PROTO = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, U, U, U, U, U, U, U, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
NSLOTS = 16
SLOTS = {}


class FakeDeviceArray:
    _next = 0x7000_0000

    def __init__(self, n, dtype="float32"):
        self.dtype = np.dtype(dtype)
        self.shape = (n,)
        self.size = n
        self.ptr = FakeDeviceArray._next
        FakeDeviceArray._next += 1 << 20

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "strides": None,
                "version": 3, "stream": None}


@pytest.fixture
def rt(monkeypatch):
    calls = []
    hook = {"fn": None}

    def launch(f, gx, gy, gz, bx, by, bz, shm, stream, params, extra):
        ptrs = ctypes.cast(params, ctypes.POINTER(ctypes.c_void_p))
        n = SLOTS.get(f, NSLOTS)
        raw = [ctypes.string_at(ptrs[k], 8) for k in range(n)] + [b'\0' * 8] * (NSLOTS - n)
        _c = {"f": f, "grid": (gx, gy, gz), "block": (bx, by, bz), "stream": stream, "raw": raw}
        calls.append(_c)
        if hook["fn"] is not None:
            hook["fn"](calls[-1] if False else _c)
        return 0

    cb = PROTO(launch)
    monkeypatch.setattr(D, "_lib", object())
    monkeypatch.setattr(L, "_launch_fn", cb)
    monkeypatch.setattr(L, "_NUMBA_ARRAY_TYPES", (FakeDeviceArray,))
    compiled = []

    class StubCompiler:
        def load_or_compile(self, py_func, argtypes, options, dispatcher, name, analyze=None):
            compiled.append(argtypes)
            lau = L.KernelLauncher(0xF00D + len(compiled), argtypes, name)
            SLOTS[lau.handle] = lau._slots
            return C.CompiledKernel(
                name=name, entry_name="_Z1k", argtypes=argtypes, key="0" * 64, compute_cap="sm_90", from_cache=True,
                registers_per_thread=32, shared_mem_per_block=0, max_threads_per_block=1024,
                launcher=lau,
            )

    monkeypatch.setattr(C, "default_compiler", lambda: StubCompiler())
    return calls, compiled, hook


def q(call, slot):
    return struct.unpack("<q", call["raw"][slot])[0]


def i32(call, slot):
    return struct.unpack("<i", call["raw"][slot][:4])[0]


def f32(call, slot):
    return struct.unpack("<f", call["raw"][slot][:4])[0]
