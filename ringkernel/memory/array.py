"""``DeviceArray``: a light device array over pool memory, with ``__cuda_array_interface__``.

numba's ``DeviceNDArray`` costs ~15 us to build (its constructor, not the memory), CuPy's
``cupy.empty`` ~2 us. A ``DeviceArray`` is a few slots (``ptr``, ``shape``, ``strides`` in
bytes, ``dtype``, ``size``) around a pool block: building one costs about what the pool's
``allocate`` costs again. It is accepted wherever ``__cuda_array_interface__`` is (numba
kernels, ``@gpu_kernel``, CuPy, PyTorch, without a copy); ``as_numba()`` gives a numba
array over the same memory when an API insists on one.

Its metadata never changes after creation: the launcher caches an array's launch
parameters by identity. Slicing gives views that share the memory and keep the array that
owns the block alive; that array returns the block to its pool in ``__del__`` (cheaper than
a ``weakref.finalize`` per array), through the pool's non-blocking ``_release`` (see
docs/memory.md, "Lifetimes"), exactly once.
"""

from __future__ import annotations

import operator
from typing import Any, Sequence

import numpy as np

from .._layout import c_strides
from ..errors import ConfigurationError
from .._layout import is_c_contiguous as _is_c_contiguous
from .backend import DriverBackend, SimulatorBackend, _span
from ..config import ensure_numba_cuda

__all__ = ["DeviceArray"]

_NUMERIC_KINDS = frozenset("biufc")


class _Fields:
    """The storage of a ``DeviceArray``. Arrays are built as ``_Fields`` (plain slot writes)
    and then given their class, whose ``__setattr__`` refuses every write: the cheapest way
    to immutable attributes that read as plain slots (a property read costs twice as much,
    a write through ``object.__setattr__`` three times as much)."""

    __slots__ = ("ptr", "shape", "strides", "dtype", "size", "_base", "_pool", "_buf", "__weakref__")

    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: np.dtype
    size: int
    _base: "DeviceArray | None"
    _pool: Any
    _buf: Any


class DeviceArray(_Fields):
    """A device array over a block of a :class:`~ringkernel.memory.GpuMemoryPool`.

    Made by ``pool.device_array(shape, dtype)`` and ``GpuContext.allocate``, not directly.

    Attributes (read-only; assigning raises ``AttributeError``)
    ----------------------------------------------------------
    ptr:
        Device address of the first element (``[0, ..., 0]``), an ``int``.
    shape, strides:
        Tuples of ints; strides in bytes, as NumPy's (always a tuple, also when contiguous).
    dtype:
        A NumPy dtype of numbers: bool, signed/unsigned integers, floats, complex.
    size:
        Number of elements.

    The block goes back to the pool when this array and every view of it are collected;
    after ``pool.close()`` the block stays valid until then. ``np.asarray(x)`` raises
    ``TypeError``: copies to the host are explicit (:meth:`copy_to_host`).
    """

    __slots__ = ()
    # ringkernel's launcher reads ptr/shape/strides/dtype and caches these arrays by identity
    # (they never change after creation): see ringkernel.compile.launcher._is_immutable.
    __rk_immutable_array__ = True

    def __new__(cls, *args: Any, **kwargs: Any) -> "DeviceArray":
        raise TypeError(
            "DeviceArray is not built directly: allocate one with pool.device_array(shape, dtype) "
            "or GpuContext.allocate(shape, dtype), or wrap other memory with numba.cuda.as_cuda_array"
        )

    # -- the interface ------------------------------------------------------------------
    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        shape, strides = self.shape, self.strides
        contiguous = self._base is None or _is_c_contiguous(shape, strides, self.dtype.itemsize)
        return {
            "shape": shape,
            "strides": None if contiguous else strides,
            "typestr": self.dtype.str,
            "data": (self.ptr, False),
            "version": 3,
            "stream": None,
        }

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(
            f"{self._describe()} lives in device memory; NumPy cannot read it implicitly. "
            "Copy it explicitly: x.copy_to_host()"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"DeviceArray.{name} is read-only: an array's pointer, shape, strides and dtype never change "
            "(launches cache them per array). Make a new view instead: x.reshape(...), x[...], x.T"
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"DeviceArray.{name} cannot be deleted")

    def __reduce__(self) -> Any:
        raise TypeError(f"{self._describe()} cannot be pickled or copied with copy.copy: "
                        "use x.copy() (device) or x.copy_to_host() (host)")  # fmt: skip

    def __del__(self) -> None:
        buf = self._buf  # only the array that owns the block has one; views hold that array
        if buf is not None:
            try:
                self._pool._release(buf)  # never waits, never raises; runs once (PEP 442)
            except Exception:  # noqa: BLE001 - at interpreter exit the pool's module may be gone
                pass

    # -- plain facts ----------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def base(self) -> "DeviceArray | None":
        """The array that owns the memory (``None`` for that array itself), as NumPy's ``base``."""
        return self._base

    @property
    def pool(self) -> Any:
        """The pool the memory came from."""
        return self._pool

    @property
    def T(self) -> "DeviceArray":  # noqa: N802 - NumPy's name
        return self.transpose()

    def is_c_contiguous(self) -> bool:
        return self._base is None or _is_c_contiguous(self.shape, self.strides, self.dtype.itemsize)

    def is_f_contiguous(self) -> bool:
        return _is_c_contiguous(self.shape[::-1], self.strides[::-1], self.dtype.itemsize)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d DeviceArray")
        return self.shape[0]

    def __iter__(self) -> Any:
        """Rows as views (NumPy's iteration); a 0-d array is not iterable (``list()`` of one
        gave ``[]`` before)."""
        if not self.shape:
            raise TypeError("iteration over a 0-d DeviceArray")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self) -> str:
        return f"<{self._describe()} at 0x{self.ptr:x}{'' if self._base is None else ', a view'}>"

    def _describe(self) -> str:
        layout = "" if self.is_c_contiguous() else (" (Fortran order)" if self.is_f_contiguous() else " (strided)")
        return f"DeviceArray {self.dtype}{list(self.shape)}{layout}"

    # -- views ----------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        """A view sharing the memory (ints, slices with any step, ``...``, ``None``); indexing
        every axis with an int copies that one element to the host, as numba's arrays do."""
        ptr, shape, strides = self._locate(key)
        if shape or not self.shape:
            return self._view(ptr, shape, strides)
        out = np.empty((), self.dtype)
        self._pool.backend.copy_to_host(out, ptr, self.dtype.itemsize, None)
        return out[()]

    def __setitem__(self, key: Any, value: Any) -> None:
        """Write ``value`` (a number, or anything NumPy broadcasts to the selection) into the
        selected elements; the selection must be contiguous (an element, a row, a range)."""
        ptr, shape, strides = self._locate(key)
        target = self._view(ptr, shape, strides)
        if _device_source(value):
            target.copy_to_device(value)
            return
        host = _exact(value, self.dtype)
        if host.shape != shape:
            host = np.broadcast_to(host, shape)
        target.copy_to_device(host)

    def _locate(self, key: Any) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
        """Pointer, shape and strides of ``self[key]`` (NumPy's basic indexing)."""
        if type(key) is not tuple:
            key = (key,)
        used = sum(1 for k in key if k is not None and k is not Ellipsis)
        ndim = len(self.shape)
        if used > ndim:
            raise IndexError(f"too many indices: the array is {ndim}-dimensional, but {used} were indexed")
        if any(k is Ellipsis for k in key):
            if sum(1 for k in key if k is Ellipsis) > 1:
                raise IndexError("an index can only have a single ellipsis ('...')")
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:at] + (slice(None),) * (ndim - used) + key[at + 1 :]
        ptr = self.ptr
        shape: list[int] = []
        strides: list[int] = []
        axis = 0
        for k in key:
            if k is None:
                shape.append(1)
                strides.append(0)
                continue
            n, st = self.shape[axis], self.strides[axis]
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                length = len(range(start, stop, step))
                if length:
                    ptr += start * st
                shape.append(length)
                strides.append(st * step)
            elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
                i = operator.index(k)
                if not -n <= i < n:
                    raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
                ptr += (i + n if i < 0 else i) * st
            else:
                raise IndexError(
                    f"DeviceArray takes ints, slices, '...' and None as indices, got {type(k).__name__} "
                    f"{k!r}: fancy (array or boolean) indexing would gather elements into a new array. "
                    "Index the host copy (x.copy_to_host()[idx]) or a CuPy view (cupy.asarray(x)[idx])"
                )
            axis += 1
        shape.extend(self.shape[axis:])
        strides.extend(self.strides[axis:])
        return ptr, tuple(shape), tuple(strides)

    def _view(self, ptr: int, shape: tuple[int, ...], strides: tuple[int, ...]) -> "DeviceArray":
        cls = type(self)
        v: Any = _Fields.__new__(_RAW[cls])
        v.ptr = ptr
        v.shape = shape
        v.strides = strides
        v.dtype = self.dtype
        size = 1
        for d in shape:
            size *= d
        v.size = size
        v._base = self._base if self._base is not None else self
        v._pool = self._pool
        v._buf = None
        v.__class__ = cls
        return v

    def reshape(self, *shape: Any) -> "DeviceArray":
        """A view of another shape (one dimension may be -1); C-contiguous arrays only."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        shp = list(_shape(shape, what="reshape", allow_minus_one=True))
        if shp.count(-1) > 1:
            raise ConfigurationError(f"reshape{tuple(shp)}: only one dimension can be -1")
        if -1 in shp:
            known = 1
            for d in shp:
                if d != -1:
                    known *= d
            if known == 0 or self.size % known:
                raise ConfigurationError(f"cannot reshape an array of {self.size} elements into {tuple(shp)}")
            shp[shp.index(-1)] = self.size // known
        new = tuple(shp)
        size = 1
        for d in new:
            size *= d
        if size != self.size:
            raise ConfigurationError(
                f"cannot reshape an array of {self.size} elements {self.shape} into {new} ({size} elements)",
                hint="keep the number of elements",
            )
        if not self.is_c_contiguous():
            raise ConfigurationError(
                f"reshape of a non-contiguous view ({self._describe()}, strides {self.strides}) would need a copy",
                hint="copy it first: x.copy().reshape(...)",
            )
        return self._view(self.ptr, new, c_strides(new, self.dtype.itemsize))

    def ravel(self) -> "DeviceArray":
        """A 1-D view (C-contiguous arrays only; see :meth:`reshape`)."""
        return self.reshape(self.size)

    def transpose(self, *axes: Any) -> "DeviceArray":
        """A view with the axes reversed, or permuted as ``axes`` says (NumPy's rules)."""
        if len(axes) == 1 and not isinstance(axes[0], (int, np.integer)):
            axes = tuple(axes[0])
        nd = len(self.shape)
        bad = [a for a in axes if not -nd <= operator.index(a) < nd]
        if bad:  # (NumPy's AxisError; taken modulo before, so (3, 4, 5) passed for a 3-D array)
            raise ConfigurationError(f"transpose axes {axes}: axis {bad[0]} is out of range for {nd} axes")
        order = tuple(operator.index(a) % nd for a in axes) if axes else tuple(range(nd))[::-1]
        if sorted(order) != list(range(nd)):
            raise ConfigurationError(f"transpose axes {axes} are not a permutation of the {nd} axes")
        return self._view(self.ptr, tuple(self.shape[a] for a in order), tuple(self.strides[a] for a in order))

    # -- copies ---------------------------------------------------------------------------
    def copy_to_host(
        self, out: np.ndarray | None = None, stream: Any = None, *, ary: np.ndarray | None = None
    ) -> np.ndarray:
        """The contents as a NumPy array (a new one, or ``out``, filled and returned).

        ``stream``: a numba stream (or ``None``/0 for a synchronous copy); with a stream the
        copy into page-locked ``out`` may still run when this returns, as numba's does.
        A strided view is copied through the span of memory it covers (one copy, then the
        elements are picked out on the host), synchronously. ``ary=`` is numba's name for ``out``.
        """
        if out is None:
            out = ary
        if out is None:
            out = np.empty(self.shape, self.dtype)
        else:
            self._check_host(out, "copy_to_host", writing=True)
        if not self.size:
            return out
        backend = self._pool.backend
        if self.is_c_contiguous() and out.flags.c_contiguous:
            backend.copy_to_host(out, self.ptr, self.nbytes, stream)
            return out
        lo, hi = _span(self.shape, self.strides, self.dtype.itemsize)
        span = np.empty(hi - lo, np.uint8)
        backend.copy_to_host(span, self.ptr + lo, hi - lo, stream)
        backend.synchronize(stream)
        picked = np.ndarray(self.shape, self.dtype, buffer=span, offset=-lo, strides=self.strides)
        out[...] = picked.reshape(out.shape)  # out may differ by axes of length 1
        return out

    def copy_to_device(self, ary: Any, stream: Any = None) -> None:
        """Fill this array from ``ary``: a NumPy array (or list, number) of this shape and dtype,
        or a device array (anything with ``__cuda_array_interface__``) of this shape and dtype.

        This array must be contiguous (a strided view would need the elements between
        written too). A NumPy array of another dtype is refused rather than converted;
        lists and numbers are converted to this dtype. ``stream`` as in :meth:`copy_to_host`.
        """
        if not self.is_c_contiguous():
            raise ConfigurationError(
                f"copy_to_device into a strided view ({self._describe()}, strides {self.strides}) is not supported: "
                "a strided write would overwrite the elements between",
                hint="write the contiguous array it views (h = base.copy_to_host(); h[idx] = data; "
                "base.copy_to_device(h)), or use a kernel",
            )
        backend = self._pool.backend
        if _device_source(ary):
            if _same_memory(backend, ary):
                ptr, nbytes = self._check_device_source(ary)
                if nbytes:
                    backend.copy_device(self.ptr, ptr, nbytes, stream)
                return
            if not isinstance(ary, DeviceArray):
                raise ConfigurationError(
                    f"copy_to_device: a {type(ary).__name__} is not in this array's memory "
                    f"({backend.name}): its pointer means nothing here",
                    hint="copy it to the host first and pass the NumPy array",
                )
            ary = ary.copy_to_host()  # another simulated memory: through the host
        host = ary if isinstance(ary, np.ndarray) else np.asarray(ary, dtype=self.dtype)
        self._check_host(host, "copy_to_device", writing=False)
        if not self.size:
            return
        if not host.flags.c_contiguous:
            host = np.ascontiguousarray(host)
        backend.copy_to_device(self.ptr, host, self.nbytes, stream)

    def copy(self, stream: Any = None) -> "DeviceArray":
        """A new C-contiguous array of the same pool with the same contents."""
        new = self._pool.device_array(self.shape, self.dtype)
        if not self.size:
            return new
        if self.is_c_contiguous():
            self._pool.backend.copy_device(new.ptr, self.ptr, self.nbytes, stream)
        else:  # strided: through the host (one span copy each way)
            new.copy_to_device(self.copy_to_host(stream=stream), stream=stream)
        return new

    def as_numba(self) -> Any:
        """A numba device array over the same memory (no copy); it keeps this array alive.

        For APIs that want numba's ``DeviceNDArray`` itself; numba kernels take the
        ``DeviceArray`` directly. Costs what numba's constructor costs (~15 us on a GPU).
        On the simulator, a simulator array over the same (host) bytes.
        """
        return self._pool.backend.numba_array(self.ptr, self.shape, self.strides, self.dtype, self)

    def _check_host(self, host: Any, operation: str, *, writing: bool) -> None:
        what = "out" if writing else "the source"
        make = f"np.empty({self.shape}, np.{self.dtype.name})"
        if not isinstance(host, np.ndarray):
            raise ConfigurationError(
                f"{operation}: {what} must be a NumPy array, got {type(host).__name__}",
                hint=f"pass {make}" if writing else "pass a NumPy array",
            )
        if host.dtype != self.dtype:
            raise ConfigurationError(
                f"{operation}: {what} has dtype {host.dtype}, this array holds {self.dtype}",
                hint=(f"pass an array of dtype {self.dtype} ({make}), or none to get a new one" if writing
                      else f"convert first: data.astype(np.{self.dtype.name})"),
                details={"expected": str(self.dtype), "got": str(host.dtype)},
            )  # fmt: skip
        if host.shape != self.shape and not (
            host.size == self.size and _squeezed(host.shape) == _squeezed(self.shape)
        ):
            raise ConfigurationError(
                f"{operation}: {what} has shape {host.shape}, this array has shape {self.shape}",
                hint=(f"pass an array of shape {self.shape} ({make}), or none to get a new one" if writing
                      else f"pass data of shape {self.shape} (data.reshape{self.shape} "
                      f"if it has {self.size} elements)"),
                details={"expected": self.shape, "got": host.shape},
            )  # fmt: skip
        if writing and not host.flags.writeable:
            raise ConfigurationError(f"{operation}: out is read-only", hint="pass a writable array, or none")

    def _check_device_source(self, src: Any) -> tuple[int, int]:
        """Pointer and byte count of a contiguous device source of this shape and dtype."""
        if isinstance(src, DeviceArray):
            shape, dtype, ptr, contiguous = src.shape, src.dtype, src.ptr, src.is_c_contiguous()
        else:
            cai = src.__cuda_array_interface__
            shape, dtype, ptr = tuple(cai["shape"]), np.dtype(cai["typestr"]), int(cai["data"][0] or 0)
            st = cai.get("strides")
            contiguous = st is None or _is_c_contiguous(shape, tuple(st), dtype.itemsize)
        if dtype != self.dtype:
            raise ConfigurationError(
                f"copy_to_device: the source has dtype {dtype}, this array holds {self.dtype}",
                hint=f"convert it on the device first (e.g. cupy.asarray(src).astype('{self.dtype}'))",
            )
        if shape != self.shape and _squeezed(shape) != _squeezed(self.shape):
            raise ConfigurationError(
                f"copy_to_device: the source has shape {shape}, this array has shape {self.shape}",
                hint="copy between arrays of the same shape (reshape a contiguous view: x.reshape(...))",
            )
        if not contiguous:
            raise ConfigurationError(
                "copy_to_device: the device source is a strided view",
                hint="make it contiguous first (src.copy())",
            )
        return ptr, self.nbytes


# -- construction ----------------------------------------------------------------------------
# The storage class each array class is built as before its class is set: _Fields, or for
# the simulator's class a storage class that also has the simulator's ArgHint layout.
_RAW: dict[type, type] = {DeviceArray: _Fields}
_CLASS_FOR: dict[type, type] = {}  # backend type -> array class
_DTYPES: dict[Any, np.dtype] = {}
_new_fields = _Fields.__new__


def cast_checked(src: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, bool]:
    """``src`` (real or integer) converted to ``dtype``, and whether a value changed: an int out of
    ``dtype``'s range (by range: a round trip through the source type undoes a wrap, so uint32
    0xFFFFFFFF into int32 passed it), a fraction or NaN into an int, a finite float that
    overflows. A float's lost precision does not count. Shared by ``DeviceArray`` assignment
    and ``ManagedBuffer.write``."""
    with np.errstate(all="ignore"):
        conv = src.astype(dtype)
        if dtype.kind in "iu" and src.dtype.kind in "iu":
            info = np.iinfo(dtype)
            return conv, bool(src.size) and (int(src.min()) < info.min or int(src.max()) > info.max)
        if dtype.kind in "iub":
            return conv, bool(np.any(conv.astype(src.dtype) != src))
        return conv, bool(np.any(np.isinf(conv) & np.isfinite(src)))


def _exact(value: Any, dtype: np.dtype) -> np.ndarray:
    """``value`` as an array of ``dtype``, refused where a value would change: an int that wraps,
    a fraction or NaN into an int, an imaginary part dropped, a finite float that overflows (an
    adversarial trial: ``x[:] = np.array([300, -1])`` into uint8 stored [44, 255]; NumPy's own
    assignment converts silently, copy_to_device refuses). A float's lost precision is what a
    narrower float is for."""
    src = np.asarray(value)
    if src.dtype == dtype:
        return src
    if src.dtype.kind not in "biufc":
        raise ConfigurationError(f"cannot store {src.dtype} values in a {dtype} array",
                                 hint=f"pass numbers (e.g. np.asarray(values, dtype=np.{dtype.name}))")  # fmt: skip
    bad = False
    if src.dtype.kind == "c" and dtype.kind != "c":
        bad = bool(np.any(src.imag != 0))  # an imaginary part would be dropped
        src = src.real
    conv, changed = cast_checked(src, dtype)
    if bad or changed:
        raise ConfigurationError(
            f"values of {src.dtype} that a {dtype} array cannot hold exactly (they would wrap, be truncated, "
            "lose an imaginary part or overflow)", hint=f"convert first, as you mean it: np.asarray(values).astype(np.{dtype.name})",
        )  # fmt: skip
    return conv


def new_device_array(pool: Any, shape: int | Sequence[int], dtype: Any) -> DeviceArray:
    """``pool.device_array(shape, dtype)``: validate, allocate, build (the fast path)."""
    try:
        dt = _DTYPES[dtype]
    except (KeyError, TypeError):
        dt = _dtype(dtype)
    it = dt.itemsize
    if type(shape) is int and shape >= 0:  # noqa: E721 - the common case
        shp: tuple[int, ...] = (shape,)
        size = shape
        strides: tuple[int, ...] = (it,)
    else:
        shp = _shape(shape, what="shape")
        size = 1
        for d in shp:
            size *= d
        nd = len(shp)
        strides = (it,) if nd == 1 else (shp[1] * it, it) if nd == 2 else c_strides(shp, it)
    nbytes = size * it
    backend = pool.backend
    cls = _CLASS_FOR.get(type(backend))
    if cls is None:
        cls = _class_for(backend)
    buf = pool.allocate(nbytes if nbytes else 1)
    buf._held = True  # the array returns the block: pool.deallocate(ptr) is refused for it
    a: Any = _new_fields(_RAW[cls])
    a.ptr = buf.ptr
    a.shape = shp
    a.strides = strides
    a.dtype = dt
    a.size = size
    a._base = None
    a._pool = pool
    a._buf = buf
    a.__class__ = cls  # from here on its attributes are read-only, and __del__ returns the block
    return a


def _class_for(backend: Any) -> type:
    """DeviceArray; on numba's simulator a subclass the simulator turns into its own array
    when it is passed to a kernel (it converts only ``ArgHint``s and NumPy arrays)."""
    cls: type = DeviceArray
    if isinstance(backend, SimulatorBackend):
        from ..config import simulator_enabled

        if simulator_enabled():
            cls = _simulator_class()
    _CLASS_FOR[type(backend)] = cls
    return cls


_SIM_CLASS: type | None = None


def _simulator_class() -> type:
    global _SIM_CLASS
    if _SIM_CLASS is not None:
        return _SIM_CLASS
    ensure_numba_cuda()
    from numba.cuda.simulator.args import ArgHint

    class _SimFields(_Fields, ArgHint):
        __slots__ = ()

    class SimulatorDeviceArray(_SimFields, DeviceArray):  # this order: the layout of _SimFields
        """A DeviceArray under numba's simulator: kernels get a simulator array over its bytes."""


        __slots__ = ()

        def to_device(self, retr: list[Any], stream: Any = 0) -> Any:  # ArgHint's conversion hook
            return self.as_numba()

    SimulatorDeviceArray.__qualname__ = "SimulatorDeviceArray"
    _RAW[SimulatorDeviceArray] = _SimFields
    _SIM_CLASS = SimulatorDeviceArray
    return SimulatorDeviceArray


def _dtype(dtype: Any) -> np.dtype:
    """A numeric, native-order NumPy dtype, or a ConfigurationError saying what to use."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ConfigurationError(
            f"{dtype!r} is not a dtype ({exc})", hint="pass a NumPy dtype such as np.float32 or 'int64'"
        ) from None
    if dt.kind not in _NUMERIC_KINDS:
        if dt.hasobject:
            why, hint = "Python objects cannot live in device memory", "use a numeric dtype"
        elif dt.fields:
            why = "structured (record) dtypes are not supported by DeviceArray"
            hint = "use one array per field, or numba.cuda.device_array(shape, dtype) for records"
        elif dt.kind in "SU":
            why, hint = "text cannot be a device array", "encode it as uint8: np.frombuffer(s.encode(), np.uint8)"
        elif dt.kind in "mM":
            why, hint = "datetimes are not supported", "store them as int64 (x.view('int64'))"
        else:
            why, hint = "only numbers can be device arrays", "use bool, an integer, float or complex dtype"
        raise ConfigurationError(f"dtype {dt}: {why}", hint=hint, details={"dtype": str(dt)})
    if not dt.isnative:
        raise ConfigurationError(
            f"dtype {dt} is not in the machine's byte order; kernels read native numbers",
            hint=f"use {dt.newbyteorder('=')} (host data: data.astype(data.dtype.newbyteorder('=')))",
        )
    try:
        if len(_DTYPES) > 256:
            _DTYPES.clear()
        _DTYPES[dtype] = dt
    except TypeError:  # unhashable (a list): not cached
        pass
    return dt


def _shape(shape: Any, *, what: str, allow_minus_one: bool = False) -> tuple[int, ...]:
    """A tuple of non-negative ints, or a ConfigurationError saying what is wrong."""
    if type(shape) is tuple:  # noqa: E721 - the common case: a tuple of plain ints
        for s in shape:
            if type(s) is not int or s < 0:  # noqa: E721
                break
        else:
            return shape
    items = (shape,) if not isinstance(shape, (tuple, list)) else tuple(shape)
    out = []
    for s in items:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)):
            raise ConfigurationError(
                f"{what} must be an int or a tuple of ints, got {shape!r} ({type(s).__name__} {s!r})",
                hint="pass whole numbers, e.g. (int(n), int(m))",
            )
        s = int(s)
        if s < 0 and not (allow_minus_one and s == -1):
            raise ConfigurationError(
                f"{what} must be non-negative, got {shape!r}", hint="sizes count elements: 0 or more"
            )
        out.append(s)
    return tuple(out)


# -- layout helpers --------------------------------------------------------------------------
def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _same_memory(backend: Any, src: Any) -> bool:
    """Whether the pointer of device array ``src`` addresses ``backend``'s memory: any device
    pointer on a GPU; on the simulator, only arrays of the same backend (each simulated
    memory has addresses of its own, which may coincide with another's)."""
    src_backend = src._pool.backend if isinstance(src, DeviceArray) else None
    if src_backend is backend:
        return True
    return isinstance(backend, DriverBackend) and (src_backend is None or isinstance(src_backend, DriverBackend))


def _device_source(obj: Any) -> bool:
    return isinstance(obj, DeviceArray) or (
        not isinstance(obj, np.ndarray) and hasattr(type(obj), "__cuda_array_interface__")
    )
