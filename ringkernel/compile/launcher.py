"""The fast launch path: arguments packed once per array object, one ``cuLaunchKernel`` call.

numba's kernel ABI passes each array as ``meminfo, parent, nitems, itemsize, data,
shape[ndim], strides[ndim]`` (all 8 bytes) and each scalar as itself. A
:class:`KernelLauncher` is built once per compiled signature: it knows the ``struct``
format of the whole parameter block, so a launch is one ``struct.pack_into`` into a
per-thread buffer whose slot addresses were computed in advance, and one ctypes call of
the driver's ``cuLaunchKernel``.

What an array contributes is read once per array object and cached by identity, with a
weak reference that drops the entry when the array dies. Only numba device arrays are
cached this way: their pointer and shape cannot change. Other ``__cuda_array_interface__``
objects (CuPy, PyTorch) are read on every launch, since CuPy can reshape in place and
PyTorch can resize.
"""

from __future__ import annotations

import ctypes
import functools
import struct
import threading
import weakref
from typing import Any, NamedTuple, Sequence

import numpy as np

from .. import driver
from .._layout import c_strides as _strides_c

__all__ = ["ArgInfo", "describe_arg", "KernelLauncher", "register_memo", "clear_memo", "read_every_call"]

_PARAM = 8  # bytes per parameter slot (complex numbers take two slots)


class ArgInfo(NamedTuple):
    """What one argument contributes to a launch (a NamedTuple: cheap to build per launch)."""

    type_key: Any  # hashable: picks the compiled signature
    size: int  # elements (0 for scalars)
    values: tuple  # values for the parameter slots (arrays); the scalar itself otherwise
    is_array: bool
    ref: Any = None  # weakref to the array (cached entries only)
    sync_stream: int | None = None  # producer stream to synchronise with (CAI 'stream')


_CACHE: dict[int, ArgInfo] = {}
# Launch memos keyed by the ids of numba arrays (see GpuKernel): id -> [(memo, key), ...].
# When an array dies its weakref callback drops every memo entry naming it, before CPython
# can hand its id to a new object, so a memo hit by id always means the same live arrays.
_DEPENDENTS: dict[int, dict[tuple[int, tuple], tuple[dict, tuple[int, ...]]]] = {}


def _array_died(k: int, _ref: Any = None) -> None:
    """Forget array ``k`` and the memo entries that use it (also a weakref callback); the
    other arrays of those entries forget them too, so nothing accumulates."""
    _CACHE.pop(k, None)
    for (mid, key), (memo, others) in _DEPENDENTS.pop(k, {}).items():
        memo.pop(key, None)
        for o in others:
            if o != k:
                deps = _DEPENDENTS.get(o)
                if deps is not None:
                    deps.pop((mid, key), None)


def clear_memo(memo: dict) -> None:
    """Empty a memo (its size limit, a hook, close()) and forget its entries' registrations:
    a memo's keys are the ids of the arrays registered for them."""
    mid = id(memo)
    for key in list(memo):
        for i in key:
            deps = _DEPENDENTS.get(i)
            if deps is not None:
                deps.pop((mid, key), None)
                if not deps:
                    del _DEPENDENTS[i]
    memo.clear()


def register_memo(memo: dict, key: tuple, args: Sequence[Any]) -> None:
    """Record that ``memo[key]`` must go when any of ``args`` (cached numba arrays) dies.
    Registering the same entry again (a memo cleared at its size limit and refilled) does
    not add to what is kept."""
    ids = tuple(id(a) for a in args)
    for i in ids:
        _DEPENDENTS.setdefault(i, {})[(id(memo), key)] = (memo, ids)
_NUMBA_ARRAY_TYPES: tuple[type, ...] | None = None


def _numba_array_types() -> tuple[type, ...]:
    global _NUMBA_ARRAY_TYPES
    if _NUMBA_ARRAY_TYPES is None:
        from numba.cuda.cudadrv.devicearray import DeviceNDArrayBase

        _NUMBA_ARRAY_TYPES = (DeviceNDArrayBase,)
    return _NUMBA_ARRAY_TYPES


def _layout(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> str:
    if strides == _strides_c(shape, itemsize):
        return "C"
    if strides == tuple(reversed(_strides_c(tuple(reversed(shape)), itemsize))):
        return "F"
    return "A"


def describe_arg(obj: Any) -> ArgInfo | None:
    """An argument's launch contribution; ``None`` if the fast path cannot take it (host arrays, ...)."""
    hit = _CACHE.get(id(obj))
    if hit is not None and hit.ref() is obj:
        return hit
    if isinstance(obj, (bool, np.bool_)):
        return ArgInfo(("scalar", "bool"), 0, (bool(obj),), False)
    if isinstance(obj, int):
        return ArgInfo(("scalar", "int"), 0, (obj,), False)
    if isinstance(obj, float):
        return ArgInfo(("scalar", "float"), 0, (obj,), False)
    if isinstance(obj, complex):
        return ArgInfo(("scalar", "complex"), 0, (obj,), False)
    if isinstance(obj, np.generic):
        return ArgInfo(("scalar", obj.dtype.str), 0, (obj,), False)
    if isinstance(obj, np.ndarray):
        return None
    tp = type(obj)
    reader = _READERS.get(tp, _UNSET)
    if reader is _UNSET:
        reader = _READERS[tp] = _make_reader(tp)
    if reader is not None:
        got = reader(obj)
        if got is not None:  # read every call: CuPy reshapes in place, PyTorch resizes
            ptr, shape, strides, dtype, stream = got
            itemsize = dtype.itemsize
            size = 1
            for d in shape:
                size *= d
            lkey = (shape, strides, itemsize)
            layout = _LAYOUTS.get(lkey)
            if layout is None:
                if len(_LAYOUTS) > 4096:
                    _LAYOUTS.clear()
                layout = _LAYOUTS[lkey] = _layout(shape, strides, itemsize)
            key = ("array", dtype.str, len(shape), layout, False)
            return ArgInfo(key, size, (0, 0, size, itemsize, ptr, *shape, *strides), True, None, stream)
    if not hasattr(tp, "__cuda_array_interface__"):
        return None
    cai = obj.__cuda_array_interface__
    shape = tuple(int(s) for s in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    if dtype.hasobject or dtype.fields:
        return None
    itemsize = dtype.itemsize
    strides = tuple(int(s) for s in cai["strides"]) if cai.get("strides") else _strides_c(shape, itemsize)
    ptr, readonly = cai["data"]
    size = 1
    for s in shape:
        size *= s
    values = (0, 0, size, itemsize, int(ptr or 0), *shape, *strides)
    key = ("array", dtype.str, len(shape), _layout(shape, strides, itemsize), bool(readonly))
    producer = cai.get("stream") if cai.get("version", 0) >= 3 else None
    if isinstance(obj, _numba_array_types()):
        try:
            k = id(obj)
            ref = weakref.ref(obj, functools.partial(_array_died, k))
        except TypeError:
            return ArgInfo(key, size, values, True, None, producer)
        info = ArgInfo(key, size, values, True, ref, None)
        _CACHE[k] = info
        return info
    return ArgInfo(key, size, values, True, None, producer if producer not in (None, 1) else None)


# -- cheap readers per array type ------------------------------------------------------------
# Building ``__cuda_array_interface__`` costs CuPy and PyTorch several microseconds a call
# (PyTorch's is Python code); their own attributes give the same facts for a fraction of it.
# A reader returns ``(pointer, shape, byte strides, numpy dtype, producer stream or None)``,
# or ``None`` to fall back to the interface (a dtype it does not know, a CPU tensor, ...). The
# producer stream follows the interface's version-3 rule: the library's current stream, with
# the legacy default stream (0 or 1) meaning "nothing to wait for".
_UNSET: Any = object()
_READERS: dict[type, Any] = {}
_LAYOUTS: dict[tuple[Any, ...], str] = {}


def read_every_call(tp: type) -> bool:
    """Whether arrays of ``tp`` are read on every launch (CuPy, PyTorch: never memoised)."""
    return _READERS.get(tp) is not None


def _make_reader(tp: type) -> Any:
    mod = getattr(tp, "__module__", "") or ""
    if mod.startswith("cupy") and tp.__name__ == "ndarray":
        import cupy

        current = cupy.cuda.get_current_stream

        def read_cupy(a: Any) -> Any:
            dtype = a.dtype
            if dtype.hasobject or dtype.fields:
                return None
            s = current().ptr
            return a.data.ptr, a.shape, a.strides, dtype, (s if s not in (0, 1) else None)

        return read_cupy
    if mod.startswith("torch") and any(c.__name__ == "Tensor" and c.__module__ == "torch" for c in tp.__mro__):
        import torch  # type: ignore[import-not-found]

        names = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool",
                 "complex64", "complex128")  # fmt: skip
        dtypes = {getattr(torch, n): np.dtype(n) for n in names if hasattr(torch, n)}
        current = torch.cuda.current_stream

        def read_torch(t: Any) -> Any:
            dtype = dtypes.get(t.dtype)
            if dtype is None or not t.is_cuda or t.requires_grad:
                return None  # the interface gives the proper answer (or the proper error)
            it = dtype.itemsize
            s = current(t.device).cuda_stream
            return (t.data_ptr(), tuple(t.shape), tuple(x * it for x in t.stride()), dtype,
                    (s if s not in (0, 1) else None))  # fmt: skip

        return read_torch
    return None


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
        scalar_slots = []
        for i, t in enumerate(self.argtypes):
            f, n = _format_for(t)
            fmts.append(f)
            if n == 1 and not f.startswith("qqqqQ"):  # a one-slot scalar: packable on its own
                scalar_slots.append((i, struct.Struct("<" + f).pack_into, _PARAM * slots))
            slots += n
            if str(t).startswith("complex"):
                complex_at.append(i)
        #: ``(argument index, pack_into, byte offset)`` of each one-slot scalar parameter.
        self.scalar_slots = tuple(scalar_slots)
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
        stream: int,
    ) -> tuple[Any, tuple[Any, ...], Any]:  # fmt: skip
        """``(fn, args, keepalive)``: ``fn(*args)`` is the complete ``cuLaunchKernel`` call for
        ``infos`` on ``stream``, with a parameter block of its own packed now (``keepalive``
        holds it). It never changes, so threads may call it concurrently (the launch memo)."""
        buf, ptrs = self.pack_constant(infos)
        args = (self._chandle, *grid, *block, shared_mem, ctypes.c_void_p(stream) if stream else None, ptrs, None)
        return _launch_fn, args, buf

    def launch_scalars(
        self, infos: list[ArgInfo], slots: Sequence[tuple[int, Any, Any, int]], args: Sequence[Any],
        grid: tuple[int, int, int], block: tuple[int, int, int], shared_mem: int, stream: Any,
    ) -> int:  # fmt: skip
        """Launch ``infos`` (a memo entry's, packed whole once per thread) with the scalars of
        ``args`` written over their slots: ``slots`` holds ``(argument index, expected type,
        pack_into, offset)``. Returns the driver's result; ``struct.error`` for a value that
        does not fit (the caller falls back to the checked path)."""
        if self.closed:
            from ..errors import ResourceClosedError

            raise ResourceClosedError("CompiledKernel", operation=f"launch of '{self.name}'")
        st = self._state()
        buf = st.buf
        if st.last is not infos:
            st.last = None  # as in launch(): never trust a half-written buffer
            values: list[Any] = []
            for info in infos:
                values.extend(info.values)
            self._fmt.pack_into(buf, 0, *values)
            st.last = infos
        for pos, _type, pack_into, offset in slots:
            pack_into(buf, offset, args[pos])
        return int(_launch_fn(self._chandle, grid[0], grid[1], grid[2], block[0], block[1], block[2], shared_mem,
                              stream, st.ptrs, None))  # fmt: skip

    def launch(self, infos: Sequence[ArgInfo], grid: tuple[int, int, int], block: tuple[int, int, int], shared_mem: int, stream: int) -> None:
        """Pack ``infos`` and call ``cuLaunchKernel``; raises ``RuntimeError`` with the driver's error.

        ``infos`` packed by the previous launch on this thread (the same list object, as the
        launch memo of ``GpuKernel`` passes it) are not packed again.
        """
        if self.closed:  # the function's module was unloaded: never hand its handle to the driver
            from ..errors import ResourceClosedError

            raise ResourceClosedError("CompiledKernel", operation=f"launch of '{self.name}'")
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
