"""The rules that turn what a kernel's code says (``KernelIndexing``) and its arguments into
the shape of an automatic launch: its dimensionality, which arrays span it, its extent.
Pure functions of their arguments: ``GpuKernel`` supplies them and caches the results."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import LaunchConfigError
from .args import ArrayInfo
from .indexing import KernelIndexing

__all__ = ["launch_ndim", "require_exact_1d", "candidate_extent", "explicit_extent", "nd_candidates", "contiguous_dim"]


def launch_ndim(name: str, declared: int | None, block: Any, ix: KernelIndexing) -> int:
    """The grid dimensionality of an automatic launch, or a LaunchConfigError saying why
    the kernel's code does not tell it (the rules of docs/dsl.md, "When it cannot know")."""
    how = (
        "declare it, e.g. @gpu_kernel(ndim=2), and pass elements=(nx, ny) if the extents cannot be read "
        "from the arrays, or launch explicitly: kernel[grid, block](...)"
    )
    if declared is not None:
        if not ix.problems and ix.ndim is not None and ix.ndim != declared:
            raise LaunchConfigError(
                f"declared ndim={declared}, but its code reads a {ix.ndim}-D grid ({ix.describe()})",
                kernel_name=name,
                hint=f"declare ndim={ix.ndim} or drop ndim= (it is read from the code)",
                details={"declared": declared, "found": ix.ndim},
            )
        ndim = declared
    elif ix.problems:
        raise LaunchConfigError(
            "cannot tell the kernel's grid dimensionality from its code: " + "; ".join(ix.problems),
            kernel_name=name,
            hint=how,
            details={"problems": ix.problems},
        )
    elif ix.ndim is None:
        raise LaunchConfigError(
            "the kernel reads no thread or block index (cuda.grid, cuda.threadIdx, global_thread_id, ...), "
            "so nothing says how many threads it needs",
            kernel_name=name,
            hint="launch it explicitly, e.g. kernel[1, 1](...), or declare @gpu_kernel(ndim=1) to launch one "
            "thread per element",
        )
    else:
        ndim = ix.ndim
    if ix.single_block:
        raise LaunchConfigError(
            "the kernel indexes threads with cuda.threadIdx but never with cuda.blockIdx or cuda.grid: "
            "it is written for one block, and more blocks would repeat its work",
            kernel_name=name,
            hint="launch one block explicitly, kernel[1, threads](...), or compute a global index "
            "(cuda.grid(n) or threadIdx + blockIdx * blockDim) to let ringkernel choose",
        )
    if ix.partial:
        raise LaunchConfigError(
            "the kernel indexes arrays with a thread or block index alone ("
            + "; ".join(ix.partial)
            + "): its thread count follows its own scheme (a block per row, a warp per item), not the arrays' shapes",
            kernel_name=name,
            hint="launch it explicitly, e.g. kernel[rows, threads](...), or index with the global position "
            "(cuda.grid(n), or threadIdx + blockIdx * blockDim)",
            details={"partial": ix.partial},
        )
    if ix.shared and block is None:
        raise LaunchConfigError(
            f"the kernel allocates shared memory of a fixed shape ({', '.join(ix.shared)}), which usually "
            "fixes the block it was written for",
            kernel_name=name,
            hint="declare the block, e.g. @gpu_kernel(block=(16, 16)) for a 16x16 tile, or launch explicitly",
            details={"shared": ix.shared},
        )
    return ndim

def require_exact_1d(name: str, ix: KernelIndexing) -> None:
    """A 1-D automatic launch sizes its grid from the arrays: some array must be indexed
    by the position itself (``a[i]``, ``a[i + 1]``), or nothing ties threads to elements."""
    if ix.problems or ix.ndim is None:
        return  # declared ndim=1 over code the analysis cannot read: the declaration stands
    if any(m.complete(1) for m in ix.axis_maps.values()):
        return
    raise LaunchConfigError(
        "no array is indexed by the thread's position itself (found: "
        + (ix.describe() or "no array subscripts")
        + "), so the arrays' sizes do not say how many threads the kernel needs "
        "(e.g. a pairwise kernel over n elements needs n*n)",
        kernel_name=name,
        hint="pass elements=N with the number of threads it needs, or launch explicitly",
    )


def candidate_extent(
    params: list[str], ndim: int, infos: list[ArrayInfo | None], ix: KernelIndexing, cands: list[int]
) -> tuple[int, ...]:
    """Per grid dimension, the longest axis it indexes among the candidate arrays."""
    return tuple(
        max(infos[i].shape[ix.axis_maps[params[i]].axes[d]] for i in cands)  # type: ignore[union-attr,index]
        for d in range(ndim)
    )  # fmt: skip

def explicit_extent(name: str, elements: Any, ndim: int) -> tuple[int, ...]:
    """``elements=`` of an N-D launch, checked (one integer per grid dimension, x first)."""
    dims = "xyz"[:ndim]
    ok = isinstance(elements, (tuple, list)) and len(elements) == ndim and all(
        isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in elements
    )
    if not ok:
        raise LaunchConfigError(
            f"elements={elements!r}: this kernel is {ndim}-D and needs one integer extent per grid dimension",
            kernel_name=name,
            hint=f"pass elements=({', '.join('n' + d for d in dims)}), x first as in numba's grid tuples",
        )
    return tuple(int(e) for e in elements)

def nd_candidates(
    params: list[str], elements_index: int | None, ndim: int, infos: list[ArrayInfo | None], ix: KernelIndexing
) -> list[int]:
    """Array arguments the kernel indexes with all ``ndim`` grid positions (one axis each)."""
    idxs = [elements_index] if elements_index is not None else range(len(infos))
    out = []
    for i in idxs:
        info = infos[i]
        m = ix.axis_maps.get(params[i])
        if info is None or m is None or not m.complete(ndim):
            continue
        if max(a for a in m.axes[:ndim] if a is not None) >= len(info.shape):
            continue
        out.append(i)
    return out

def contiguous_dim(params: list[str], i: int, infos: list[ArrayInfo | None], ix: KernelIndexing) -> int | None:
    """The grid dimension that runs along array ``i``'s contiguous axis (``None``: none does)."""
    info = infos[i]
    m = ix.axis_maps.get(params[i])
    if info is None or m is None:
        return 0
    axis = info.contiguous_axis()
    return m.axes.index(axis) if axis in m.axes else None
