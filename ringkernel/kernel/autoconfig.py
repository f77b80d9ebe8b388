"""How ``GpuKernel`` chooses its own launch configuration: element counts, 1-D and N-D plans, the decision cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import ConfigurationError, KernelArgumentError, LaunchConfigError
from . import planning
from .args import ArrayInfo, array_info, describe
from .indexing import KernelIndexing
from .runtime import DECISION_CACHE_LIMIT, with_stream
from ..launch import (
    KernelMode,
    ModeKind,
    KernelModeSelector,
    KernelResources,
    LaunchConfig,
    LaunchDecision,
    WorkloadProfile,
)

__all__ = ["AutoConfigMixin"]


_UNKNOWN: Any = object()  # "resources not looked up yet" (None means "none known": the simulator)


class AutoConfigMixin:
    """Methods ``GpuKernel`` gets for planning automatic launches (see the module docstring)."""

    # Set by GpuKernel (declared here for the type checker).
    name: str
    mode: KernelMode
    grid_stride: bool
    block: int | tuple[int, ...] | None
    ndim: int | None
    _params: list[str]
    _elements_index: int | None
    _same_size: tuple[int, ...]
    _nd_launch: bool
    _decisions: dict[tuple[Any, ...], LaunchDecision]
    _indexing_for: Callable[[Any], KernelIndexing]
    _resources_for: Callable[[tuple[Any, ...], list[ArrayInfo | None]], KernelResources | None]
    _check_config: Callable[[LaunchConfig, KernelResources | None], None]

    if TYPE_CHECKING:  # GpuKernel's read-only property

        @property
        def selector(self) -> KernelModeSelector: ...

    # -- element counts ---------------------------------------------------------------
    def _elements_from(self, args: tuple[Any, ...], infos: list[ArrayInfo | None]) -> int:
        if self._same_size:
            sizes = {self._params[i]: (info.size if (info := infos[i]) is not None else None) for i in self._same_size}
            distinct = {s for s in sizes.values()}
            if len(distinct) > 1:
                raise KernelArgumentError(
                    "arguments declared the same size differ: "
                    + ", ".join(f"{k}={v}" for k, v in sizes.items()),
                    kernel_name=self.name,
                    hint="pass arrays of equal length (the kernel declares same_size="
                    f"{tuple(self._params[i] for i in self._same_size)})",
                    details={"sizes": sizes},
                )
        if self._elements_index is not None:
            info = infos[self._elements_index]
            if info is None:
                raise KernelArgumentError(
                    f"elements= names '{self._params[self._elements_index]}', which is not an array here "
                    f"({describe(args[self._elements_index])})",
                    kernel_name=self.name,
                )
            return info.size
        sizes_all = [i.size for i in infos if i is not None]
        sizes_all += [t.size for a in args if isinstance(a, tuple) for t in _nested_arrays(a)]
        if not sizes_all:
            raise LaunchConfigError(
                "cannot infer the element count: no argument is an array",
                kernel_name=self.name,
                hint="pass elements=N (or profile=WorkloadProfile(N)) or an explicit kernel[grid, block]",
            )
        return max(sizes_all)

    # -- planning ---------------------------------------------------------------------
    def plan(
        self,
        *args: Any,
        elements: int | None = None,
        profile: WorkloadProfile | None = None,
        stream: Any = None,
    ) -> LaunchDecision:
        """The configuration a launch with these arguments would use, without launching."""
        return self._plan(args, [array_info(a) for a in args], elements, profile, stream)

    def _plan(
        self,
        args: tuple[Any, ...],
        infos: list[ArrayInfo | None],
        elements: Any,
        profile: WorkloadProfile | None,
        stream: Any,
        resources: Any = _UNKNOWN,
        ck: Any = None,
    ) -> LaunchDecision:
        ndim = self._launch_ndim(ck)
        if ndim > 1:
            return self._plan_nd(ndim, args, infos, elements, profile, stream, resources, ck)
        if isinstance(elements, (tuple, list)):
            if len(elements) != 1:
                raise LaunchConfigError(
                    f"elements={elements!r} has {len(elements)} extents; this kernel is 1-D",
                    kernel_name=self.name,
                    hint="pass one count (elements=N); declare @gpu_kernel(ndim=...) if the analysis is wrong",
                )
            elements = elements[0]
        if profile is not None:
            if not isinstance(profile, WorkloadProfile):
                raise KernelArgumentError(f"profile must be a WorkloadProfile, got {profile!r}", kernel_name=self.name)
            if elements is not None and elements != profile.element_count:
                raise LaunchConfigError(
                    f"elements={elements} contradicts profile.element_count={profile.element_count}",
                    kernel_name=self.name,
                    hint="pass one or the other",
                )
            n = profile.element_count
            if self._same_size:
                self._elements_from(args, infos)  # still check declared sizes
        elif elements is not None:
            if isinstance(elements, bool) or not isinstance(elements, (int, np.integer)):
                raise LaunchConfigError(f"elements must be an int, got {elements!r}", kernel_name=self.name)
            n = int(elements)
            if self._same_size:
                self._elements_from(args, infos)
        else:
            if self.mode.kind in (ModeKind.AUTO, ModeKind.ELEMENT_CENTRIC):
                # (a fixed mode such as WarpCooperative states the thread/element relation itself)
                planning.require_exact_1d(self.name, self._indexing_for(ck))
            n = self._elements_from(args, infos)
        if n <= 0:
            raise LaunchConfigError(
                f"asked to launch over {n} elements",
                kernel_name=self.name,
                hint="skip the launch when there is nothing to do, or pass elements= with a positive count",
                details={"elements": n},
            )
        if resources is _UNKNOWN:
            resources = self._resources_for(args, infos)
        def make() -> LaunchDecision:
            prof = profile if profile is not None else WorkloadProfile(n)
            block = self.block
            if isinstance(block, tuple):
                block = block[0] if len(block) == 1 or all(b == 1 for b in block[1:]) else block
            return self.selector.plan(prof, mode=self.mode, grid_stride=self.grid_stride, resources=resources, block=block)

        return self._decision((n, resources, profile), make, resources, stream)

    def _decision(
        self, key: Any, make: Callable[[], LaunchDecision], resources: KernelResources | None, stream: Any
    ) -> LaunchDecision:
        """The cached decision for ``key``, else ``make()``'s, checked against the device's limits."""
        decision = self._decisions.get(key)
        if decision is None:
            try:
                decision = make()
            except ConfigurationError as exc:
                raise LaunchConfigError(exc.message, kernel_name=self.name, hint=exc.hint, details=exc.details) from exc
            self._check_config(decision.config, resources)
            if len(self._decisions) >= DECISION_CACHE_LIMIT:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision if stream is None else with_stream(decision, stream)

    # -- dimensionality and N-D planning ------------------------------------------------
    def _launch_ndim(self, ck: Any) -> int:
        ndim = planning.launch_ndim(self.name, self.ndim, self.block, self._indexing_for(ck))
        if ndim > 1:
            self._nd_launch = True
        return ndim

    def _plan_nd(
        self,
        ndim: int,
        args: tuple[Any, ...],
        infos: list[ArrayInfo | None],
        elements: Any,
        profile: WorkloadProfile | None,
        stream: Any,
        resources: Any,
        ck: Any,
    ) -> LaunchDecision:
        dims = "xyz"[:ndim]
        if profile is not None:
            raise LaunchConfigError(
                f"profile= describes 1-D work; this kernel is {ndim}-D",
                kernel_name=self.name,
                hint=f"pass elements=({', '.join('n' + d for d in dims)}) or nothing (extents from the arrays)",
            )
        if self.mode.kind not in (ModeKind.AUTO, ModeKind.ELEMENT_CENTRIC):
            raise LaunchConfigError(
                f"mode {self.mode} is 1-D; {ndim}-D kernels launch one thread per element",
                kernel_name=self.name,
                hint="drop mode= for this kernel, or launch explicitly",
            )
        if self._same_size:
            self._elements_from(args, infos)  # declared equal sizes still hold
        ix = self._indexing_for(ck)
        cdim: int | None = 0
        cands = planning.nd_candidates(self._params, self._elements_index, ndim, infos, ix)
        cand_ext = planning.candidate_extent(self._params, ndim, infos, ix, cands) if cands else None
        if elements is not None:
            ext = planning.explicit_extent(self.name, elements, ndim)
            note = f"{ndim}-D kernel; extent {ext} given by the caller (x first)"
            if cands:
                assert cand_ext is not None
                short = [d for d in range(ndim) if ext[d] < cand_ext[d]]
                if short:
                    raise LaunchConfigError(
                        f"elements={tuple(elements)} is smaller than the arrays the kernel indexes with its grid "
                        f"position need: {cand_ext} (x first); x is the first entry, like numba's grid tuples, "
                        "not NumPy's shape order",
                        kernel_name=self.name,
                        hint=f"pass elements={cand_ext}, or nothing (the extent is read from the arrays)",
                        details={"given": ext, "needed": cand_ext},
                    )
                cdim = planning.contiguous_dim(self._params, max(cands, key=lambda i: infos[i].size), infos, ix)  # type: ignore[union-attr]
        else:
            if not cands:
                named = self._params[self._elements_index] if self._elements_index is not None else None
                raise LaunchConfigError(
                    (f"elements= names '{named}', but the kernel does not index it with its grid position in all "
                     f"{ndim} dimensions" if named else
                     f"cannot tell which array axis each grid dimension of this {ndim}-D kernel runs along")
                    + f" (found: {ix.describe()})",
                    kernel_name=self.name,
                    hint=f"pass elements=({', '.join('n' + d for d in dims)}) with the extent of each grid dimension "
                    "(x first, as numba's grid tuples), or name the array that spans the work with "
                    "@gpu_kernel(elements='out'), or launch explicitly: kernel[grid, block](...)",
                    details={"indexing": ix.describe()},
                )  # fmt: skip
            hidden = [self._params[i] for i, a in enumerate(args) if isinstance(a, tuple) and _nested_arrays(a)]
            if hidden:
                raise LaunchConfigError(
                    f"arrays inside the tuple argument(s) {hidden} may span more than the arrays the analysis "
                    "can see, so the extent cannot be read from the arguments",
                    kernel_name=self.name,
                    hint=f"pass elements=({', '.join('n' + d for d in dims)}) (x first), pass the arrays as "
                    "separate arguments, or launch explicitly",
                )
            assert cand_ext is not None
            ext = cand_ext
            big = max(cands, key=lambda i: infos[i].size)  # type: ignore[union-attr]
            cdim = planning.contiguous_dim(self._params, big, infos, ix)
            m = ix.axis_maps[self._params[big]]
            src = ", ".join(f"{d} = axis {m.axes[k]}" for k, d in enumerate(dims))
            names = ", ".join(f"{self._params[i]}{list(infos[i].shape)}" for i in cands)  # type: ignore[union-attr]
            note = f"{ndim}-D kernel (its code indexes {names}: {src}); extent {ext} (x first)"
        if any(e <= 0 for e in ext):
            raise LaunchConfigError(
                f"asked to launch over an empty extent {ext}",
                kernel_name=self.name,
                hint="skip the launch when there is nothing to do",
                details={"extent": ext},
            )
        if resources is _UNKNOWN:
            resources = self._resources_for(args, infos)
        def make() -> LaunchDecision:
            block = self.block
            if isinstance(block, int):  # a thread count: the shape is still chosen
                block = self.selector.recommended_block_shape(ext, contiguous_dim=cdim, resources=resources, threads=block)
            return self.selector.plan_nd(
                ext, contiguous_dim=cdim, grid_stride=self.grid_stride, resources=resources, block=block,
                notes=(note,),
            )  # fmt: skip

        return self._decision(("nd", ext, cdim, resources), make, resources, stream)


def _nested_arrays(value: tuple[Any, ...]) -> list[ArrayInfo]:
    """Device arrays inside a tuple argument (recursively)."""
    out = []
    for item in value:
        if isinstance(item, tuple):
            out += _nested_arrays(item)
        else:
            info = array_info(item)
            if info is not None:
                out.append(info)
    return out
