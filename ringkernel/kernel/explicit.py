"""The explicit launch: ``kernel[grid, block, ...]`` (``ConfiguredLaunch``) and configurations given by the caller."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .. import _current
from ..errors import ConfigurationError, LaunchConfigError
from .args import ArrayInfo
from .autoconfig import _UNKNOWN
from .runtime import DECISION_CACHE_LIMIT
from ..launch import KernelMode, KernelResources, LaunchConfig, LaunchDecision

if TYPE_CHECKING:
    import weakref

    from ..device import GpuArchitecture
    from ..launch import KernelModeSelector
    from .core import GpuKernel

__all__ = ["ConfiguredLaunch", "ExplicitLaunchMixin"]


class ExplicitLaunchMixin:
    """Methods ``GpuKernel`` gets for explicit configurations (see the module docstring)."""

    # Set by GpuKernel (declared here for the type checker).
    name: str
    mode: KernelMode
    grid_stride: bool
    _configured: dict[Any, ConfiguredLaunch]
    _configured_all: "weakref.WeakSet[ConfiguredLaunch]"
    _resources_for: Callable[[tuple[Any, ...], list[ArrayInfo | None]], KernelResources | None]
    _check_config: Callable[[LaunchConfig, KernelResources | None], None]

    if TYPE_CHECKING:  # GpuKernel's read-only properties

        @property
        def arch(self) -> GpuArchitecture: ...

        @property
        def selector(self) -> KernelModeSelector: ...

    def _explicit_decision(
        self, config: LaunchConfig, args: tuple[Any, ...], infos: list[ArrayInfo | None], resources: Any = _UNKNOWN
    ) -> LaunchDecision:
        if resources is _UNKNOWN:
            resources = self._resources_for(args, infos)
        self._check_config(config, resources)
        n = max((i.size for i in infos if i is not None), default=0)
        tpb = config.threads_per_block
        sel = self.selector
        return LaunchDecision(
            mode=self.mode,
            config=config,
            elements=n,
            grid_stride=self.grid_stride,
            resident_blocks_per_sm=sel.resident_blocks_per_sm(tpb, resources),
            occupancy=sel.occupancy(tpb, resources),
            reasons=("explicit configuration from the caller",),
            arch_name=self.arch.name,
            ndim=max((d + 1 for d in range(3) if config.grid[d] > 1 or config.block[d] > 1), default=1),
        )

    def __getitem__(self, spec: Any) -> "ConfiguredLaunch":
        """numba's explicit form: ``kernel[grid, block]``, ``[grid, block, stream]``, ``[grid, block, stream, shared_mem]``."""
        try:
            hit = self._configured.get(spec)
        except TypeError:  # unhashable stream object
            hit = None
        if hit is not None:
            return hit
        if not isinstance(spec, tuple) or not 2 <= len(spec) <= 4:
            raise LaunchConfigError(
                f"kernel[...] takes (grid, block[, stream[, shared_mem]]), got {spec!r}",
                kernel_name=self.name,
            )
        grid, block = spec[0], spec[1]
        stream = spec[2] if len(spec) > 2 and spec[2] != 0 else None
        shared = spec[3] if len(spec) > 3 else 0
        try:
            config = LaunchConfig(grid=grid, block=block, shared_mem=shared, stream=stream)
        except ConfigurationError as exc:
            raise LaunchConfigError(exc.message, kernel_name=self.name, hint=exc.hint) from exc
        self._check_config(config, None)
        launch = ConfiguredLaunch(self, config)  # type: ignore[arg-type]  # (self is a GpuKernel)
        self._configured_all.add(launch)
        try:
            if len(self._configured) >= DECISION_CACHE_LIMIT:
                self._configured.clear()
            self._configured[spec] = launch
        except TypeError:
            pass
        return launch


class ConfiguredLaunch:
    """``kernel[grid, block, ...]``: call it with the kernel's arguments."""

    __slots__ = ("kernel", "config", "_extra", "_memo", "__weakref__")

    def __init__(self, kernel: GpuKernel, config: LaunchConfig) -> None:
        self.kernel = kernel
        self.config = config
        self._extra = (config.grid, config.block, config.shared_mem)
        self._memo: dict[tuple[int, ...], tuple[Any, ...]] = {}

    def __call__(self, *args: Any, host_transfer: bool = False) -> None:
        k = self.kernel
        if not host_transfer:
            memo = self._memo
            if memo and not _current.active:  # the inlined hot path of GpuKernel.__call__ (entries carry this config's stream)
                m = memo.get(tuple(map(id, args)))
                if m is not None and not m[0](*m[1]):
                    k._last = m[2]
                    return
            if k._fast_explicit and len(args) == len(k._params):
                if k._try_fast(args, k._fast_explicit, self._extra, self.config.stream):
                    k._memoize(self._memo, args, k._last, self.config.stream)
                    return
        decision = k.launch(*args, config=self.config, host_transfer=host_transfer)
        if not host_transfer and k.uses_runtime:
            k._memoize(self._memo, args, decision, self.config.stream)
