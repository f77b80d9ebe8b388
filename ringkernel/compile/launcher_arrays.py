"""How the launch path reads an array: layouts, ``__cuda_array_interface__``, identity caching, guard factories."""

from __future__ import annotations

import functools
from functools import partial
import weakref
from typing import Any

import numpy as np

from .._layout import c_strides as _strides_c
from .launcher_memo import _CACHE, ArgInfo, _array_died

__all__: list[str] = []

_LAYOUTS: dict[tuple[Any, ...], tuple[Any, ...]] = {}
_LAYOUT_LIMIT = 4096


def _layout(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> str:
    if strides == _strides_c(shape, itemsize):
        return "C"
    if strides == tuple(reversed(_strides_c(tuple(reversed(shape)), itemsize))):
        return "F"
    return "A"


def _cached_reader(reader: Any) -> Any:
    def read_cached(obj: Any) -> ArgInfo | None:
        got = reader(obj)
        if got is None:
            return _cached_cai(obj)
        ptr, shape, strides, dtype, _stream = got
        key, size, head, tail = _layout_of(dtype, shape, strides)
        k = id(obj)
        try:
            ref = weakref.ref(obj, partial(_array_died, k))
        except TypeError:  # no weak references: read every call
            return ArgInfo(key, size, (*head, ptr, *tail), True, None, None)
        info = _CACHE[k] = ArgInfo(key, size, (*head, ptr, *tail), True, ref, None)
        return info

    return read_cached


def _layout_of(dtype: np.dtype, shape: tuple[int, ...], strides: tuple[int, ...]) -> tuple[Any, ...]:
    """``(type key, elements, (0, 0, size, itemsize), (*shape, *strides))`` of an array of this
    dtype, shape and byte strides: computed once per distinct layout."""
    lk = (dtype, shape, strides)
    got = _LAYOUTS.get(lk)
    if got is None:
        itemsize = dtype.itemsize
        size = 1
        for d in shape:
            size *= d
        shape, strides = tuple(int(d) for d in shape), tuple(int(s) for s in strides)
        key = ("array", dtype.str, len(shape), _layout(shape, strides, itemsize), False)
        got = (key, size, (0, 0, size, itemsize), (*shape, *strides))
        if len(_LAYOUTS) >= _LAYOUT_LIMIT:
            _LAYOUTS.clear()
        _LAYOUTS[lk] = got
    return got


def _cai_info(obj: Any) -> tuple[ArgInfo, Any] | None:
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
    return ArgInfo(key, size, values, True, None, None), producer


def _read_cai(obj: Any) -> ArgInfo | None:
    """Any ``__cuda_array_interface__`` object, read on every call."""
    got = _cai_info(obj)
    if got is None:
        return None
    info, producer = got
    return info._replace(sync_stream=producer if producer not in (None, 1) else None)


def _cached_cai(obj: Any) -> ArgInfo | None:
    """An immutable array type read through its interface, cached by identity."""
    got = _cai_info(obj)
    if got is None:
        return None
    info, producer = got
    return _cache(obj, info, producer)


def _cache(obj: Any, info: ArgInfo, producer: Any = None) -> ArgInfo:
    try:
        k = id(obj)
        ref = weakref.ref(obj, functools.partial(_array_died, k))
    except TypeError:  # no weak references: read every call
        return info._replace(sync_stream=producer if producer not in (None, 1) else None)
    info = info._replace(ref=ref)
    _CACHE[k] = info
    return info


# -- cheap readers per array type ------------------------------------------------------------
# Building ``__cuda_array_interface__`` costs CuPy and PyTorch several microseconds a call
# (PyTorch's is Python code); their own attributes give the same facts for a fraction of it.
# A reader returns ``(pointer, shape, byte strides, numpy dtype, producer stream or None)``,
# or ``None`` to fall back to the interface (a dtype it does not know, a CPU tensor, ...). The
# producer stream follows the interface's version-3 rule: the library's current stream, with
# the legacy default stream (0 or 1) meaning "nothing to wait for".
#
# A guard (``_GUARDS``) serves the launch memo of read-every-call types: made from one array,
# it returns the pointer of an array of the same type, dtype, shape and strides, else None;
# with it a per-type check that the library's current stream is the default one.
_UNSET: Any = object()
_READERS: dict[type, Any] = {}
_GUARDS: dict[type, Any] = {}
#: What the compiled launch path (ringkernel/_native.c) checks for an array type, beside its
#: guard: made from one array, ``(kind, type, dtype, shape, strides, extra)`` with kind one of
#: the module's ``K_*`` names (the same checks as the type's guard, in C). Types without an
#: entry have their Python guard called from C.
_NATIVE: dict[type, Any] = {}


def _interface_guard(a: Any) -> tuple[Any, Any] | None:
    """A guard through ``__cuda_array_interface__`` (1-2 us a call): same type, shape,
    strides, dtype and read-only flag, and no producer stream to wait for."""
    cai = a.__cuda_array_interface__
    tp, sh, st, ts = type(a), tuple(cai["shape"]), cai.get("strides"), cai["typestr"]
    ro = bool(cai["data"][1])

    def guard(x: Any) -> int | None:
        if type(x) is not tp:
            return None
        c = x.__cuda_array_interface__
        if tuple(c["shape"]) != sh or c.get("strides") != st or c["typestr"] != ts or bool(c["data"][1]) != ro:
            return None
        if c.get("version", 0) >= 3 and c.get("stream") not in (None, 1):
            return None  # a producer stream to wait for: the checked path does
        return int(c["data"][0] or 0)

    return guard, None


def _attribute_guard(tp: Any, pointer: Any, default_stream: Any = None) -> Any:
    """The guard factory of an array type whose ``shape``, byte ``strides`` and ``dtype`` are
    plain attributes (numba's, CuPy's, ringkernel's): same type, shape, strides and dtype as
    the array the guard is made from, then ``pointer(x)`` (None: not readable this way)."""

    def make(a: Any) -> tuple[Any, Any]:
        sh, st, dt = a.shape, a.strides, a.dtype

        def guard(x: Any) -> int | None:
            if type(x) is not tp or x.shape != sh or x.strides != st:
                return None
            d = x.dtype
            if d is not dt and d != dt:
                return None
            return pointer(x)  # type: ignore[no-any-return]

        return guard, default_stream

    return make
