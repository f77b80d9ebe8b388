"""Reading kernel arguments: shape and dtype of device arrays, and signature matching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ArrayInfo", "array_info", "describe", "fmt_type", "accepts"]


@dataclass(frozen=True)
class ArrayInfo:
    shape: tuple[int, ...]
    dtype: np.dtype
    size: int
    #: Bytes between elements per axis; ``None``: C-contiguous (what the interface's absent
    #: ``strides`` means).
    strides: tuple[int, ...] | None = None

    def contiguous_axis(self) -> int | None:
        """The axis whose neighbours are adjacent in memory (smallest stride among axes longer than 1)."""
        if not self.shape:
            return None
        if self.strides is None:
            return len(self.shape) - 1
        axes = [a for a, n in enumerate(self.shape) if n > 1] or list(range(len(self.shape)))
        return min(axes, key=lambda a: (abs(self.strides[a]), -a))  # type: ignore[index]


def array_info(arg: Any) -> ArrayInfo | None:
    """Shape/dtype of a device array (numba, simulator, CuPy, ``__cuda_array_interface__``), else None.

    numba's and CuPy's arrays expose ``shape``/``dtype``/``size`` as plain attributes, which
    is several times cheaper than building their ``__cuda_array_interface__`` dict; the
    interface is the fallback (PyTorch tensors, whose ``dtype`` is not a NumPy dtype).
    """
    if isinstance(arg, (int, float, complex, bool, np.generic, np.ndarray)) or arg is None:
        return None
    dtype = getattr(arg, "dtype", None)
    # hasattr on the type: on an instance it would build the interface dict.
    if isinstance(dtype, np.dtype) and (hasattr(type(arg), "__cuda_array_interface__") or _is_sim_array(arg)):
        strides = getattr(arg, "strides", None)
        return ArrayInfo(tuple(arg.shape), dtype, int(arg.size), tuple(strides) if strides is not None else None)
    cai = getattr(arg, "__cuda_array_interface__", None)
    if cai is not None:
        shape = tuple(int(s) for s in cai["shape"])
        size = 1
        for s in shape:
            size *= s
        st = cai.get("strides")
        return ArrayInfo(shape, np.dtype(cai["typestr"]), size, tuple(int(x) for x in st) if st else None)
    return None


def _is_sim_array(arg: Any) -> bool:
    cls = type(arg)
    return cls.__name__ == "FakeCUDAArray" and cls.__module__.startswith("numba.cuda.simulator")


def describe(arg: Any) -> str:
    info = array_info(arg)
    if info is not None:
        return f"device array {info.dtype}{list(info.shape)}"
    if isinstance(arg, np.ndarray):
        return f"host ndarray {arg.dtype}{list(arg.shape)}"
    return type(arg).__name__


def fmt_type(numba_type: Any) -> str:
    """numba type in signature notation: ``float32[:]`` rather than ``array(float32, 1d, A)``."""
    from numba.core import types

    if isinstance(numba_type, types.Array):
        return f"{numba_type.dtype}[{', '.join([':'] * numba_type.ndim)}]"
    return str(numba_type)


def accepts(numba_type: Any, arg: Any, info: ArrayInfo | None) -> bool:
    from numba.core import types
    from numba.np.numpy_support import as_dtype

    if isinstance(numba_type, types.Array):
        if info is None:
            return False
        return info.dtype == as_dtype(numba_type.dtype) and len(info.shape) == numba_type.ndim
    if isinstance(numba_type, types.Boolean):
        return isinstance(arg, (bool, np.bool_))
    if isinstance(numba_type, types.Integer):
        return isinstance(arg, (int, np.integer)) and not isinstance(arg, bool)
    if isinstance(numba_type, types.Float):
        return isinstance(arg, (int, float, np.integer, np.floating)) and not isinstance(arg, bool)
    if isinstance(numba_type, types.Complex):
        return isinstance(arg, (int, float, complex, np.number)) and not isinstance(arg, bool)
    return True  # other numba types: let numba decide
