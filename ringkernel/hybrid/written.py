"""Which parameters an ``@elementwise`` body writes: read from its bytecode by the launch
analysis (``kernel.indexing.analyze_kernel``: exact through views and the functions it calls,
no source needed), the source's AST rule where that fails."""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any, Callable

__all__ = ["written_parameters", "source_available"]


def written_parameters(func: Callable[..., Any], names: list[str]) -> set[str]:
    """Parameters the body may write, read from its bytecode by the analysis ``@gpu_kernel``
    uses (``ringkernel.kernel.indexing.analyze_kernel``: stores through the parameter or any view
    of it, in the body or in the functions it calls; a parameter passed to a function it cannot
    follow counts as written). It needs no source. Where it cannot analyse the body, the
    source's rule (:func:`_written_from_source`) decides."""
    return _written(func, names)[0]


def _written(func: Callable[..., Any], names: list[str]) -> tuple[set[str], str | None]:
    """:func:`written_parameters`, and why it had to be cautious (``None``: it was exact)."""
    try:
        from ..kernel.indexing import analyze_kernel

        written = set(analyze_kernel(func).written)
    except Exception:  # noqa: BLE001 - a body the analysis does not follow: the cautious rule
        if source_available(func):
            return _written_from_source(func, names), "the body's bytecode could not be analysed"
        return set(names), "the body could not be analysed and its source cannot be read"
    return {n for n in names if n in written}, None


def _written_from_source(func: Callable[..., Any], names: list[str]) -> set[str]:
    """All parameters but those only ever read element by element (``name[index]`` with no
    slice, or ``name.shape`` / ``.size`` / ``.ndim`` / ``.dtype``), from the body's source.

    A slice (``name[i:j]``) is a view that can be written through, and a name passed to a
    function or bound to another name may be written there: both count as written. Without the
    body's source every parameter counts as written (:func:`source_available` says which)."""
    fn = _function_ast(func)
    if fn is None:
        return set(names)
    read_only = set(names)
    parents: dict[int, ast.AST] = {}
    for node in ast.walk(fn):
        for child in ast.iter_child_nodes(node):
            parents[id(child)] = node
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and node.id in read_only:
            parent = parents.get(id(node))
            attr = isinstance(parent, ast.Attribute) and parent.attr in ("shape", "size", "ndim", "dtype")
            if not (attr or _element_read(node, parent, parents)):
                read_only.discard(node.id)
    return set(names) - read_only


def _element_read(node: ast.Name, parent: Any, parents: dict[int, ast.AST]) -> bool:
    if not (isinstance(parent, ast.Subscript) and parent.value is node and isinstance(parent.ctx, ast.Load)):
        return False
    index = parent.slice
    if isinstance(index, ast.Slice) or (isinstance(index, ast.Tuple) and any(isinstance(e, ast.Slice) for e in index.elts)):
        return False  # a view
    return not isinstance(parents.get(id(parent)), ast.Subscript)  # x[i][...]: something indexable came out


def _function_ast(func: Callable[..., Any]) -> ast.FunctionDef | None:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == getattr(func, "__name__", None):
            return node
    return None


def source_available(func: Callable[..., Any]) -> bool:
    """Whether the body's source can be read (else every array argument counts as written)."""
    return _function_ast(func) is not None
