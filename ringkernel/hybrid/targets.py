"""The functions an ``@elementwise`` body calls, compiled for the side that runs it.

numba's CPU compiler (``njit``) calls ``njit`` functions, and its CUDA compiler calls
``cuda.jit(device=True)`` functions; neither calls plain Python functions, and neither calls
the other's. A body is written once for both sides, so the functions it calls are too: for
each side, :func:`for_target` makes a copy of the body whose globals and closure cells name
that side's version of every function it calls (a plain Python function, an ``njit``
function or a CUDA device function, converted through its Python function), recursively for
the functions those call. The body's own module and functions are not changed.

Library functions (NumPy's, ``math``'s, numba's, ringkernel's) are left as they are: numba
types them itself, and converting, say, a NumPy function written in Python would replace the
implementation numba provides for it.
"""

from __future__ import annotations

import types
from typing import Any, Callable

__all__ = ["for_target"]

#: Modules whose functions numba knows itself (or that are not for device code): never converted.
_LIBRARIES = ("numpy", "numba", "math", "cmath", "operator", "builtins", "scipy", "ringkernel", "functools", "typing")


def for_target(func: Callable[..., Any], target: str, memo: dict[tuple[int, str], Any] | None = None) -> Callable[..., Any]:
    """``func`` with every function it calls replaced by ``target``'s version (``"cpu"``: an
    ``njit`` function; ``"gpu"``: a CUDA device function); ``func`` itself where nothing is
    replaced."""
    memo = {} if memo is None else memo
    key = (id(func), target)
    if key in memo:
        return memo[key]  # type: ignore[no-any-return]
    memo[key] = func  # (a recursive call refers to the function as it is)
    code = func.__code__
    glb = func.__globals__
    new_globals: dict[str, Any] | None = None
    for name in code.co_names:
        if name in glb:
            got = _convert(glb[name], target, memo)
            if got is not None:
                if new_globals is None:
                    new_globals = dict(glb)
                new_globals[name] = got
    cells = func.__closure__
    new_cells = None
    if cells:
        converted = []
        for cell in cells:
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell (a name bound later): as it is
                converted.append(cell)
                continue
            got = _convert(value, target, memo)
            converted.append(types.CellType(got) if got is not None else cell)
        if any(c is not o for c, o in zip(converted, cells)):
            new_cells = tuple(converted)
    if new_globals is None and new_cells is None:
        return func
    out = types.FunctionType(code, new_globals if new_globals is not None else glb, func.__name__,
                             func.__defaults__, new_cells if new_cells is not None else cells)  # fmt: skip
    out.__qualname__ = func.__qualname__
    out.__module__ = func.__module__
    out.__kwdefaults__ = func.__kwdefaults__
    memo[key] = out
    return out


def _library(func: Any) -> bool:
    mod = getattr(func, "__module__", None) or ""
    return mod.split(".")[0] in _LIBRARIES


def _convert(value: Any, target: str, memo: dict[tuple[int, str], Any]) -> Any:
    """``target``'s version of a function the body names (None: leave the value as it is)."""
    kind = type(value).__name__
    if kind == "CPUDispatcher":  # an njit function
        if target == "cpu":
            return None
        py = value.py_func
    elif kind in ("CUDADispatcher", "FakeCUDAKernel"):  # a CUDA function: a device function converts
        device = getattr(value, "targetoptions", {}).get("device") or getattr(value, "_device", False)
        if not device or target == "gpu":
            return None
        py = value.py_func
    elif isinstance(value, types.FunctionType) and not _library(value):
        py = value
    else:
        return None
    if _library(py):
        return None
    key = (id(py), target + " compiled")
    done = memo.get(key)
    if done is not None:
        return done
    inner = for_target(py, target, memo)
    if target == "cpu":
        import numba

        done = numba.njit(inner)
    else:
        from numba import cuda

        done = cuda.jit(device=True)(inner)
    memo[key] = done
    return done
