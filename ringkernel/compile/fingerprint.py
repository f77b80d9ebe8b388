"""What a kernel's compiled code depends on, hashed: its code and everything it calls.

The fingerprint of a kernel covers its code object (bytecode, constants, names, nested
code: exactly what its source compiles to, so editing a comment does not invalidate the
cache but editing an expression does), and recursively the code of every numba device
function it reaches through its globals or closure, and the values of the simple
constants it reads (``REDUCE_BLOCK = 256``, numba types such as ``float64``). Bytecode
depends on the Python version, which is therefore part of the cache key too.
"""

from __future__ import annotations

import hashlib
import types
from typing import Any, Callable

__all__ = ["code_fingerprint"]

_SIMPLE = (int, float, complex, bool, str, bytes, type(None))
_Sink = Callable[[bytes], None]


def code_fingerprint(func: Callable[..., Any]) -> str:
    """SHA-256 over ``func``'s code and the code/values it depends on."""
    parts: list[bytes] = []  # hashed once at the end: one C call instead of one per part
    _feed_function(parts.append, func, set())
    return hashlib.sha256(b"\x1f".join(parts)).hexdigest()


def _feed_function(h: "_Sink", func: Any, seen: set[int]) -> None:
    code = getattr(func, "__code__", None)
    if code is None:
        h(f"<opaque {type(func).__qualname__}>".encode())
        return
    _feed_code(h, code)
    names: set[str] = set()
    _collect_names(code, names)
    glb = getattr(func, "__globals__", {})
    for name in sorted(names):
        if name in glb:
            h(b"\x00g:" + name.encode())
            value = glb[name]
            _feed_value(h, value, seen)
            if isinstance(value, types.ModuleType):
                # `mylib.helper(x)`: follow device functions reached through a module attribute
                for attr in sorted(names):
                    inner = getattr(value, attr, None) if not attr.startswith("__") else None
                    if inner is not None and _is_device_function(inner):
                        h(b"\x00m:" + name.encode() + b"." + attr.encode())
                        _feed_value(h, inner, seen)
    for name, cell in zip(code.co_freevars, getattr(func, "__closure__", None) or ()):
        h(b"\x00c:" + name.encode())
        try:
            _feed_value(h, cell.cell_contents, seen)
        except ValueError:  # empty cell
            h(b"<empty>")


def _collect_names(code: types.CodeType, out: set[str]) -> None:
    out.update(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _collect_names(const, out)


def _feed_code(h: "_Sink", code: types.CodeType) -> None:
    h(code.co_code)
    h(repr((code.co_names, code.co_varnames, code.co_argcount, code.co_kwonlyargcount)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(h, const)
        else:
            h(repr(const).encode())


def _is_device_function(obj: Any) -> bool:
    inner = getattr(obj, "py_func", None) or getattr(obj, "fn", None)
    return inner is not None and hasattr(inner, "__code__") and not isinstance(obj, types.ModuleType)


def _feed_value(h: "_Sink", obj: Any, seen: set[int]) -> None:
    # numba device functions (CUDADispatcher, or FakeCUDAKernel on the simulator), and
    # anything else wrapping a Python function: follow it.
    inner = getattr(obj, "py_func", None) or getattr(obj, "fn", None)
    if inner is not None and callable(inner) and hasattr(inner, "__code__"):
        if id(obj) in seen:
            h(b"<seen>")
            return
        seen.add(id(obj))
        h(b"<device function>")
        _feed_function(h, inner, seen)
        return
    if isinstance(obj, types.ModuleType):
        h(b"<module " + obj.__name__.encode() + b">")
        return
    if isinstance(obj, _SIMPLE):
        h(repr(obj).encode())
        return
    if isinstance(obj, tuple) and all(isinstance(x, _SIMPLE) for x in obj):
        h(repr(obj).encode())
        return
    if isinstance(obj, types.FunctionType):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        _feed_function(h, obj, seen)
        return
    mod = type(obj).__module__ or ""
    if mod.startswith(("numpy", "numba")):
        # numpy scalars/dtypes, numba types (float64, ...): their repr is their identity
        h(repr(obj).encode())
        return
    h(f"<{type(obj).__module__}.{type(obj).__qualname__}>".encode())
