"""The compiled launch path (ringkernel/_native.c) without a GPU.

The driver call is a ctypes callback that decodes the parameter block, so what a
``LaunchEntry`` checks, packs and passes is compared with what the Python path would; the
loader's trust rules are tried with planted and damaged libraries. The GPU tests run the same
entries against the real driver (tests/gpu/test_runtime_gpu.py and the launch patterns)."""

from __future__ import annotations

import ctypes
import os
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numba import cuda

from ringkernel import native as N

mod = N.load()
pytestmark = pytest.mark.skipif(mod is None, reason=f"the compiled launch path is not available: {N.status().detail}")

U = ctypes.c_uint
PROTO = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, U, U, U, U, U, U, U, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


class Driver:
    """A stand-in for cuLaunchKernel: records each call's slots; ``rc`` is what it returns."""

    def __init__(self, slots: int) -> None:
        self.slots, self.calls, self.rc = slots, [], 0

        def launch(f, gx, gy, gz, bx, by, bz, shm, stream, params, extra):  # type: ignore[no-untyped-def]
            ptrs = ctypes.cast(params, ctypes.POINTER(ctypes.c_void_p))
            raw = [ctypes.string_at(ptrs[i], 8) for i in range(self.slots)]
            self.calls.append({"f": f, "grid": (gx, gy, gz), "block": (bx, by, bz), "shm": shm, "stream": stream,
                               "raw": raw})  # fmt: skip
            return self.rc

        self.cb = PROTO(launch)
        self.address = ctypes.cast(self.cb, ctypes.c_void_p).value

    def q(self, call: int, slot: int) -> int:
        return int(struct.unpack("<Q", self.calls[call]["raw"][slot])[0])


class Launcher:
    closed = False


def entry(drv: Driver, scalars=(), arrays=(), checks=(), decision="D", notify=None, name=None, launcher=None, template=None):  # type: ignore[no-untyped-def]
    tmpl = template if template is not None else bytes(8 * drv.slots)
    return mod.LaunchEntry(drv.address, drv.cb, 0xF00D, (3, 2, 1), (128, 1, 1), 64, 0, tmpl, tuple(scalars),
                           tuple(arrays), tuple(checks), decision, notify, name,
                           launcher if launcher is not None else Launcher())  # fmt: skip


# -- fake array types, one per kind ---------------------------------------------------------
class Mem:
    def __init__(self, ptr: int) -> None:
        self.ptr = ptr


class FakeCupy:
    def __init__(self, ptr: int, shape=(10,), dtype="float32", strides=None) -> None:  # type: ignore[no-untyped-def]
        self.dtype, self.shape = np.dtype(dtype), tuple(shape)
        self.strides = strides if strides is not None else tuple(np.empty(shape, self.dtype).strides)
        self.data = Mem(ptr)


class FakeRk(FakeCupy):
    """ringkernel's DeviceArray: ``ptr`` is an attribute."""

    def __init__(self, ptr: int, **kw: Any) -> None:
        super().__init__(ptr, **kw)
        self.ptr = ptr


class GpuData:
    def __init__(self, ptr: Any) -> None:
        self.device_pointer = ptr


class FakeNumba(FakeCupy):
    def __init__(self, ptr: Any, **kw: Any) -> None:
        super().__init__(0, **kw)
        self.gpu_data = None if ptr is None else GpuData(ptr)


class TorchDtype:
    pass


F32 = TorchDtype()


class FakeTensor:
    def __init__(self, ptr: int, shape=(10,), stride=(1,), dtype=F32, device=0, grad=False) -> None:  # type: ignore[no-untyped-def]
        self.shape, self._stride, self.dtype, self._device, self.requires_grad = shape, stride, dtype, device, grad
        self._ptr = ptr

    def stride(self) -> tuple:
        return self._stride

    def get_device(self) -> int:
        return self._device

    def data_ptr(self) -> int:
        return self._ptr


def spec(kind: str, proto: Any, offset: int, pos: int = 0, extra: Any = None) -> tuple:
    if kind == "K_TORCH":
        return (pos, mod.K_TORCH, type(proto), proto.dtype, proto.shape, proto.stride(), proto.get_device(), offset)
    return (pos, getattr(mod, kind), type(proto), proto.dtype, proto.shape, proto.strides, extra, offset)


# -- scalars ----------------------------------------------------------------------------------
FORMATS = "bBhHiIqQfd?"


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_scalar_packing_matches_struct(fmt: str, rng: np.random.Generator) -> None:
    """Every value struct packs, the entry packs to the same bytes; every value struct refuses, it refuses."""
    bits = struct.calcsize("<" + fmt) * 8
    values: list[Any] = [0, 1, -1, 2 ** (bits - 1) - 1, 2 ** (bits - 1), -(2 ** (bits - 1)), -(2 ** (bits - 1)) - 1,
                         2**bits - 1, 2**bits, 2**64, -(2**63) - 1]  # fmt: skip
    values += [int(v) for v in rng.integers(-(2**63), 2**63 - 1, 20)]
    if fmt in "fd?":
        values += [0.5, -1.25, 1e300, -1e300, 3.4e38, 3.5e38, float("inf"), float("nan"), 1e-50,
                   *rng.standard_normal(10).tolist(), np.float32(2.5), np.float64(-7.0), True, False]  # fmt: skip
    else:
        values += [np.int32(-5), np.uint64(2**64 - 1), np.int8(-128), True, 2.5, "3", None]
    for v in values:
        try:
            want = struct.pack("<" + fmt, v)
        except (struct.error, OverflowError, TypeError):
            want = None
        try:
            got = mod.pack(fmt, v)
        except (OverflowError, TypeError, ValueError):
            got = None
        if want is None:
            assert got is None, (fmt, v, got)
        else:
            assert got is not None and got[: len(want)] == want, (fmt, v, want, got)


def test_scalar_slots_type_checked_and_written() -> None:
    drv = Driver(3)
    e = entry(drv, scalars=[(0, float, "f", 0), (2, np.int32, "i", 16)], decision="D")
    assert e((1.5, "x", np.int32(-4))) == "D"
    assert struct.unpack("<f", drv.calls[-1]["raw"][0][:4])[0] == 1.5
    assert struct.unpack("<i", drv.calls[-1]["raw"][2][:4])[0] == -4
    n = len(drv.calls)
    assert e((1, "x", np.int32(1))) is None  # an int where float was compiled: another signature
    assert e((1.5, "x", 5)) is None  # a Python int for an int32 slot: another signature too
    assert e((1e300, "x", np.int32(1))) is None  # does not fit float32: the checked path says so
    assert e((1.5,)) is None  # too few arguments
    assert len(drv.calls) == n  # nothing launched by a refusal


# -- arrays, per kind -------------------------------------------------------------------------
@pytest.mark.parametrize("kind,make", [("K_CUPY", FakeCupy), ("K_PTR", FakeRk), ("K_NUMBA", FakeNumba)])
def test_attribute_kinds(kind: str, make: Any) -> None:
    drv = Driver(4)
    proto = make(0x1000, shape=(4, 5), dtype="float64")
    e = entry(drv, arrays=[spec(kind, proto, 8, pos=1)])
    for ptr in (0x7000_0000, 0x7000_0100, 2**63 + 8):
        assert e(("scalar-ignored", make(ptr, shape=(4, 5), dtype="float64"))) == ("D",)  # arrays only: a 1-tuple
        assert drv.q(-1, 1) == ptr
        assert drv.calls[-1]["raw"][0] == bytes(8)  # the template elsewhere
    n = len(drv.calls)
    for other in (make(1, shape=(5, 4), dtype="float64"), make(1, shape=(4, 5), dtype="float32"),
                  make(1, shape=(4, 5), dtype="float64", strides=(8, 32)), FakeCupy(1) if make is not FakeCupy else FakeRk(1),
                  np.zeros((4, 5)), None, 3.0):  # fmt: skip
        assert e(("s", other)) is None, other
    assert len(drv.calls) == n

    class Sub(make):  # type: ignore[misc, valid-type]
        pass

    assert e(("s", Sub(5, shape=(4, 5), dtype="float64"))) is None  # exact type only


def test_numba_pointer_forms() -> None:
    drv = Driver(1)
    proto = FakeNumba(1)
    e = entry(drv, arrays=[spec("K_NUMBA", proto, 0)])

    class DevPtr:  # cuda-bindings' CUdeviceptr: int() works
        def __int__(self) -> int:
            return 0xABC000

    assert e((FakeNumba(DevPtr()),)) == ("D",) and drv.q(-1, 0) == 0xABC000
    assert e((FakeNumba(None),)) == ("D",) and drv.q(-1, 0) == 0  # no memory (size 0)
    n = len(drv.calls)
    assert e((FakeNumba(ctypes.c_void_p(5)),)) is None  # numba's ctypes binding: the checked path reads it
    assert len(drv.calls) == n


def test_torch_kind() -> None:
    drv = Driver(2)
    proto = FakeTensor(1, shape=(3, 4), stride=(4, 1))
    e = entry(drv, arrays=[spec("K_TORCH", proto, 8)])
    assert e((FakeTensor(0x5000, shape=(3, 4), stride=(4, 1)),)) == ("D",) and drv.q(-1, 1) == 0x5000
    n = len(drv.calls)
    for other in (FakeTensor(1, shape=(4, 3), stride=(4, 1)), FakeTensor(1, shape=(3, 4), stride=(1, 3)),
                  FakeTensor(1, shape=(3, 4), stride=(4, 1), dtype=TorchDtype()),
                  FakeTensor(1, shape=(3, 4), stride=(4, 1), device=1),
                  FakeTensor(1, shape=(3, 4), stride=(4, 1), grad=True)):  # fmt: skip
        assert e((other,)) is None
    assert len(drv.calls) == n


def test_guard_kind_and_errors_inside_checks() -> None:
    drv = Driver(1)
    seen = []

    def guard(x: Any) -> Any:
        seen.append(x)
        if x == "boom":
            raise RuntimeError("a guard that fails")
        return None if x == "no" else 0x1234

    e = entry(drv, arrays=[(0, mod.K_GUARD, None, None, None, None, guard, 0)])
    assert e(("yes",)) == ("D",) and drv.q(-1, 0) == 0x1234
    assert e(("no",)) is None and e(("boom",)) is None  # an error is not raised: the checked path repeats it

    class Angry(FakeCupy):
        @property
        def shape(self):  # type: ignore[no-untyped-def, override]
            raise ValueError("no shape today")

    proto = FakeCupy(1)
    e2 = entry(drv, arrays=[(0, mod.K_CUPY, Angry, proto.dtype, proto.shape, proto.strides, None, 0)])
    assert e2((Angry.__new__(Angry),)) is None  # an attribute that raises: refused, not raised


def test_stream_checks_closed_launcher_and_driver_errors() -> None:
    drv = Driver(1)
    ok = {"v": True}
    lau = Launcher()
    e = entry(drv, scalars=[(0, int, "q", 0)], checks=[lambda: ok["v"]], launcher=lau)
    assert e((5,)) == "D"
    ok["v"] = False
    assert e((5,)) is None  # a producer stream to wait for: the checked path waits
    ok["v"] = True
    lau.closed = True
    n = len(drv.calls)
    assert e((5,)) is None and len(drv.calls) == n  # an unloaded module's function is never launched
    lau.closed = False
    drv.rc = 700
    assert e((5,)) is None  # the driver refused: the checked path launches again and reports it
    drv.rc = 0
    assert e.launch() == 0 and drv.q(-1, 0) == 0  # the template as it is
    lau.closed = True
    assert e.launch() != 0


def test_backoff_and_notify() -> None:
    drv = Driver(1)
    got = []
    proto = FakeCupy(1)
    e = entry(drv, arrays=[spec("K_CUPY", proto, 0)], notify=lambda *a: got.append(a), name="k")
    e.backoff[0] = 2
    assert [e((FakeCupy(9),)) for _ in range(3)] == ["D", "D", ("D",)]
    assert e.backoff[0] == 0
    assert got == [("k", "D", None, "auto")] * 3

    def failing(*a: Any) -> None:
        raise KeyError("hook")

    e2 = entry(drv, scalars=[(0, int, "q", 0)], notify=failing, name="k")
    with pytest.raises(KeyError):  # a hook's error reaches the caller (after the launch)
        e2((1,))


def test_large_parameter_blocks_and_bad_construction() -> None:
    drv = Driver(300)  # more slots than the C stack buffer holds
    tmpl = b"".join(struct.pack("<q", i) for i in range(300))
    e = entry(drv, scalars=[(0, int, "q", 8 * 299)], template=tmpl)
    assert e((-3,)) == "D"
    assert [struct.unpack("<q", r)[0] for r in drv.calls[-1]["raw"]] == [*range(299), -3]
    with pytest.raises(ValueError):
        entry(drv, scalars=[(0, int, "q", 8 * 300)], template=tmpl)  # past the block
    with pytest.raises(ValueError):
        entry(drv, scalars=[(0, int, "x", 0)], template=tmpl)  # unknown format
    with pytest.raises(ValueError):
        entry(drv, arrays=[(0, 99, None, None, None, None, None, 0)], template=tmpl)
    with pytest.raises(ValueError):
        entry(drv, template=b"1234567")  # not whole slots
    with pytest.raises(TypeError):
        e(1, 2)


def test_threads_never_see_each_others_parameters() -> None:
    """Each call packs on its own stack: threads interleaved inside the checks (a guard that
    yields the GIL) still launch their own pointers."""
    drv = Driver(2)
    mismatches = []

    def guard(x: Any) -> int:
        time.sleep(0)  # let another thread in, half-way through this one's packing
        return int(x)

    e = entry(drv, scalars=[(1, int, "q", 8)], arrays=[(0, mod.K_GUARD, None, None, None, None, guard, 0)])

    def work(t: int) -> None:
        for i in range(300):
            p = (t << 20) + i
            assert e((p, p)) == "D"

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in drv.calls:
        a, b = (struct.unpack("<q", r)[0] for r in c["raw"])
        if a != b:
            mismatches.append((a, b))
    assert len(drv.calls) == 1800 and not mismatches


# -- the loader ---------------------------------------------------------------------------------
@pytest.fixture
def fresh_loader(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RINGKERNEL_CACHE_DIR", str(tmp_path / "cache"))
    from ringkernel import config

    config.reset()
    monkeypatch.setattr(N, "_tried", False)
    monkeypatch.setattr(N, "_module", None)
    monkeypatch.setattr(N, "_why", None)
    return tmp_path / "cache" / "native"


def _expected_name() -> str:
    cc = N._compiler()
    assert cc is not None
    import sysconfig

    return f"_rk_native-{N._key(cc, N.SOURCE.read_bytes())}{sysconfig.get_config_var('EXT_SUFFIX')}"


def test_loader_builds_into_a_private_cache(fresh_loader: Path) -> None:
    m = N.load()
    assert m is not None and N.status().in_use
    lib = fresh_loader / _expected_name()
    assert lib.is_file() and Path(m.__file__) == lib
    assert not (os.stat(fresh_loader).st_mode & 0o077 & 0o022)


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX owners and modes")
@pytest.mark.parametrize("how", ["group_writable_file", "world_writable_dir", "symlink"])
def test_planted_library_is_never_loaded(fresh_loader: Path, tmp_path: Path, how: str) -> None:
    """A library another user could have written is not dlopen()ed: the loader builds its own
    in a private temporary directory (a planted file of garbage would fail to load if it were)."""
    fresh_loader.mkdir(parents=True, mode=0o700)
    planted = fresh_loader / _expected_name()
    if how == "symlink":
        target = tmp_path / "elsewhere.so"
        target.write_bytes(b"not a library")
        planted.symlink_to(target)
    else:
        planted.write_bytes(b"not a library")
        os.chmod(planted, 0o766 if how == "group_writable_file" else 0o700)
        if how == "world_writable_dir":
            os.chmod(fresh_loader, 0o777)
    m = N.load()
    assert m is not None, N.status()
    assert Path(m.__file__).parent != fresh_loader  # built afresh elsewhere
    assert planted.is_symlink() or planted.read_bytes() == b"not a library"  # and the plant left alone


def test_damaged_cached_library_is_rebuilt(fresh_loader: Path) -> None:
    fresh_loader.mkdir(parents=True, mode=0o700)
    lib = fresh_loader / _expected_name()
    lib.write_bytes(b"\x7fELF truncated")
    os.chmod(lib, 0o700)
    m = N.load()
    assert m is not None and Path(m.__file__) == lib and lib.stat().st_size > 1000


def test_no_compiler_falls_back_or_refuses(fresh_loader: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(N, "_compiler", lambda: None)
    assert N.load() is None
    st = N.status()
    assert not st.in_use and "no C compiler" in st.detail
    monkeypatch.setattr(N, "_tried", False)
    monkeypatch.setenv("RINGKERNEL_NATIVE", "1")
    from ringkernel import config
    from ringkernel.errors import ConfigurationError

    config.reset()
    with pytest.raises(ConfigurationError, match="RINGKERNEL_NATIVE"):
        N.load()


def test_compiler_error_is_reported(fresh_loader: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(N, "_compiler", lambda: [sys.executable, "-c", "import sys; sys.exit('cc: broken')", "--"])
    assert N.load() is None
    assert "broken" in N.status().detail


def test_native_switch(fresh_loader: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ringkernel import config
    from ringkernel.errors import ConfigurationError

    monkeypatch.setenv("RINGKERNEL_NATIVE", "0")
    config.reset()
    assert N.load() is None and "RINGKERNEL_NATIVE=0" in N.status().detail
    monkeypatch.setenv("RINGKERNEL_NATIVE", "yes")
    config.reset()
    with pytest.raises(ConfigurationError, match="RINGKERNEL_NATIVE='yes'"):
        config.settings()


@pytest.fixture
def native_call():  # type: ignore[no-untyped-def]
    from ringkernel.kernel import core

    assert core.install_native_call()
    yield core
    core.uninstall_native_call()


def test_kernel_call_routes_calls(native_call: Any) -> None:
    """GpuKernel's compiled call: keywords go to _slow_call, a plain call with no entries to
    _call_rest (here under the simulator: the whole launch is numba's)."""
    from ringkernel import GpuKernel, gpu_kernel

    @gpu_kernel
    def fill(out, v):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < out.size:
            out[i] = v

    assert isinstance(GpuKernel.__dict__["__call__"], mod.KernelCall)
    out = cuda.device_array(37, np.float32)
    fill(out, 2.5)  # no entries: _call_rest launches (numba's simulator here)
    assert np.all(out.copy_to_host() == 2.5)
    fill(out, 1.5, elements=37)  # a keyword: _slow_call
    assert np.all(out.copy_to_host() == 1.5)
    with pytest.raises(TypeError, match="unexpected keyword"):
        fill(out, v=1.5)  # as the Python call says
    fill(out, 0.5, stream=0)
    fill.__call__(out, 0.25)  # the bound form
    GpuKernel.__call__(fill, out, 0.75)  # the unbound form
    assert np.all(out.copy_to_host() == 0.75)
    with pytest.raises(Exception, match="argument"):
        fill(out)  # too few: the checked path's error, through the compiled call
    with pytest.raises(TypeError):
        GpuKernel.__call__()

    calls = []

    class K:
        __call__ = mod.KernelCall()

        def _slow_call(self, *a: Any, **kw: Any) -> str:
            calls.append(("slow", a, kw))
            return "slow"

        def _call_rest(self, a: tuple) -> str:
            calls.append(("rest", a))
            return "rest"

        def _layout_launch(self, a: tuple, d: Any) -> bool:
            calls.append(("layout", a, d))
            return d == "go-on"

    k = K()
    k._memo, k._layouts, k._nparams = {}, [], 2  # type: ignore[attr-defined]
    assert k(1, 2) == "rest" and k(1, stream=3) == "slow"
    k._layouts = [lambda args: "decided"]  # type: ignore[attr-defined]
    assert k(1, 2) is None and k._last == "decided"  # type: ignore[attr-defined]
    k._layouts = [lambda args: None]  # type: ignore[attr-defined]
    assert k(1, 2) == "rest"  # no entry applied
    assert k(1, 2, 3) == "rest"  # another argument count: entries are not tried
    x, y = object(), object()
    k._memo = {(id(x), id(y)): (lambda: 0, (), "memo-decision")}  # type: ignore[attr-defined]
    assert k(x, y) is None and k._last == "memo-decision"  # type: ignore[attr-defined]
    k._memo = {(id(x), id(y)): (lambda: 700, (), "memo-decision")}  # type: ignore[attr-defined]
    assert k(x, y) == "rest"  # the driver refused: the checked path
    assert [c[0] for c in calls] == ["rest", "slow", "layout", "rest", "rest", "rest"]
    del k._memo, k._layouts  # type: ignore[attr-defined]
    assert k(1, 2) == "rest"  # attributes missing: nothing to try


GC_BOMB = """
import gc
import ringkernel.native as n
m = n.load()
class Cur: active = 0
m.configure(Cur())
log = []
class K:
    __call__ = m.KernelCall()
    def _call_rest(self, args): log.append("rest")
    def _layout_launch(self, args, d): return True
k = K(); k._nparams = 1
class Bomb:
    def __init__(self): self.me = self
    def __del__(self):
        k._layouts = [lambda a: log.append("new")]
        k._memo = {("other",): None}
def make_old():
    def old(a):
        log.append("old"); return None
    return [old]
for pre in range(0, 8):
    gc.collect(); log.clear()
    gc.set_threshold(3)
    k._memo = {("no",): None}
    k._layouts = make_old()
    Bomb()
    tmp = [(i,) for i in range(pre)]
    k(1)
print("survived")
"""


def test_gc_replacing_the_kernels_lists_mid_call_is_safe(tmp_path: Path) -> None:
    """A collection inside the compiled call (allocating the memo key) whose finalizer replaces
    the kernel's _memo and _layouts: the call holds its own references (this crashed before)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), NUMBA_ENABLE_CUDASIM="1", RINGKERNEL_CACHE_DIR=str(Path(str(mod.__file__)).parent.parent))  # (where mod was built)
    out = subprocess.run([sys.executable, "-c", GC_BOMB], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "survived" in out.stdout, (out.returncode, out.stderr[-2000:])


def test_concurrent_first_builds_in_separate_processes(tmp_path: Path) -> None:
    """Four processes build the module into one empty cache at once: each writes its own
    temporary file and renames it into place, so every one loads a whole library."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), NUMBA_ENABLE_CUDASIM="1", RINGKERNEL_CACHE_DIR=str(tmp_path / "c"))
    code = "import ringkernel.native as n; m = n.load(); assert m is not None, n.status(); print(m.__file__)"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]  # fmt: skip
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    files = {o[0].strip() for o in outs}
    assert len(files) == 1 and Path(files.pop()).parent == tmp_path / "c" / "native"
    assert not [f for f in (tmp_path / "c" / "native").iterdir() if f.name.endswith(".tmp")]  # no leftovers


def test_a_killed_builds_leftovers_are_swept(fresh_loader: Path) -> None:
    fresh_loader.mkdir(parents=True, mode=0o700)
    stale = fresh_loader / f".{_expected_name()}.abc123.tmp"
    fresh = fresh_loader / f".{_expected_name()}.def456.tmp"
    stale.write_bytes(b"half a library")
    fresh.write_bytes(b"a build in progress")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert N.load() is not None
    assert not stale.exists() and fresh.exists()  # (one being written now is left alone)
