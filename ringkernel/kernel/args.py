"""Kernel arguments: what each one is, the checks before launch, shape and dtype of device
arrays, and signature matching."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import KernelArgumentError

__all__ = ["prepare_arguments", "ArrayInfo", "array_info", "describe", "fmt_type", "accepts", "argument_kind", "ArgumentProblem"]


@dataclass(frozen=True)
class ArrayInfo:
    shape: tuple[int, ...]
    dtype: np.dtype
    size: int
    #: Bytes between elements per axis; ``None``: C-contiguous (what the interface's absent
    #: ``strides`` means).
    strides: tuple[int, ...] | None = None

    def is_contiguous(self, order: str) -> bool:
        """Whether the elements are packed in ``order`` ("C" or "F"), as numba's layouts mean."""
        if self.strides is None:
            return order == "C" or sum(1 for n in self.shape if n > 1) <= 1
        shape = self.shape if order == "C" else self.shape[::-1]
        strides = self.strides if order == "C" else self.strides[::-1]
        expect = self.dtype.itemsize
        for n, st in zip(reversed(shape), reversed(strides)):
            if n > 1 and st != expect:
                return False
            expect *= n
        return True

    def contiguous_axis(self) -> int | None:
        """The axis whose neighbours are adjacent in memory (smallest stride among axes longer than 1)."""
        if not self.shape:
            return None
        if self.strides is None:
            return len(self.shape) - 1
        axes = [a for a, n in enumerate(self.shape) if n > 1] or list(range(len(self.shape)))
        return min(axes, key=lambda a: (abs(self.strides[a]), -a))  # type: ignore[index]


_TRUSTED: dict[type, int] = {}


def _attributes_trusted(tp: type) -> int:
    """2: ``shape``/``dtype``/``size``/byte ``strides`` attributes agree with the type's
    ``__cuda_array_interface__`` (numba's, CuPy's and ringkernel's arrays); 1: maybe a
    simulator array (checked per object); 0: read the interface (any other type: its
    attributes may mean something else, e.g. strides in elements)."""
    mod = (getattr(tp, "__module__", "") or "").split(".")[0]
    if mod in ("numba", "cupy", "ringkernel") and hasattr(tp, "__cuda_array_interface__"):
        return 2
    return 1 if mod == "numba" else 0


def array_info(arg: Any) -> ArrayInfo | None:
    """Shape/dtype of a device array (numba, simulator, CuPy, ``__cuda_array_interface__``), else None.

    numba's and CuPy's arrays expose ``shape``/``dtype``/``size`` as plain attributes, which
    is several times cheaper than building their ``__cuda_array_interface__`` dict; the
    interface is the fallback (PyTorch tensors, whose ``dtype`` is not a NumPy dtype).
    """
    if isinstance(arg, (int, float, complex, bool, np.generic, np.ndarray)) or arg is None:
        return None
    tp = type(arg)
    trusted = _TRUSTED.get(tp)
    if trusted is None:
        trusted = _TRUSTED[tp] = _attributes_trusted(tp)
    dtype = getattr(arg, "dtype", None) if trusted else None
    if isinstance(dtype, np.dtype) and (trusted == 2 or _is_sim_array(arg)):
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


class ArgumentProblem(Exception):
    """Why a value cannot be a kernel argument (``message``) and what to do (``hint``)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


_INT_MIN, _UINT_MAX = -(2**63), 2**64 - 1


def argument_kind(arg: Any) -> str:
    """What a kernel argument is: ``"array"`` (device memory), ``"host"`` (a NumPy array),
    ``"managed"`` (a :class:`~ringkernel.ManagedBuffer`), ``"scalar"`` or ``"tuple"``.

    Raises :class:`ArgumentProblem` for anything numba cannot pass to a kernel, saying what
    to pass instead: ``None``, strings, lists, dicts, 0-d arrays, integers beyond 64 bits,
    a ``PooledBuffer`` (raw bytes: no shape, no dtype), objects in host memory.
    """
    if arg is None:
        raise ArgumentProblem(
            "is None",
            "pass a device array or a number (did a function return None instead of an array?)",
        )
    if isinstance(arg, (bool, np.bool_, float, complex)):
        return "scalar"
    if isinstance(arg, int):
        if not _INT_MIN <= arg <= _UINT_MAX:
            raise ArgumentProblem(
                f"is the integer {arg}, which does not fit in 64 bits",
                "pass a value in [-2**63, 2**64) or a float",
            )
        return "scalar"
    if isinstance(arg, np.ndarray):
        if arg.ndim == 0:
            raise ArgumentProblem(
                f"is a 0-d NumPy array ({arg.dtype})",
                "pass the number itself: x.item() or x[()]",
            )
        if arg.dtype.hasobject:
            raise ArgumentProblem(f"is a NumPy array of Python objects ({arg.dtype})", "use a numeric dtype")
        return "host"
    if isinstance(arg, (np.str_, np.bytes_, str, bytes, bytearray)):
        raise ArgumentProblem(
            f"is a {type(arg).__name__}; kernels cannot take text",
            "pass numbers or arrays (text as bytes: cuda.to_device(np.frombuffer(s.encode(), np.uint8)))",
        )
    if isinstance(arg, np.generic):
        if isinstance(arg, np.object_):
            raise ArgumentProblem("is a NumPy object scalar", "pass a number")
        if isinstance(arg, np.void):
            raise ArgumentProblem(
                f"is a structured NumPy scalar ({arg.dtype}), which numba cannot pass to a kernel",
                "pass its fields as separate numbers, or a one-element device array of the record dtype",
            )
        return "scalar"
    managed = sys.modules.get("ringkernel.memory.buffer")
    if managed is not None and isinstance(arg, managed.ManagedBuffer):
        return "managed"
    pooled = sys.modules.get("ringkernel.memory.pool")
    if pooled is not None and isinstance(arg, pooled.PooledBuffer):
        raise ArgumentProblem(
            f"is a PooledBuffer ({arg.nbytes} bytes): raw device memory with no shape or dtype",
            "view it as an array first: buf.as_array(shape, dtype), or allocate with pool.device_array(shape, dtype)",
        )
    if hasattr(type(arg), "__cuda_array_interface__") or _is_sim_array(arg):
        try:
            cai = arg.__cuda_array_interface__ if not _is_sim_array(arg) else None
            if cai is not None and np.dtype(cai["typestr"]).hasobject:
                raise ArgumentProblem("is a device array of Python objects", "use a numeric dtype")
        except ArgumentProblem:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken interface: say so, do not crash in numba
            raise ArgumentProblem(
                f"has a __cuda_array_interface__ that cannot be read ({type(exc).__name__}: {exc})",
                "pass a numba device array (numba.cuda.as_cuda_array(x)) or a CuPy/PyTorch array",
            ) from exc
        return "array"
    if isinstance(arg, tuple):
        for k, item in enumerate(arg):
            try:
                kind = argument_kind(item)
            except ArgumentProblem as p:
                raise ArgumentProblem(
                    f"is a tuple whose item {k} {p.message}",
                    "a tuple argument may hold numbers and device arrays only; " + p.hint,
                ) from None
            if kind not in ("scalar", "array", "tuple"):
                raise ArgumentProblem(
                    f"is a tuple holding a {type(item).__name__} ({kind})",
                    "a tuple argument may hold numbers and device arrays only",
                )
        return "tuple"
    if isinstance(arg, list):
        raise ArgumentProblem(
            f"is a Python list of {len(arg)} items; kernels take device arrays",
            "copy it to the GPU once: numba.cuda.to_device(np.asarray(x, dtype=np.float32)) (choose the dtype), "
            "or pass a tuple for a fixed handful of numbers",
        )
    if isinstance(arg, dict):
        raise ArgumentProblem("is a dict; kernels take device arrays and numbers", "pass the values as separate arguments")
    what = type(arg).__name__
    if hasattr(arg, "__array__") or hasattr(arg, "__array_interface__"):
        raise ArgumentProblem(
            f"is a {what} in host memory (it has no __cuda_array_interface__)",
            "move it to the GPU: numba.cuda.to_device(np.asarray(x)), tensor.cuda(), or cupy.asarray(x)",
        )
    raise ArgumentProblem(
        f"is a {type(arg).__module__}.{what}, which numba cannot pass to a kernel",
        "pass a device array (numba, CuPy, PyTorch: anything with __cuda_array_interface__), a number, "
        "or a tuple of those",
    )


def _is_sim_array(arg: Any) -> bool:
    cls = type(arg)
    return cls.__name__ == "FakeCUDAArray" and cls.__module__.startswith("numba.cuda.simulator")


def describe(arg: Any) -> str:
    info = array_info(arg)
    if info is not None:
        layout = "" if info.is_contiguous("C") else (" (Fortran order)" if info.is_contiguous("F") else " (strided)")
        return f"device array {info.dtype}{list(info.shape)}{layout}"
    if isinstance(arg, np.ndarray):
        return f"host ndarray {arg.dtype}{list(arg.shape)}"
    return type(arg).__name__


def fmt_type(numba_type: Any) -> str:
    """numba type in signature notation: ``float32[:]`` rather than ``array(float32, 1d, A)``."""
    from numba.core import types

    if isinstance(numba_type, types.Array):
        dims = [":"] * numba_type.ndim
        if dims and numba_type.layout == "C":
            dims[-1] = "::1"
        elif dims and numba_type.layout == "F":
            dims[0] = "::1"
        return f"{numba_type.dtype}[{', '.join(dims)}]"
    return str(numba_type)


def accepts(numba_type: Any, arg: Any, info: ArrayInfo | None) -> bool:
    from numba.core import types
    from numba.np.numpy_support import as_dtype

    if isinstance(numba_type, types.Array):
        if info is None:
            return False
        if info.dtype != as_dtype(numba_type.dtype) or len(info.shape) != numba_type.ndim:
            return False
        if numba_type.layout == "C":
            return info.is_contiguous("C")
        if numba_type.layout == "F":
            return info.is_contiguous("F")
        return True
    if isinstance(numba_type, types.Boolean):
        return isinstance(arg, (bool, np.bool_))
    if isinstance(numba_type, types.Integer):
        return isinstance(arg, (int, np.integer)) and not isinstance(arg, bool)
    if isinstance(numba_type, types.Float):
        return isinstance(arg, (int, float, np.integer, np.floating)) and not isinstance(arg, bool)
    if isinstance(numba_type, types.Complex):
        return isinstance(arg, (int, float, complex, np.number)) and not isinstance(arg, bool)
    return True  # other numba types: let numba decide


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    """The very same elements in the same layout (the same array passed twice, or an equal view)."""
    if a is b:
        return True
    ia, ib = a.__array_interface__, b.__array_interface__
    return bool(ia["data"][0] == ib["data"][0] and a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype)


def _share_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two host arrays share a byte (bounds first; where the exact answer is too costly
    to work out, they are taken to share)."""
    if not np.may_share_memory(a, b):
        return False
    try:
        return bool(np.shares_memory(a, b))
    except Exception:  # noqa: BLE001 - numpy's TooHardError: assume they do
        return True


def prepare_arguments(
kernel_name: str, params: list[str], args: tuple[Any, ...], host_transfer: bool,
written_params: Callable[[], tuple[str, ...]],
) -> tuple[tuple[Any, ...], list[tuple[int, np.ndarray, Any]]]:  # fmt: skip
    """Check every argument of kernel ``kernel_name`` before anything reaches numba or the
    driver; convert what has
    one right conversion (a ManagedBuffer to its device side, host arrays when
    ``host_transfer``). Returns the arguments to launch with and the host arrays to copy
    back afterwards (only those the kernel may write)."""
    if len(args) != len(params):
        raise KernelArgumentError(
            f"takes {len(params)} arguments ({', '.join(params)}), got {len(args)}",
            kernel_name=kernel_name,
            details={"expected": len(params), "got": len(args)},
        )
    kinds = []
    for i, arg in enumerate(args):
        try:
            kinds.append(argument_kind(arg))
        except ArgumentProblem as p:
            raise KernelArgumentError(
                f"argument '{params[i]}' (position {i}) {p.message}",
                kernel_name=kernel_name,
                hint=p.hint,
                details={"parameter": params[i], "position": i, "type": type(arg).__name__},
            ) from None
    if "host" not in kinds and "managed" not in kinds:
        return args, []
    written = set(written_params())
    moved = list(args)
    copies: list[tuple[int, np.ndarray, Any]] = []
    to_copy: list[int] = []
    for i, (arg, kind) in enumerate(zip(args, kinds)):
        name = params[i]
        if kind == "managed":
            moved[i] = arg.device_view(readonly=name not in written)
        elif kind == "host":
            if not host_transfer:
                raise KernelArgumentError(
                    f"argument '{name}' (position {i}) is a NumPy array in host memory "
                    f"({arg.dtype}{list(arg.shape)}); kernels read device memory",
                    kernel_name=kernel_name,
                    hint=(
                        f"copy it once with numba.cuda.to_device({name}) and pass the device array "
                        "(reuse it across launches), or pass host_transfer=True to copy in and out on every "
                        "call (slow: two PCIe transfers per launch)"
                    ),
                    details={"parameter": name, "position": i, "shape": arg.shape, "dtype": str(arg.dtype)},
                )
            if name in written and not (arg.flags.c_contiguous or arg.flags.f_contiguous):
                raise KernelArgumentError(
                    f"argument '{name}' (position {i}) is a non-contiguous view of a host array "
                    f"(strides {arg.strides}), and the kernel may write it: the result cannot be copied "
                    "back into a view",
                    kernel_name=kernel_name,
                    hint=f"pass a contiguous array (tmp = np.ascontiguousarray({name})) and copy the result "
                    f"back yourself ({name}[...] = tmp), or use device arrays",
                    details={"parameter": name, "position": i},
                )
            if name in written and not arg.flags.writeable:
                raise KernelArgumentError(
                    f"argument '{name}' (position {i}) is a read-only host array, and the kernel may write it: "
                    "host_transfer=True would have to copy the result back into it",
                    kernel_name=kernel_name,
                    hint=f"pass a writable array ({name}.copy()), or a device array and copy the result yourself",
                    details={"parameter": name, "position": i},
                )
            to_copy.append(i)
    # host arrays that share memory, one of them written: each would be copied to a device
    # array of its own and back, so the kernel would not see its own writes through the other,
    # and the copies back would overwrite each other (an adversarial trial: x[i] += 1; y[i] += 1
    # on (h, h) gave 1, device arrays give 2). Refused.
    same: dict[int, int] = {}  # position -> the earlier position holding the very same view
    for a_pos, i in enumerate(to_copy):
        for j in to_copy[a_pos + 1:]:
            if j not in same and _same_view(args[i], args[j]):
                same[j] = same.get(i, i)  # one device array for both (saxpy(a, x, y, y): in place, as on the device)
                continue
            if j in same or i in same:
                continue
            if (params[i] in written or params[j] in written) and _share_memory(args[i], args[j]):
                raise KernelArgumentError(
                    f"arguments '{params[i]}' and '{params[j]}' are host arrays that share memory and the kernel may "
                    "write one of them: host_transfer=True copies each to the device separately, so the result "
                    "would not be what the same call on device arrays gives",
                    kernel_name=kernel_name,
                    hint="copy the array to the device once (numba.cuda.to_device) and pass the device array (or its "
                    "views) for both, or pass separate host arrays",
                    details={"parameters": (params[i], params[j])},
                )
    if to_copy:
        from numba import cuda

        back: set[int] = set()
        for i in to_copy:  # all checks passed: now copy in
            host = args[i]
            if i in same:  # the very same view as an earlier argument: its device array
                first = same[i]
                moved[i] = moved[first]
                if params[i] in written and first not in back:
                    copies.append((first, args[first], moved[first]))
                    back.add(first)
                continue
            dev = cuda.to_device(np.ascontiguousarray(host) if not host.flags.c_contiguous and not host.flags.f_contiguous else host)
            moved[i] = dev
            if params[i] in written:
                copies.append((i, host, dev))
                back.add(i)
    return tuple(moved), copies
