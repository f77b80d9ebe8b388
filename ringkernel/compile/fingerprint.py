"""What a kernel's compiled code depends on, hashed: its code and every value numba bakes into it.

The fingerprint of a kernel covers:

- its code object: bytecode, constants, names, argument layout and nested code, exactly
  what its source compiles to, so editing a comment does not change it but editing an
  expression does (bytecode depends on the Python version, which is therefore part of the
  cache key too);
- its default argument values (``__defaults__``) and keyword-only defaults
  (``__kwdefaults__``): numba compiles an omitted argument as a constant;
- every global name the code mentions and the value it is bound to, and every closure cell;
- recursively, the same for every numba device function reached through those values
  (directly, inside a container, or as ``module.function``), with the device function's
  numba options (``fastmath``, ``inline``, ...) and, when it was declared with explicit
  signatures, those signatures.

Values are hashed by what they are, never by a ``repr`` that could abbreviate or round:
``int``/``bool``/``str``/``bytes``/``None`` by ``repr``; ``float`` and ``complex`` by
``repr``, which is the shortest text that reads back to the same bits, so it is exact;
NumPy arrays by dtype (``dtype.str``, and ``dtype.descr`` for structured dtypes), shape,
strides and the SHA-256 of their bytes (numba bakes global arrays into the module byte for
byte); NumPy scalars by dtype and bytes; tuples, named tuples, lists, dicts and sets
element by element; enums by their members; numba types by ``repr``; modules, classes and
library functions (``math.sqrt``, ``np.sqrt``) by qualified name.

Anything else (an object of an arbitrary class) is hashed by its type's name only: its
contents can change without changing the fingerprint. :func:`code_fingerprint_report`
returns those *opaque* names with the digest, so that a caller can tell the user the cache
may not see their changes (``CachingCompiler`` logs a warning).
"""

from __future__ import annotations

import dis
import enum
import hashlib
import re
import types
from typing import Any, Callable

import numpy as np

__all__ = ["code_fingerprint", "code_fingerprint_report"]

# Exact types only: a subclass (an IntEnum member, a user's float subclass) may carry more.
_SIMPLE = frozenset({int, float, complex, bool, str, bytes, type(None)})
# Modules whose classes and functions are identified by their qualified name.
_LIBRARIES = ("builtins", "math", "cmath", "operator", "numpy", "numba")
# "<Foo object at 0x7f...>": a repr naming a memory address differs in every process.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
# Reads of a global by name (3.11: LOAD_GLOBAL; 3.12 class bodies: LOAD_FROM_DICT_OR_GLOBALS).
_GLOBAL_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})
_VARARG_FLAGS = 0x04 | 0x08  # CO_VARARGS | CO_VARKEYWORDS: `def f(a, *b)` and `def f(a, b)` differ


def code_fingerprint(func: Callable[..., Any], *, lines: bool = False) -> str:
    """SHA-256 over ``func``'s code and the code and values it depends on.

    Parameters
    ----------
    func:
        The kernel's Python function (``GpuKernel.py_func``).

    Returns
    -------
    str
        64 hex digits; equal for equal code and values, in any process of the same Python.
    """
    return code_fingerprint_report(func, lines=lines)[0]


def code_fingerprint_report(func: Callable[..., Any], *, lines: bool = False) -> tuple[str, tuple[str, ...]]:
    """The fingerprint of ``func`` and the names whose values it could only hash by type.

    Parameters
    ----------
    func:
        The kernel's Python function (``GpuKernel.py_func``).

    Returns
    -------
    tuple[str, tuple[str, ...]]
        ``(hexdigest, opaque)``: the digest of :func:`code_fingerprint`, and one entry per
        value read by ``func`` or a device function it reaches that the fingerprint cannot
        look into, as ``"function.name (module.Type)"`` (``"kernel.CFG (app.Config)"``,
        ``"kernel.TABLE[2] (app.Row)"``, ``"helper(scale=) (app.Scale)"`` for a default
        value). Changing such a value does not change the digest. Names that appear in the
        code only as attributes (``x.log`` next to a global ``log``) are hashed but not
        reported: the code does not read the global.
    """
    from ..config import simulator_exclusive

    walker = _Walker(lines)
    with simulator_exclusive():  # (the simulator swaps `cuda` in kernel modules' globals during a launch)
        walker.function(func, getattr(func, "__qualname__", type(func).__qualname__))
    digest = hashlib.sha256(b"\x1f".join(walker.parts)).hexdigest()
    return digest, walker.opaque_names()


class _Walker:
    """One fingerprint: the parts to hash (hashed once at the end: one C call instead of
    one per part), the functions and containers already entered, the opaque values met."""

    def __init__(self, lines: bool = False) -> None:
        #: Also hash where each code object is (file, first line, line table): code compiled
        #: with line information (lineinfo, debug) carries them, so moving a kernel down a file
        #: must change its key (it did not: profilers got the old lines; an adversarial trial).
        self.lines = lines
        self.parts: list[bytes] = []
        self.seen: set[int] = set()
        # id -> the order in which a function (or device function) was first entered: one reached
        # again is hashed as that number, so two kernels that reach different functions a
        # second time never hash alike (a bare "<seen>" gave `outer(x) + zop(x)` one key whether
        # the global `zop` was `inner` or `outer`: a stale kernel; from an adversarial trial).
        self.order: dict[int, int] = {}
        # (code that reads the global, its name) or None for a closure cell / default value
        self._opaque: list[tuple[tuple[types.CodeType, str] | None, str]] = []
        # id -> (array, digest): an array reached twice is hashed once; the array is kept
        # so that its id cannot be reused by another object during the walk.
        self._arrays: dict[int, tuple[Any, str]] = {}

    # -- functions --------------------------------------------------------------------
    def function(self, func: Any, label: str) -> None:
        h = self.parts.append
        code = getattr(func, "__code__", None)
        if code is None:
            self._mark_opaque(func, label, None)
            return
        self.seen.add(id(func))
        self.order.setdefault(id(func), len(self.order))
        _feed_code(h, code, self.lines)
        defaults = getattr(func, "__defaults__", None)
        if defaults:
            params = code.co_varnames[code.co_argcount - len(defaults) : code.co_argcount]
            for name, value in zip(params, defaults):
                h(b"\x00d:" + name.encode())
                self.value(value, f"{label}({name}=)", None)
        kwdefaults = getattr(func, "__kwdefaults__", None)
        if kwdefaults:
            for name, value in kwdefaults.items():  # in declaration order
                h(b"\x00k:" + name.encode())
                self.value(value, f"{label}({name}=)", None)
        names: set[str] = set()
        _collect_names(code, names)
        glb = getattr(func, "__globals__", {})
        for name in sorted(names):
            if name in glb:
                h(b"\x00g:" + name.encode())
                value = glb[name]
                self.value(value, f"{label}.{name}", (code, name))
                if isinstance(value, types.ModuleType):
                    # `mylib.helper(x)`: follow device functions reached through a module attribute
                    for attr in sorted(names):
                        inner = getattr(value, attr, None) if not attr.startswith("__") else None
                        if inner is not None and _wrapped_function(inner) is not None:
                            h(b"\x00m:" + name.encode() + b"." + attr.encode())
                            self.value(inner, f"{label}.{name}.{attr}", None)
        for name, cell in zip(code.co_freevars, getattr(func, "__closure__", None) or ()):
            h(b"\x00c:" + name.encode())
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell: the name is assigned after the function is made
                h(b"<empty>")
            else:
                self.value(contents, f"{label}.{name}", None)

    def _device_function(self, obj: Any, inner: Any, label: str) -> None:
        h = self.parts.append
        h(b"<device function>")
        # The device function is compiled with its own options (fastmath, inline, opt, ...),
        # and one declared with signatures only for those: both change its code.
        options = getattr(obj, "targetoptions", None)
        if isinstance(options, dict):
            h(b"\x00o:")
            self.value({k: options[k] for k in sorted(options)}, f"{label}<options>", None)
        if getattr(obj, "_can_compile", True) is False:
            sigs = getattr(obj, "nopython_signatures", ())
            h(b"\x00s:" + repr(sorted(str(s) for s in sigs)).encode())
        self.function(inner, getattr(inner, "__qualname__", label))

    # -- values -----------------------------------------------------------------------
    def value(self, obj: Any, where: str, gate: tuple[types.CodeType, str] | None) -> None:
        """Feed ``obj``; ``where`` names it for the opaque report, ``gate`` is the global
        read that reached it (None: a closure cell or default, always read)."""
        h = self.parts.append
        t = type(obj)
        if t in _SIMPLE:
            h(t.__name__.encode() + b":" + repr(obj).encode())
            return
        if isinstance(obj, np.ndarray):
            self._array(obj, where, gate)
            return
        if isinstance(obj, np.generic):
            h(b"npscalar " + _dtype_id(obj.dtype).encode() + b" " + obj.tobytes().hex().encode())
            return
        if isinstance(obj, np.dtype):
            h(b"dtype " + _dtype_id(obj).encode())
            return
        if isinstance(obj, types.ModuleType):
            h(b"<module " + obj.__name__.encode() + b">")
            return
        if isinstance(obj, enum.Enum):
            h(b"enum " + _qualified(t).encode() + b"." + obj.name.encode())
            self.value(obj.value, f"{where}.value", gate)
            return
        if isinstance(obj, (tuple, list, dict, set, frozenset)):
            if id(obj) in self.seen:  # a container that holds itself
                h(b"<cycle>")
                return
            self.seen.add(id(obj))
            try:
                self._container(obj, where, gate)
            finally:
                # Only the containers being entered are guarded: one reached twice without a
                # cycle is hashed twice, so the key does not depend on what happens to be shared.
                self.seen.discard(id(obj))
            return
        if isinstance(obj, types.FunctionType):
            if id(obj) in self.seen:  # recursion, or reached again
                h(b"<seen %d>" % self.order.get(id(obj), -1))
                return
            h(b"<function>")
            self.function(obj, obj.__qualname__)
            return
        if isinstance(obj, type):
            self._class(obj, where, gate)
            return
        inner = _wrapped_function(obj)
        if inner is not None:  # a numba device function (CUDADispatcher, or the simulator's FakeCUDAKernel)
            if id(obj) in self.seen:
                h(b"<seen %d>" % self.order.get(id(obj), -1))
                return
            self.seen.add(id(obj))
            self.order.setdefault(id(obj), len(self.order))
            self._device_function(obj, inner, where)
            return
        if isinstance(obj, types.BuiltinFunctionType) and isinstance(obj.__self__, (types.ModuleType, type(None))):
            h(b"builtin " + f"{obj.__module__}.{obj.__qualname__}".encode())  # math.sqrt
            return
        if _is_library(t.__module__, ("numpy", "numba")):
            if t.__name__ == "ExternFunction":
                # cuda.declare_device(...): its name and signature are seen, the files it links are not
                h(b"extern " + f"{getattr(obj, 'name', '?')} {getattr(obj, 'sig', '?')}".encode())
                self._opaque.append((gate, f"{where} (cuda.declare_device: the files it links are not hashed)"))
                return
            text = repr(obj)  # numba types (float64, ...), ufuncs: their repr is their identity
            if _ADDRESS.search(text) is None:
                h(text.encode())
                return
            qualname = getattr(obj, "__qualname__", None)
            if isinstance(qualname, str) and isinstance(getattr(obj, "__module__", None), str):
                h(f"{_qualified(t)} {obj.__module__}.{qualname}".encode())  # np.sum (a dispatcher object)
                return
        self._mark_opaque(obj, where, gate)

    def _container(self, obj: Any, where: str, gate: tuple[types.CodeType, str] | None) -> None:
        h = self.parts.append
        t = type(obj)
        h(f"{_qualified(t)} {len(obj)}".encode())
        fields = getattr(t, "_fields", None) if isinstance(obj, tuple) else None
        if fields is not None:  # a named tuple: its field names matter
            h(repr(fields).encode())
        if isinstance(obj, dict):
            for k, v in obj.items():  # insertion order: the same code builds the same order
                self.value(k, f"{where}[{k!r}]", gate)
                self.value(v, f"{where}[{k!r}]", gate)
        elif isinstance(obj, (set, frozenset)):
            # A set of strings iterates in an order that changes with PYTHONHASHSEED: hash
            # each element on its own and sort the digests.
            outer = self.parts
            digests = []
            for x in obj:
                self.parts = []
                self.value(x, f"{where}{{}}", gate)
                digests.append(hashlib.sha256(b"\x1f".join(self.parts)).digest())
            self.parts = outer
            outer.extend(sorted(digests))
        else:
            for i, x in enumerate(obj):
                self.value(x, f"{where}[{i}]", gate)

    def _array(self, a: np.ndarray, where: str, gate: tuple[types.CodeType, str] | None) -> None:
        if a.dtype.hasobject:  # the bytes are pointers
            self._mark_opaque(a, where, gate)
            return
        hit = self._arrays.get(id(a))
        if hit is None:
            # Hash the memory in place when it is contiguous (no copy of a large table); an
            # F-ordered array is the C-ordered transpose. The strides are in the key, so the
            # two orders cannot be confused.
            if a.flags.c_contiguous:
                flat = a.reshape(-1)
            elif a.flags.f_contiguous:
                flat = a.T.reshape(-1)
            else:
                flat = np.ascontiguousarray(a).reshape(-1)
            hit = (a, hashlib.sha256(flat.view(np.uint8).data).hexdigest())
            self._arrays[id(a)] = hit
        prefix = "ndarray" if type(a) is np.ndarray else _qualified(type(a))
        self.parts.append(f"{prefix} {_dtype_id(a.dtype)} shape={a.shape} strides={a.strides} sha256={hit[1]}".encode())

    def _class(self, cls: type, where: str, gate: tuple[types.CodeType, str] | None) -> None:
        h = self.parts.append
        h(b"class " + _qualified(cls).encode())
        if issubclass(cls, enum.Enum):  # Color.RED is compiled as its value
            for name, member in cls.__members__.items():
                h(b"\x00e:" + name.encode())
                self.value(member.value, f"{where}.{name}", gate)
        elif issubclass(cls, tuple) and hasattr(cls, "_fields"):  # a named tuple class
            h(repr(getattr(cls, "_fields")).encode())
            self.value(dict(getattr(cls, "_field_defaults", {})), f"{where}<defaults>", gate)
        elif not _is_library(cls.__module__):
            self._mark_opaque(cls, where, gate)

    # -- the opaque report ------------------------------------------------------------
    def _mark_opaque(self, obj: Any, where: str, gate: tuple[types.CodeType, str] | None) -> None:
        t = obj if isinstance(obj, type) else type(obj)
        self.parts.append(f"<{t.__module__}.{t.__qualname__}>".encode())
        self._opaque.append((gate, f"{where} ({_qualified(t)})"))

    def opaque_names(self) -> tuple[str, ...]:
        out: dict[str, None] = {}
        loads: dict[int, frozenset[str]] = {}
        for gate, name in self._opaque:
            if gate is not None:
                # Only now, and only for functions with an opaque candidate, disassemble: the
                # names hashed include attribute names (`x.log`), which must not warn about a
                # global `log` the code never reads.
                code, global_name = gate
                read = loads.get(id(code))
                if read is None:
                    read = loads[id(code)] = frozenset(_global_reads(code))
                if global_name not in read:
                    continue
            out[name] = None
        return tuple(out)


def _wrapped_function(obj: Any) -> Any:
    """The Python function a numba dispatcher or ``GpuKernel`` (``py_func``) or the
    simulator's kernel (``fn``) wraps; None for anything else."""
    if isinstance(obj, types.ModuleType):
        return None
    try:
        inner = getattr(obj, "py_func", None)
        if inner is None and _is_library(type(obj).__module__, ("numba",)):
            inner = getattr(obj, "fn", None)  # not on other types: any object may have an `fn` method
    except Exception:  # a __getattr__ that raises something else: not a device function
        return None
    if inner is not None and callable(inner) and hasattr(inner, "__code__"):
        return inner
    return None


def _collect_names(code: types.CodeType, out: set[str]) -> None:
    out.update(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _collect_names(const, out)


def _global_reads(code: types.CodeType) -> set[str]:
    out = {str(i.argval) for i in dis.get_instructions(code) if i.opname in _GLOBAL_LOADS}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out |= _global_reads(const)
    return out


def _feed_code(h: Callable[[bytes], None], code: types.CodeType, lines: bool = False) -> None:
    h(code.co_code)
    if lines:
        table: bytes = getattr(code, "co_linetable", None) or getattr(code, "co_lnotab", b"") or b""
        h(b"lines " + f"{code.co_filename}:{code.co_firstlineno}".encode() + b" " + bytes(table))
    h(repr((code.co_names, code.co_varnames, code.co_argcount, code.co_posonlyargcount,
            code.co_kwonlyargcount, code.co_flags & _VARARG_FLAGS)).encode())  # fmt: skip
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(h, const, lines)
        elif isinstance(const, frozenset):  # `x in {"a", "b"}`: its repr's order depends on the hash seed
            h(b"frozenset" + repr(sorted(repr(x) for x in const)).encode())
        else:
            h(repr(const).encode())


def _dtype_id(dt: np.dtype[Any]) -> str:
    """``dtype.str`` (kind, size, byte order), and the fields of a structured dtype."""
    if dt.names is not None:
        return f"{dt.str} {dt.descr!r} aligned={dt.isalignedstruct}"
    if dt.subdtype is not None:
        return f"{dt.str} sub={_dtype_id(dt.subdtype[0])}{dt.subdtype[1]}"
    return dt.str


def _is_library(module: str | None, libraries: tuple[str, ...] = _LIBRARIES) -> bool:
    """``module`` is one of ``libraries`` or inside one (``numpy.linalg``; not ``numpy_utils``)."""
    top = (module or "").partition(".")[0]
    return top in libraries


def _qualified(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"
