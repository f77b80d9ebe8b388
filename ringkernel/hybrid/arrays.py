"""What an ``@elementwise`` call's array arguments are: host or device, their shape,
contiguity and the memory they span (for the aliasing checks), read as cheaply as each type
allows (numba's and ringkernel's immutable arrays once, beside the launch path's identity
cache)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._layout import is_c_contiguous, span
from ..compile.launcher import describe_arg, device_fields
from ..kernel.args import array_info

__all__: list[str] = []  # internal to ringkernel.hybrid


def _host_span(a: np.ndarray) -> tuple[str, int, int, tuple[Any, ...]]:
    ptr = a.__array_interface__["data"][0]
    lo, hi = span(a.shape, a.strides, a.itemsize)
    return ("host", ptr + lo, ptr + hi, (a.shape, a.strides))


_VIEWS: dict[int, tuple[Any, Any]] = {}  # id -> (the launch path's identity-cache record, the view)
_UNCACHED: dict[type, bool] = {}  # array type -> the launch path reads it on every call (not by identity)
_VIEWS_LIMIT = 4096


def _device_view(a: Any) -> tuple[tuple[int, ...], bool, tuple[Any, ...] | None, Any] | None:
    """(shape, C-contiguous, span, dtype) of a device array: the span is (memory space, first byte,
    end byte, layout), ``None`` where the pointer is unknown; ``None`` for an object that claims
    the interface but is no device array (a PyTorch CPU tensor). Read through the launch path's
    per-type reader (numba's, CuPy's and PyTorch's attributes: no ``__cuda_array_interface__``
    dict built where the type has a cheaper way). Arrays whose pointer and shape cannot change
    (numba's, ringkernel's ``DeviceArray``) are read once: the launch path caches them by
    identity (its record dies with the array), and the view is kept beside that record (a new
    array at a dead one's address has a new record, so a kept view is never stale)."""
    tp = type(a)
    if _UNCACHED.get(tp):  # CuPy, PyTorch, ...: read on every call (once, below)
        return _read_device_view(a)
    try:
        info = describe_arg(a)
    except Exception:  # noqa: BLE001 - an interface that refuses (a PyTorch CPU tensor): said below
        info = None
    if info is not None and tp not in _UNCACHED and len(_UNCACHED) < 256:
        _UNCACHED[tp] = info.ref is None  # (known per type: the launch path caches a type or never)
    if info is not None and info.ref is not None:
        kept = _VIEWS.get(id(a))
        if kept is not None and kept[0] is info:
            return kept[1]  # type: ignore[no-any-return]
        view = _read_device_view(a)
        if len(_VIEWS) >= _VIEWS_LIMIT:
            _VIEWS.clear()
        _VIEWS[id(a)] = (info, view)
        return view
    return _read_device_view(a)


def _read_device_view(a: Any) -> tuple[tuple[int, ...], bool, tuple[Any, ...] | None, Any] | None:
    got = device_fields(a)
    if got is None:  # the simulator's arrays: a NumPy array inside, no interface
        inner = getattr(a, "_ary", None)
        if isinstance(inner, np.ndarray):
            hs = _host_span(inner)
            return tuple(a.shape), bool(inner.flags.c_contiguous), ("device",) + hs[1:], inner.dtype
        try:
            info = array_info(a)
        except Exception:  # noqa: BLE001 - e.g. a PyTorch CPU tensor: its interface refuses
            return None
        if info is None:
            return None
        return tuple(info.shape), info.is_contiguous("C"), None, info.dtype
    ptr, shape, strides, dtype = got
    lo, hi = span(shape, strides, dtype.itemsize)
    return shape, is_c_contiguous(shape, strides, dtype.itemsize), ("device", ptr + lo, ptr + hi, (shape, strides)), dtype


_DEVICE_TYPES: dict[type, bool] = {}


def _is_device(a: Any) -> bool:
    """A device array (or what claims to be one): a type with ``__cuda_array_interface__``
    (numba, CuPy, PyTorch, DeviceArray; asked of the type, once: evaluating numba's property
    builds a dict, several microseconds an argument), or the simulator's arrays, which have
    numba's ``copy_to_host`` instead. A PyTorch CPU tensor passes here and is refused when its
    interface is read."""
    tp = type(a)
    known = _DEVICE_TYPES.get(tp)
    if known is None:
        if len(_DEVICE_TYPES) > 256:  # types made on the fly: never grow without bound
            _DEVICE_TYPES.clear()
        known = _DEVICE_TYPES[tp] = not issubclass(tp, np.ndarray) and hasattr(tp, "__cuda_array_interface__")
    return known or (not isinstance(a, np.ndarray) and hasattr(a, "copy_to_host") and hasattr(a, "shape"))
