"""What a kernel body reveals about its launch: its grid dimensionality and which array axis
each grid dimension indexes.

An automatic launch must know two things the call's arguments do not say: whether the
kernel is written for a 1-, 2- or 3-D grid (``cuda.grid(2)``, ``cuda.threadIdx.y``,
``global_thread_id_2d()``), and, for 2-D and 3-D kernels, along which axis of which array
each grid dimension runs (``col, row = cuda.grid(2); out[row, col]`` puts x on axis 1,
``row, col = cuda.grid(2); out[row, col]`` puts x on axis 0). Guessing either silently
leaves outputs unwritten, so both are read from the kernel's code.

The analysis runs on numba's untyped IR (``run_frontend``: bytecode to IR, no typing, no
GPU), which is the same on the simulator and on a GPU. It follows

* uses of the thread/block index objects and of ``cuda.grid``/``cuda.gridsize`` (through
  aliases, ``from numba.cuda import grid``, and every device function the kernel calls);
* the *position* components (``cuda.grid(n)[d]``, ``threadIdx.<d>``, ``blockIdx.<d>``)
  through assignments, arithmetic, ``range`` loops (grid-stride loops), tuples and calls
  into device functions, to the subscripts of array parameters: ``u[row - 1, col]``
  records "axis 0 of ``u`` is indexed by y, axis 1 by x". Values loaded from memory carry
  no position (``a[idx[row], col]`` says nothing about axis 0).

The result, :class:`KernelIndexing`, is plain data (JSON-serialisable, stored with the
compiled kernel in the cache so that a cache hit does not rerun the analysis).
Anything the analysis cannot see through (an external ``declare_device`` function, a
non-constant ``cuda.grid(n)``) is listed in ``problems``; the launcher then refuses an
automatic launch instead of guessing, and the user gives ``ndim=`` or a configuration.

The IR walk itself lives in :mod:`ringkernel.kernel.indexing_ir`; this module holds the
record and turns the walk's summary into it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from .indexing_ir import _DIMS, _Analyzer

__all__ = ["KernelIndexing", "AxisMap", "analyze_kernel"]

#: Bumped when the analysis changes what it finds: cache entries record it, and a record of
#: another version is analysed again (version 2: writes through containers, iterators and
#: closures count, which version 1 missed; version 3: record-field stores, writes through f(*args), and N-D
#: subscripts on views of arguments).
ANALYSIS_VERSION = 3


class StaleIndexingRecord(ValueError):
    """A cached indexing record made by another version of the analysis."""


@dataclass(frozen=True)
class AxisMap:
    """For one array parameter: the array axis each grid dimension indexes (``None``: unseen).

    ``axes[d]`` is the axis that grid dimension ``d`` (0 = x) indexes; ``conflict`` says why
    no single mapping holds (a dimension used on two axes, two dimensions on one axis).
    """

    axes: tuple[int | None, ...]
    conflict: str | None = None

    def complete(self, ndim: int) -> bool:
        return self.conflict is None and len(self.axes) >= ndim and all(a is not None for a in self.axes[:ndim])


@dataclass(frozen=True)
class KernelIndexing:
    """What the analysis found (see the module docstring).

    Attributes
    ----------
    ndim:
        Grid dimensionality the kernel uses (1-3), or ``None`` when it reads no thread or
        block index at all.
    dims_used:
        Grid dimensions read in any way (positions, block or grid sizes), e.g. ``(0, 1)``.
    axis_maps:
        For each array parameter subscripted with grid positions: its :class:`AxisMap`.
    problems:
        What the analysis could not see through; non-empty means "do not trust ``ndim``".
    """

    ndim: int | None
    dims_used: tuple[int, ...]
    axis_maps: dict[str, AxisMap] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    #: Where positions come from: any of "grid" (cuda.grid), "threadIdx", "blockIdx".
    sources: tuple[str, ...] = ()
    #: Parameters the kernel may write (stores, atomics, device functions that write them,
    #: calls the analysis cannot see into): an over-approximation, never an under-one.
    written: tuple[str, ...] = ()
    #: Subscripts of parameters by a thread or block index alone (``out[blockIdx.x]``): the
    #: kernel's thread count does not follow from array shapes.
    partial: tuple[str, ...] = ()
    #: Shapes of the static shared arrays it allocates (they usually fix the block).
    shared: tuple[str, ...] = ()

    @property
    def single_block(self) -> bool:
        """Positions from ``threadIdx`` alone: a kernel written for one block."""
        return "grid" not in self.sources and "blockIdx" not in self.sources and "threadIdx" in self.sources

    def to_json(self) -> str:
        return json.dumps({
            "analysis": ANALYSIS_VERSION,
            "ndim": self.ndim,
            "dims_used": list(self.dims_used),
            "axis_maps": {k: {"axes": list(v.axes), "conflict": v.conflict} for k, v in self.axis_maps.items()},
            "problems": list(self.problems),
            "sources": list(self.sources),
            "written": list(self.written),
            "partial": list(self.partial),
            "shared": list(self.shared),
        }, sort_keys=True)  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> "KernelIndexing":
        """Rebuild from :meth:`to_json`; raises ``ValueError`` on anything malformed."""
        try:
            d = json.loads(text)
            if d.get("analysis") != ANALYSIS_VERSION:
                raise StaleIndexingRecord(f"made by analysis version {d.get('analysis')!r}, this is {ANALYSIS_VERSION}")
            ndim = d["ndim"]
            if ndim is not None and (type(ndim) is not int or not 1 <= ndim <= 3):
                raise ValueError(f"ndim {ndim!r}")
            dims = tuple(d["dims_used"])
            if not all(type(x) is int and 0 <= x <= 2 for x in dims):
                raise ValueError(f"dims_used {dims!r}")
            maps = {}
            for name, m in dict(d["axis_maps"]).items():
                axes = tuple(m["axes"])
                if not isinstance(name, str) or len(axes) > 3 or not all(a is None or (type(a) is int and 0 <= a < 32) for a in axes):
                    raise ValueError(f"axis map {name!r}: {m!r}")
                conflict = m["conflict"]
                if conflict is not None and not isinstance(conflict, str):
                    raise ValueError(f"conflict {conflict!r}")
                maps[name] = AxisMap(axes, conflict)
            problems = tuple(d["problems"])
            if not all(isinstance(p, str) for p in problems):
                raise ValueError("problems")
            sources = tuple(d["sources"])
            if not all(x in ("grid", "threadIdx", "blockIdx") for x in sources):
                raise ValueError(f"sources {sources!r}")
            written = tuple(d["written"])
            partial = tuple(d["partial"])
            shared = tuple(d["shared"])
            if not all(isinstance(x, str) for x in written + partial + shared):
                raise ValueError("written/partial/shared must hold strings")
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed kernel indexing record: {exc}") from exc
        return cls(ndim, dims, maps, problems, sources, written, partial, shared)

    def describe(self) -> str:
        if self.ndim is None:
            return "reads no thread or block index"
        parts = [f"{self.ndim}-D (uses {', '.join(_DIMS[d] for d in self.dims_used)})"]
        for name, m in self.axis_maps.items():
            if m.conflict:
                parts.append(f"{name} {m.conflict}")
            else:
                parts.append(name + ": " + ", ".join(f"{_DIMS[d]}->axis {a}" for d, a in enumerate(m.axes) if a is not None))
        return "; ".join(parts)


def analyze_kernel(py_func: Callable[..., Any]) -> KernelIndexing:
    """Analyse ``py_func`` (a kernel's Python function) and every device function it calls."""
    import inspect

    from ..config import simulator_exclusive

    # (the simulator swaps the `cuda` module in the kernel module's globals while another
    # thread's kernel runs: the analysis would not recognise cuda.grid & co. then)
    with simulator_exclusive():
        summary = _Analyzer({}).summarize(py_func)
    params = list(inspect.signature(py_func).parameters)
    dims = sorted(summary.dims_used)
    ndim = (max(dims) + 1) if dims else None
    # Axis maps: from subscripts whose index at a position is one grid dimension's position
    # plus an offset (cuda.grid(n)[d], or threadIdx.d with blockIdx.d). Anything else that
    # depends on the grid marks the array as "transformed" (not an extent source); a thread or
    # block index used alone marks the kernel as not launchable from array shapes.
    seen: dict[int, dict[int, set[int]]] = {}  # param -> dim -> axes
    transformed: set[int] = set()
    partial: list[str] = []
    lone: list[tuple[str, int, str]] = []
    exact_dims: set[int] = set()
    for pidx, _k, pos, dep in summary.subscripts:
        kinds: dict[int, set[str]] = {}
        for a in dep:
            if a[0] in ("pos", "tid", "bid", "spos"):
                kinds.setdefault(a[1], set()).add(a[0])
        if not kinds:
            continue
        name = params[pidx] if pidx < len(params) else f"#{pidx}"
        for d, ks in kinds.items():
            if "pos" not in ks and "spos" not in ks and len(ks & {"tid", "bid"}) == 1:
                which = "threadIdx" if "tid" in ks else "blockIdx"
                other = "blockIdx" if which == "threadIdx" else "threadIdx"
                lone.append((which, d, f"'{name}' axis {pos} is indexed by {which}.{_DIMS[d]} without {other}.{_DIMS[d]}"))
        exact = [d for d, ks in kinds.items() if "spos" not in ks and ("pos" in ks or ks >= {"tid", "bid"})]
        if len(kinds) == 1 and len(exact) == 1:
            seen.setdefault(pidx, {}).setdefault(exact[0], set()).add(pos)
            exact_dims.add(exact[0])
        else:
            transformed.add(pidx)
    # A block index alone (out[blockIdx.x]: one element per block) ties an array to the grid
    # itself: never launchable from shapes. A thread index alone (a tile's column inside a
    # block, sA[ty, tx] = A[y, tx + i * TPB]) is harmless where the dimension's extent comes
    # from an exact subscript elsewhere, and decisive where none exists (a block per row).
    for which, d, text in lone:
        if which == "blockIdx" or d not in exact_dims:
            partial.append(text)
    maps: dict[str, AxisMap] = {}
    for pidx in sorted(set(seen) | transformed):
        if pidx >= len(params):
            continue
        by_dim = seen.get(pidx, {})
        axes: list[int | None] = [None, None, None]
        conflict = None
        for d, ax in sorted(by_dim.items()):
            if len(ax) > 1:
                conflict = f"{_DIMS[d]} indexes axes {sorted(ax)}"
            else:
                axes[d] = next(iter(ax))
        used = [a for a in axes if a is not None]
        if conflict is None and len(used) != len(set(used)):
            conflict = "two grid dimensions index the same axis"
        if pidx in transformed and conflict is None:
            conflict = "indexed by a transformed grid position (e.g. 2*x, x//2, y*width+x)"
        while axes and axes[-1] is None:
            axes.pop()
        maps[params[pidx]] = AxisMap(tuple(axes), conflict)
    written = tuple(params[i] for i in sorted(summary.written) if i < len(params))
    problems = list(summary.problems)
    if ndim is not None and ndim >= 2 and summary.unattributed:
        # an N-D grid sized from the arrays it can read would be too small for one it cannot (an
        # adversarial trial: out[row][col] with a smaller input left 1968 of 2000 outputs unwritten)
        problems += [u + "; write out[row, col], or declare ndim= and pass elements=(nx, ny)" for u in summary.unattributed]
    return KernelIndexing(
        ndim, tuple(dims), maps, tuple(dict.fromkeys(problems)), tuple(sorted(summary.sources)), written,
        tuple(dict.fromkeys(partial)), tuple(summary.shared),
    )
