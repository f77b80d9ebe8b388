"""``@gpu_kernel`` and ``kernel_from_source``: the ways a Python function becomes a ``GpuKernel``."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..device import GpuArchitecture
from ..errors import ConfigurationError
from ..launch import KernelMode
from .core import GpuKernel

__all__ = ["gpu_kernel", "kernel_from_source"]


def gpu_kernel(
    func: Callable[..., None] | None = None,
    *,
    signatures: Sequence[Any] | str | None = None,
    grid_stride: bool = False,
    mode: KernelMode = KernelMode.AUTO,
    block: int | tuple[int, ...] | None = None,
    elements: str | None = None,
    same_size: Sequence[str] = (),
    ndim: int | None = None,
    fastmath: bool = False,
    lineinfo: bool = False,
    debug: bool = False,
    arch: GpuArchitecture | None = None,
) -> Any:
    """Turn a function with a numba.cuda kernel body into a :class:`GpuKernel`.

    Works bare (``@gpu_kernel``) and with options (``@gpu_kernel(grid_stride=True)``).

    Parameters
    ----------
    signatures:
        numba signatures the kernel accepts (``"void(float32[:], float32[:])"``); arguments
        matching none are refused before launch. ``None``: compile for whatever is passed.
    grid_stride:
        The body loops ``for i in range(global_thread_id(), n, grid_stride())``, so it is
        correct for any grid; only then may the selector launch fewer threads than elements.
    mode:
        A fixed :class:`KernelMode`, or ``KernelMode.AUTO`` (default).
    block:
        A fixed block: an int (threads per block; for 2-D/3-D kernels the shape is still
        chosen) or a tuple (the exact shape), e.g. when the body sizes a shared array by it.
    elements:
        Name of the parameter whose shape gives the launch's extent (default: the largest
        array; for 2-D/3-D kernels, the arrays the kernel indexes with its grid position).
    same_size:
        Names of array parameters that must have equal sizes; a mismatch is refused.
    ndim:
        The kernel's grid dimensionality (1-3). Default: read from its code
        (``cuda.grid(2)``, ``cuda.threadIdx.y``, ...; see :mod:`ringkernel.kernel.indexing`); give it
        when the code calls something the analysis cannot read.
    fastmath, lineinfo, debug:
        Passed to ``numba.cuda.jit``.
    arch:
        Plan for this architecture instead of the current device.
    """
    options = dict(
        signatures=signatures,
        grid_stride=grid_stride,
        mode=mode,
        block=block,
        elements=elements,
        same_size=same_size,
        ndim=ndim,
        fastmath=fastmath,
        lineinfo=lineinfo,
        debug=debug,
        arch=arch,
    )
    if func is not None:
        return GpuKernel(func, **options)  # type: ignore[arg-type]

    def decorate(f: Callable[..., None]) -> GpuKernel:
        return GpuKernel(f, **options)  # type: ignore[arg-type]

    return decorate


def kernel_from_source(source: str, name: str | None = None) -> Any:
    """A ``GpuKernel`` from the Python source text of a kernel function.

    The source runs in a fresh namespace that already holds ``cuda`` (numba.cuda), ``np``,
    ``math`` and ringkernel's device helpers (``global_thread_id``, ``grid_stride``, ...).
    It must define exactly one function, or ``name`` must say which one.
    """
    import inspect
    import math
    import textwrap

    import numpy as np

    from . import intrinsics

    ns: dict[str, Any] = {"np": np, "math": math, "__name__": "ringkernel_source_kernel"}
    from numba import cuda

    ns["cuda"] = cuda
    ns.update({k: getattr(intrinsics, k) for k in intrinsics.__all__})
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"kernel source is not UTF-8 text ({exc})", hint="pass a str") from None
    if not isinstance(source, str):
        raise ConfigurationError(f"kernel source must be a str, got {type(source).__name__}",
                                 hint="pass the text of one `def`")  # fmt: skip
    import ast

    text = textwrap.dedent(source)
    try:
        tree = ast.parse(text, "<ringkernel kernel source>")
        code = compile(tree, "<ringkernel kernel source>", "exec")
    except (SyntaxError, ValueError) as exc:  # (ValueError: a NUL character)
        raise ConfigurationError(f"kernel source does not parse: {exc}", hint="pass the text of one `def`") from exc
    # the functions the source itself defines with `def` at its top level (not what it
    # imports, and also those named like a helper already in the namespace)
    defined = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    try:
        exec(code, ns)  # noqa: S102 - compiling the caller's own kernel source is the point
    except BaseException as exc:  # noqa: BLE001 - SystemExit and the like from the source are its errors too
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ConfigurationError(
            f"running the kernel source raised {type(exc).__name__}: {exc}",
            hint="the source may only define the kernel (and import what it needs)",
        ) from exc
    funcs = {k: ns[k] for k in defined if inspect.isfunction(ns.get(k))}
    if name is not None:
        if name not in funcs:
            raise ConfigurationError(f"the source defines no function {name!r}", details={"defined": sorted(funcs)})
        return GpuKernel(funcs[name])
    if len(funcs) != 1:
        raise ConfigurationError(
            f"the source defines {len(funcs)} functions ({', '.join(sorted(funcs)) or 'none'}); expected one",
            hint="pass name= to choose",
        )
    return GpuKernel(next(iter(funcs.values())))
