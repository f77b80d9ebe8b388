"""The fast launch path: arguments packed once per array object, one ``cuLaunchKernel`` call.

numba's kernel ABI passes each array as ``meminfo, parent, nitems, itemsize, data,
shape[ndim], strides[ndim]`` (all 8 bytes) and each scalar as itself. A
:class:`KernelLauncher` is built once per compiled signature: it knows the ``struct``
format of the whole parameter block, so a launch is one ``struct.pack_into`` into a
per-thread buffer whose slot addresses were computed in advance, and one ctypes call of
the driver's ``cuLaunchKernel``.

What an array contributes is read once per array object and cached by identity, with a
weak reference that drops the entry when the array dies. Only arrays whose pointer and
shape cannot change are cached this way (numba's, ringkernel's ``DeviceArray``). Other
``__cuda_array_interface__`` objects (CuPy, PyTorch) are read on every launch, since CuPy
can reshape in place and PyTorch can resize; per type, a *guard* (``guard_for``) re-checks
such an array against a launch's layout for the kernel's layout entries.

Beside it: ``launcher_memo`` (``ArgInfo``, the identity cache, the launch memos'
registrations) and ``launcher_arrays`` (layouts, interface reads, guard factories).
"""

from __future__ import annotations

import ctypes
import operator
import struct
import threading
from typing import Any, Callable, Sequence

import numpy as np

from .. import driver
from .._layout import c_strides as _strides_c
from . import launcher_memo
from .. import native as _native
from .launcher_arrays import (
    _GUARDS, _NATIVE, _READERS, _UNSET, _attribute_guard, _cached_cai, _cached_reader, _interface_guard, _layout_of, _read_cai,
)
from .launcher_memo import _CACHE, _SEEN, IDENTITY_CACHE, ArgInfo, clear_memo, register_memo
from ..config import ensure_numba_cuda

__all__ = ["ArgInfo", "describe_arg", "first_launch", "IDENTITY_CACHE", "KernelLauncher", "register_memo", "clear_memo",
           "guard_for", "native_check_for", "device_fields"]

_PARAM = 8  # bytes per parameter slot (complex numbers take two slots)
#: launcher_memo's registrations, named here too: tests and comments read ``launcher._DEPENDENTS``.
_DEPENDENTS = launcher_memo._DEPENDENTS


_SEEN_LIMIT = 1 << 16
_SCALAR_TYPES = (bool, int, float, complex, np.generic)


def first_launch(args: Sequence[Any]) -> bool:
    """True when some array among ``args`` was never launched before; remembers them. Only
    identity-cached arrays are remembered (described now if they were not): their ids leave
    the record when they die, so a new array at a dead one's address counts as new."""
    new = False
    for a in args:
        if not isinstance(a, _SCALAR_TYPES):
            k = id(a)
            if k not in _SEEN:
                info = describe_arg(a)
                if info is not None and info.ref is not None:
                    if len(_SEEN) >= _SEEN_LIMIT:
                        _SEEN.clear()  # (only live arrays are in it: a safety bound)
                    _SEEN.add(k)
                new = True
    return new


_NUMBA_ARRAY_TYPES: tuple[type, ...] | None = None


def _numba_array_types() -> tuple[type, ...]:
    global _NUMBA_ARRAY_TYPES
    if _NUMBA_ARRAY_TYPES is None:
        try:
            ensure_numba_cuda()
            from numba.cuda.cudadrv.devicearray import DeviceNDArrayBase
        except ImportError:  # the simulator's module: its arrays are not launched from here
            return ()
        _NUMBA_ARRAY_TYPES = (DeviceNDArrayBase,)
    return _NUMBA_ARRAY_TYPES


def describe_arg(obj: Any) -> ArgInfo | None:
    """An argument's launch contribution; ``None`` if the fast path cannot take it (host arrays, ...).

    Dispatched on the argument's exact type through ``_HANDLERS`` (one dict lookup): scalars,
    NumPy arrays (refused), arrays with an attribute reader, other ``__cuda_array_interface__``
    objects. Arrays whose pointer and shape cannot change (numba's, ringkernel's
    ``DeviceArray``) are cached by identity; the others are read on every call.
    """
    hit = _CACHE.get(id(obj))
    if hit is not None and hit.ref() is obj:
        return hit
    tp = type(obj)
    handler = _HANDLERS.get(tp)
    if handler is None:
        handler = _handler_for(tp)
    return handler(obj)


# -- per-type handlers -----------------------------------------------------------------------
_HANDLERS: dict[type, Any] = {}


def _refuse(obj: Any) -> None:
    return None


def _scalar_handler(kind: str | None) -> Any:
    if kind == "bool":
        return lambda v: ArgInfo(("scalar", "bool"), 0, (bool(v),), False)
    if kind is None:  # the value's dtype names the type
        return lambda v: ArgInfo(("scalar", v.dtype.str), 0, (v,), False)
    key = ("scalar", kind)  # "int", "float", "complex" or a NumPy dtype string
    return lambda v: ArgInfo(key, 0, (v,), False)


def _handler_for(tp: type) -> Any:
    """The handler for arguments of exact type ``tp`` (remembered in ``_HANDLERS``)."""
    if issubclass(tp, (bool, np.bool_)):
        h = _scalar_handler("bool")
    elif issubclass(tp, int):
        h = _scalar_handler("int")
    elif issubclass(tp, float):
        h = _scalar_handler("float")
    elif issubclass(tp, complex):
        h = _scalar_handler("complex")
    elif issubclass(tp, np.number):
        h = _scalar_handler(np.dtype(tp).str)  # one dtype per numeric scalar type
    elif issubclass(tp, np.generic):
        h = _scalar_handler(None)  # datetime64 and others: the dtype depends on the value
    elif issubclass(tp, np.ndarray) or not hasattr(tp, "__cuda_array_interface__"):
        h = _refuse
    else:
        h = _array_handler(tp)
    if len(_HANDLERS) > 1024:  # types made on the fly: never grow without bound
        _HANDLERS.clear()
    _HANDLERS[tp] = h
    return h


def _array_handler(tp: type) -> Any:
    reader = _READERS.get(tp, _UNSET)
    if reader is _UNSET:
        reader = _READERS[tp] = _make_reader(tp)
    immutable = _is_immutable(tp)
    if reader is None:
        return _cached_cai if immutable else _read_cai
    if immutable:
        return _cached_reader(reader)

    def read_every_call(obj: Any) -> ArgInfo | None:
        got = reader(obj)
        if got is None:
            return _read_cai(obj)
        ptr, shape, strides, dtype, stream = got
        key, size, head, tail = _layout_of(dtype, shape, strides)
        return ArgInfo(key, size, (*head, ptr, *tail), True, None, stream)

    return read_every_call


def _is_immutable(tp: type) -> bool:
    """Arrays whose pointer, shape, strides and dtype never change: numba's, and classes
    declaring ``__rk_immutable_array__`` with ``ptr``/``shape``/``strides``/``dtype``
    attributes (ringkernel's ``DeviceArray``)."""
    return issubclass(tp, _numba_array_types()) or bool(getattr(tp, "__rk_immutable_array__", False))


# -- cheap readers per array type (launcher_arrays says what a reader and a guard return) ---
def guard_for(obj: Any) -> tuple[Any, Any] | None:
    """``(guard, default_stream_check or None)`` for an array argument (see ``_GUARDS``):
    CuPy's and PyTorch's own; numba's from its attributes; any other array through its
    ``__cuda_array_interface__``. None for what is not an array."""
    tp = type(obj)
    make = _GUARDS.get(tp)
    if make is None:
        if not hasattr(tp, "__cuda_array_interface__") or issubclass(tp, np.ndarray):
            return None
        if _READERS.get(tp, _UNSET) is _UNSET:
            _READERS[tp] = _make_reader(tp)  # may register the type's own guard
        make = _GUARDS.get(tp)
        if make is None:
            make = _GUARDS[tp] = _interface_guard
    return make(obj)  # type: ignore[no-any-return]


def native_check_for(obj: Any, guard: Any) -> tuple[Any, ...]:
    """What the compiled launch path checks for array ``obj`` (its ``guard`` from
    :func:`guard_for`): ``(kind, type, dtype, shape, strides, extra)`` for the types C reads
    itself (numba's, CuPy's, PyTorch's, ringkernel's), else the guard to be called from C."""
    mod = _native.load()
    make = _NATIVE.get(type(obj))
    if mod is None or make is None:
        return (getattr(mod, "K_GUARD", 5), None, None, None, None, guard)
    kind, tp, dtype, shape, strides, extra = make(obj)
    return (getattr(mod, kind), tp, dtype, shape, strides, extra)


def device_fields(obj: Any) -> tuple[int, tuple[int, ...], tuple[int, ...], np.dtype] | None:
    """``(pointer, shape, strides in bytes, dtype)`` of a device array through the launch
    path's per-type reader (numba's, CuPy's and PyTorch's attributes, ringkernel's
    ``DeviceArray``), else its ``__cuda_array_interface__``; None for anything else (NumPy
    arrays, numbers, the simulator's arrays, which have no interface)."""
    tp = type(obj)
    if issubclass(tp, np.ndarray) or not hasattr(tp, "__cuda_array_interface__"):
        return None
    reader = _READERS.get(tp, _UNSET)
    if reader is _UNSET:
        reader = _READERS[tp] = _make_reader(tp)
    got = reader(obj) if reader is not None else None
    if got is not None:
        ptr, shape, strides, dtype, _stream = got
        shape = tuple(shape)
        if strides is None:
            strides = _strides_c(shape, dtype.itemsize)
        return int(ptr), shape, tuple(strides), dtype
    try:
        cai = obj.__cuda_array_interface__
    except (AttributeError, TypeError, ValueError, RuntimeError):  # e.g. a CPU tensor: not a device array
        return None
    shape = tuple(int(x) for x in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    st = cai.get("strides")
    strides = tuple(int(x) for x in st) if st else _strides_c(shape, dtype.itemsize)
    return int(cai["data"][0] or 0), shape, strides, dtype


def _make_reader(tp: Any) -> Any:
    mod = getattr(tp, "__module__", "") or ""
    if getattr(tp, "__rk_immutable_array__", False):  # ringkernel's DeviceArray: plain attributes

        def read_fields(a: Any) -> Any:
            return a.ptr, a.shape, a.strides, a.dtype, None

        _GUARDS[tp] = _attribute_guard(tp, operator.attrgetter("ptr"))
        _NATIVE[tp] = _attribute_check("K_PTR", tp)
        return read_fields
    if issubclass(tp, _numba_array_types()):
        try:
            ensure_numba_cuda()
            from numba.cuda.cudadrv.devicearray import DeviceNDArray
        except ImportError:  # the simulator's module
            return None
        if tp is not DeviceNDArray:
            return None  # mapped/managed arrays: their interface says where the data is

        def numba_pointer(a: Any) -> int | None:
            gd = a.gpu_data
            try:
                return int(gd.device_pointer) if gd is not None else 0
            except (AttributeError, TypeError):
                return None  # memory of another kind: its interface says where it is

        def read_numba(a: Any) -> Any:
            dtype = a.dtype
            if dtype.hasobject or dtype.fields:
                return None
            ptr = numba_pointer(a)
            return None if ptr is None else (ptr, a.shape, a.strides, dtype, None)

        _GUARDS[tp] = _attribute_guard(tp, numba_pointer)
        _NATIVE[tp] = _attribute_check("K_NUMBA", tp)
        return read_numba
    if mod.startswith("cupy") and tp.__name__ == "ndarray":
        import cupy

        current = cupy.cuda.get_current_stream

        def read_cupy(a: Any) -> Any:
            dtype = a.dtype
            if dtype.hasobject or dtype.fields:
                return None
            s = current().ptr
            return a.data.ptr, a.shape, a.strides, dtype, (s if s not in (0, 1) else None)

        def cupy_default_stream() -> bool:
            return current().ptr in (0, 1)

        _GUARDS[tp] = _attribute_guard(tp, operator.attrgetter("data.ptr"), cupy_default_stream)
        _NATIVE[tp] = _attribute_check("K_CUPY", tp)
        return read_cupy
    if mod.startswith("torch") and any(c.__name__ == "Tensor" and c.__module__ == "torch" for c in tp.__mro__):
        import torch  # type: ignore[import-not-found]

        names = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool",
                 "complex64", "complex128")  # fmt: skip
        dtypes = {getattr(torch, n): np.dtype(n) for n in names if hasattr(torch, n)}
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # what Triton's launcher reads
        if raw is None:

            def raw(dev: int) -> int:
                return int(torch.cuda.current_stream(dev).cuda_stream)

        def read_torch(t: Any) -> Any:
            dtype = dtypes.get(t.dtype)
            if dtype is None or t.requires_grad:
                return None  # the interface gives the proper answer (or the proper error)
            dev = t.get_device()
            if dev < 0:
                return None  # a CPU tensor: the interface refuses it
            it = dtype.itemsize
            s = raw(dev)
            return (t.data_ptr(), t.shape, tuple([x * it for x in t.stride()]), dtype,
                    (s if s not in (0, 1) else None))  # fmt: skip

        stream_checks: dict[int, Any] = {}  # one per device: a launch checks each once

        def guard_torch(t: Any) -> Any:
            sh, st, dt, dev = t.shape, t.stride(), t.dtype, t.get_device()

            def guard(x: Any) -> int | None:
                if type(x) is not tp or x.dtype is not dt or x.requires_grad or x.get_device() != dev:
                    return None
                if x.shape != sh or x.stride() != st:
                    return None
                return x.data_ptr()

            check = stream_checks.get(dev)
            if check is None:

                def check() -> bool:
                    return raw(dev) in (0, 1)

                stream_checks[dev] = check
            return guard, check

        _GUARDS[tp] = guard_torch
        _NATIVE[tp] = lambda t: ("K_TORCH", tp, t.dtype, t.shape, t.stride(), t.get_device())
        return read_torch
    return None


def _attribute_check(kind: str, tp: type) -> Any:
    """The compiled path's check of an array type whose guard is an ``_attribute_guard``."""
    return lambda a: (kind, tp, a.dtype, a.shape, a.strides, None)


_launch_fn: Any = None  # driver.launch_fn, bound here for the launch path (set by KernelLauncher)
_sync_fn: Any = None


# -- per-signature launchers ---------------------------------------------------------------
_SCALAR_FORMATS = {
    "int8": "b7x", "uint8": "B7x", "int16": "h6x", "uint16": "H6x", "int32": "i4x", "uint32": "I4x",
    "int64": "q", "uint64": "Q", "float32": "f4x", "float64": "d", "bool": "?7x",
    "complex64": "f4xf4x", "complex128": "dd",
}  # fmt: skip


def _format_for(numba_type: Any) -> tuple[str, int]:
    """``struct`` format and number of parameter slots for one numba argument type."""
    from numba.core import types

    if isinstance(numba_type, types.Array):
        return "qqqqQ" + "q" * (2 * numba_type.ndim), 5 + 2 * numba_type.ndim
    name = "bool" if isinstance(numba_type, types.Boolean) else str(numba_type)
    fmt = _SCALAR_FORMATS.get(name)
    if fmt is None:
        raise NotImplementedError(f"the fast launch path does not pack arguments of type {numba_type}")
    return fmt, (2 if name.startswith("complex") else 1)


class _ThreadState:
    __slots__ = ("buf", "ptrs", "last")

    def __init__(self, slots: int) -> None:
        self.buf = ctypes.create_string_buffer(max(1, slots) * _PARAM)
        base = ctypes.addressof(self.buf)
        self.ptrs = (ctypes.c_void_p * max(1, slots))(*[base + _PARAM * i for i in range(slots)])
        self.last: Any = None  # the infos list packed last (packing is skipped when it is the same object)


class KernelLauncher:
    """Launches one loaded kernel (one compiled signature) straight through the driver."""

    def __init__(self, function_handle: int, argtypes: Sequence[Any], name: str) -> None:
        self.handle = int(function_handle)
        self._chandle = ctypes.c_void_p(self.handle)
        self.name = name
        self.argtypes = tuple(argtypes)
        fmts, slots, complex_at = [], 0, []
        scalar_slots, offsets = [], []
        codes: dict[int, str] = {}
        for i, t in enumerate(self.argtypes):
            f, n = _format_for(t)
            offsets.append(_PARAM * slots)
            fmts.append(f)
            if n == 1 and not f.startswith("qqqqQ"):  # a one-slot scalar: packable on its own
                scalar_slots.append((i, struct.Struct("<" + f).pack_into, _PARAM * slots))
                codes[i] = f[0]
            slots += n
            if str(t).startswith("complex"):
                complex_at.append(i)
        #: ``(argument index, pack_into, byte offset)`` of each one-slot scalar parameter.
        self.scalar_slots = tuple(scalar_slots)
        #: The ``struct`` code of each one-slot scalar parameter by argument index (the compiled path's packing).
        self.scalar_codes = codes
        #: Byte offset of each argument's first parameter slot (an array's pointer is its fifth).
        self.arg_offsets = tuple(offsets)
        self._fmt = struct.Struct("<" + "".join(fmts))
        self._slots = slots
        self._complex_at = tuple(complex_at)
        self._local = threading.local()
        #: Set by ``CompiledKernel.close()``: the module is unloaded, launches are refused.
        self.closed = False
        global _launch_fn, _sync_fn
        if _launch_fn is None:
            driver.lib()
            _launch_fn, _sync_fn = driver.launch_fn, driver.sync_fn

    def _state(self) -> _ThreadState:
        try:
            return self._local.state  # type: ignore[no-any-return]
        except AttributeError:
            st = self._local.state = _ThreadState(self._slots)
            return st

    def pack_constant(self, infos: Sequence[ArgInfo]) -> tuple[Any, Any]:
        """A parameter block of its own for ``infos`` (cached numba arrays, scalars): ``(buffer, pointers)``."""
        values: list[Any] = []
        for info in infos:
            values.extend(info.values)
        if self._complex_at:
            values = self._split_complex(infos)
        st = _ThreadState(self._slots)
        self._fmt.pack_into(st.buf, 0, *values)
        return st.buf, st.ptrs

    def constant_call(
        self, infos: Sequence[ArgInfo], grid: tuple[int, int, int], block: tuple[int, int, int], shared_mem: int,
        stream: int, compiled: bool = True, report: tuple[Any, str, Any, Any, str] | None = None,
    ) -> tuple[Any, tuple[Any, ...], Any]:  # fmt: skip
        """``(fn, args, keepalive)``: ``fn(*args)`` is the complete ``cuLaunchKernel`` call for
        ``infos`` on ``stream``, with a parameter block of its own packed now (``keepalive``
        holds it). It never changes, so threads may call it concurrently (the launch memo).
        A compiled ``LaunchEntry``'s ``launch`` where the module is loaded, unless ``compiled``
        is False; else ctypes' call of the driver.

        ``report``: ``(notify, kernel name, decision, stream, kind)``: each successful launch
        then calls ``notify(kernel name, decision, stream, kind)`` (entries made while launch
        hooks are registered; the compiled entry does it without a Python frame)."""
        buf, ptrs = self.pack_constant(infos)
        if compiled and _native.entry_type() is not None:  # the compiled path: entry.launch() is the whole call
            if report is None:
                entry = self.native_entry(buf, grid, block, shared_mem, stream)
            else:
                notify, name, decision, rstream, kind = report
                entry = self.native_entry(buf, grid, block, shared_mem, stream, decision=decision, notify=notify,
                                          report_name=name, report_stream=rstream, report_kind=kind)  # fmt: skip
            return entry.launch, (), entry
        args = (self._chandle, *grid, *block, shared_mem, ctypes.c_void_p(stream) if stream else None, ptrs, None)
        if report is not None:
            return _reporting(_launch_fn, *report), args, buf
        return _launch_fn, args, buf

    def native_entry(
        self, buf: Any, grid: tuple[int, int, int], block: tuple[int, int, int], shared_mem: int, stream: int,
        scalars: tuple[Any, ...] = (), arrays: tuple[Any, ...] = (), stream_checks: tuple[Any, ...] = (),
        decision: Any = None, notify: Any = None, report_name: Any = None, report_stream: Any = None,
        report_kind: str = "auto",
    ) -> Any:  # fmt: skip
        """A compiled ``LaunchEntry`` over a copy of parameter block ``buf`` (see ringkernel/_native.c)."""
        entry_type = _native.entry_type()
        fn = _launch_fn
        return entry_type(
            ctypes.cast(fn, ctypes.c_void_p).value or 0, fn, self.handle, tuple(grid), tuple(block), int(shared_mem), int(stream or 0), bytes(buf)[: self._slots * _PARAM]
            or bytes(_PARAM), scalars, arrays, stream_checks, decision, notify, report_name, self, report_stream,
            report_kind,
        )  # fmt: skip

    def launch(self, infos: Sequence[ArgInfo], grid: tuple[int, int, int], block: tuple[int, int, int], shared_mem: int, stream: int) -> None:
        """Pack ``infos`` and call ``cuLaunchKernel``; raises ``RuntimeError`` with the driver's error.

        ``infos`` packed by the previous launch on this thread (the same list object, as the
        launch memo of ``GpuKernel`` passes it) are not packed again.
        """
        if self.closed:  # the function's module was unloaded: never hand its handle to the driver
            from ..errors import ResourceClosedError

            raise ResourceClosedError("CompiledKernel", operation=f"launch of '{self.name}'")
        try:
            st = self._local.state
        except AttributeError:
            st = self._state()
        if st.last is not infos:
            st.last = None  # a pack that fails half-way must not leave a buffer that claims to be whole
            values: list[Any] = []
            for info in infos:
                if info.sync_stream is not None:
                    _sync_fn(ctypes.c_void_p(info.sync_stream))  # the producer's stream (CAI v3)
                values.extend(info.values)
            if self._complex_at:
                values = self._split_complex(infos)
            self._fmt.pack_into(st.buf, 0, *values)
            st.last = infos
        rc = _launch_fn(
            self._chandle, grid[0], grid[1], grid[2], block[0], block[1], block[2], shared_mem,
            ctypes.c_void_p(stream) if stream else None, st.ptrs, None,
        )  # fmt: skip
        if rc:
            st.last = None
            raise driver.error(rc, f"cuLaunchKernel({self.name})")

    def _split_complex(self, infos: Sequence[ArgInfo]) -> list[Any]:
        out: list[Any] = []
        for i, info in enumerate(infos):
            if i in self._complex_at:
                z = complex(info.values[0])
                out += [z.real, z.imag]
            else:
                out.extend(info.values)
        return out


def _reporting(raw: Any, notify: Any, name: str, decision: Any, stream: Any, kind: str) -> Callable[..., int]:
    """``raw`` (ctypes' driver call) that also reports each successful launch to ``notify``
    (a launch-memo entry made while launch hooks are registered; removing the last hook drops it)."""

    def fn(*call_args: Any) -> int:
        rc = raw(*call_args)
        if not rc:
            notify(name, decision, stream, kind)
        return rc  # type: ignore[no-any-return]

    return fn
