"""``GpuKernel`` and ``@gpu_kernel``: numba.cuda kernels that choose their own launch configuration.

::

    @gpu_kernel(grid_stride=True)
    def vector_add(a, b, c):
        for i in range(global_thread_id(), c.size, grid_stride()):
            c[i] = a[i] + b[i]

    vector_add(a, b, c)                 # configuration chosen by KernelModeSelector
    vector_add[grid, block](a, b, c)    # numba's explicit form keeps working
    vector_add.last_config.explain()    # which mode, block and grid, and why

The body is ordinary numba.cuda kernel code and is compiled by numba on first launch (the
decorator itself neither imports numba nor touches the GPU). Arguments are numba device
arrays or anything with ``__cuda_array_interface__`` (CuPy, PyTorch); a NumPy host array
is refused with an error that says how to move it, unless the call opts into copying with
``host_transfer=True``.

This module holds set-up, argument checks, compilation and the launch itself; the automatic
configuration is planned in ``autoconfig.py``, ``kernel[grid, block]`` lives in ``explicit.py``
and the compiled-kernel runtime in ``runtime.py`` (mixins of ``GpuKernel``).
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import weakref
from typing import Any, Callable, Sequence

import numpy as np

from ..device import GpuArchitecture
from ..errors import (
    ErrorContext,
    ConfigurationError,
    KernelArgumentError,
    KernelCompileError,
    LaunchConfigError,
)
from .. import _current
from .. import native as _native
from . import hooks as _hooks
from .args import ArrayInfo, accepts, array_info, describe, fmt_type, prepare_arguments
from .autoconfig import _UNKNOWN, AutoConfigMixin
from .explicit import ConfiguredLaunch, ExplicitLaunchMixin
from .indexing import KernelIndexing, StaleIndexingRecord, analyze_kernel
from .runtime import (
    RuntimeLaunchMixin,
    describe_stream,
    launch_error,
    memo_launch,
    without_stream,
)
from ..launch import (
    KernelMode,
    KernelModeSelector,
    KernelResources,
    LaunchConfig,
    LaunchDecision,
    WorkloadProfile,
)
from ..config import ensure_numba_cuda

__all__ = ["GpuKernel", "ConfiguredLaunch"]

_native_lock = threading.Lock()


def install_native_call() -> bool:
    """Make ``GpuKernel.__call__`` the compiled module's (ringkernel/_native.c ``KernelCall``) if
    it can be built; True when it is. Called on a kernel's first compile for a real GPU (not at
    import or decoration: building the module writes to the cache directory), and by tests.
    The compiled call takes the hot path itself and defers to ``_slow_call``, ``_call_rest``
    and ``_layout_launch`` for everything else, so both give the same results."""
    if "__call__" in GpuKernel.__dict__ and GpuKernel.__dict__["__call__"] is not GpuKernel._slow_call:
        return True
    with _native_lock:
        mod = _native.load() if _native.CALL else None
        if mod is None:
            return False
        _hooks.use_native(mod)  # launch reports in C too (a profiler's Recorder)
        GpuKernel.__call__ = mod.KernelCall()  # type: ignore[method-assign]
        return True


def uninstall_native_call() -> None:
    """Back to the pure-Python ``__call__`` (tests compare both)."""
    GpuKernel.__call__ = GpuKernel._slow_call  # type: ignore[method-assign]


log = logging.getLogger(__name__)

_SIMULATED_LAUNCHES_LOCKED = False


def _lock_simulated_launches() -> None:
    """Make plain ``@cuda.jit`` launches on numba's simulator take ``SIMULATOR_LOCK`` too (once,
    on the first simulated launch of a ``GpuKernel``): the simulator keeps the launch's context
    in a module global and swaps the kernel module's ``cuda``, so a plain kernel launched on
    another thread while a ``GpuKernel`` runs would see the other launch's (a review's stress:
    AttributeError 'Thread' object has no attribute 'blockIdx'). Device functions and calls
    made from the simulator's block threads (inside a kernel) are left as they are: they run
    within a launch that holds the lock already."""
    global _SIMULATED_LAUNCHES_LOCKED
    ensure_numba_cuda()
    from numba.cuda.simulator import kernel as sim

    from ..config import SIMULATOR_LOCK

    with SIMULATOR_LOCK:
        if _SIMULATED_LAUNCHES_LOCKED:
            return
        original = sim.FakeCUDAKernel.__call__
        if not getattr(original, "__ringkernel_wrapped__", False):
            block_thread = sim.BlockThread

            @functools.wraps(original)
            def call(self: Any, *args: Any) -> Any:
                if self._device or isinstance(threading.current_thread(), block_thread):
                    return original(self, *args)
                with SIMULATOR_LOCK:
                    return original(self, *args)

            call.__ringkernel_wrapped__ = True  # type: ignore[attr-defined]
            sim.FakeCUDAKernel.__call__ = call
        _SIMULATED_LAUNCHES_LOCKED = True


class GpuKernel(AutoConfigMixin, ExplicitLaunchMixin, RuntimeLaunchMixin):
    """A numba.cuda kernel with automatic launch configuration; made by :func:`gpu_kernel`.

    Call it like a function to launch with a configuration from
    :class:`~ringkernel.launch.KernelModeSelector`; index it (``kernel[grid, block]``) for an
    explicit one; ``kernel.launch(..., config=...)`` takes a :class:`LaunchConfig`.
    """

    def __init__(
        self,
        py_func: Callable[..., None],
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
    ) -> None:
        if not callable(py_func):
            raise ConfigurationError(f"@gpu_kernel decorates a function, got {py_func!r}")
        functools.update_wrapper(self, py_func)  # type: ignore[arg-type]
        self.py_func = py_func
        self.name: str = getattr(py_func, "__name__", "kernel")
        self._params = list(inspect.signature(py_func).parameters)
        self._nparams = len(self._params)
        if not isinstance(mode, KernelMode):
            raise ConfigurationError(f"kernel '{self.name}': mode must be a KernelMode, got {mode!r}")
        self.mode = mode
        if not isinstance(grid_stride, (bool, np.bool_)):
            # (bool("False") is True: a kernel without a grid-stride loop then got a capped
            # grid and left elements unwritten; from an adversarial trial)
            raise ConfigurationError(
                f"kernel '{self.name}': grid_stride must be True or False, got {grid_stride!r}",
                hint="grid_stride=True when the kernel loops with grid_stride(), else leave it out",
            )
        self.grid_stride = bool(grid_stride)
        if block is not None and not _is_block(block):
            raise ConfigurationError(
                f"kernel '{self.name}': block must be a positive int or a tuple of 1 to 3 positive ints, got {block!r}"
            )
        # NumPy integers accepted here are plain ints from here on (the launch checks ints)
        self.block = tuple(int(b) for b in block) if isinstance(block, tuple) else (int(block) if block is not None else None)
        if ndim is not None and (type(ndim) is not int or not 1 <= ndim <= 3):
            raise ConfigurationError(f"kernel '{self.name}': ndim must be 1, 2 or 3, got {ndim!r}")
        self.ndim = ndim
        self._indexing: KernelIndexing | None = None
        self._nd_launch = ndim is not None and ndim > 1  # the fast path keys N-D launches by shapes
        self._elements_index = self._param_index(elements, "elements") if elements is not None else None
        if same_size is None:
            same_size = ()
        elif isinstance(same_size, str):
            same_size = (same_size,)  # one name, not its letters
        elif not isinstance(same_size, (tuple, list)):
            raise ConfigurationError(
                f"kernel '{self.name}': same_size must be a sequence of parameter names, got {same_size!r}",
                hint='e.g. same_size=("a", "b", "out")',
            )
        self._same_size = tuple(self._param_index(n, "same_size") for n in same_size)
        if isinstance(signatures, str):
            signatures = [signatures]
        self._raw_signatures = list(signatures) if signatures is not None else None
        self._jit_options = {"fastmath": fastmath, "lineinfo": lineinfo, "debug": debug}
        self._arch = arch
        self._lock = threading.Lock()
        self._dispatcher: Any = None
        self._selector: KernelModeSelector | None = None
        self._signatures: list[tuple[Any, ...]] | None = None
        self._resources: dict[tuple[Any, ...], KernelResources | None] = {}
        self._decisions: dict[tuple[Any, ...], LaunchDecision] = {}
        self._last: LaunchDecision | None = None
        # Compiled-kernel runtime (GPU only): compiled kernels by argument type key, and the
        # launches the fast path may repeat without re-checking: (type key, elements) for
        # automatic launches, (type key, grid, block, shared_mem) for explicit ones.
        self._runtime: bool | None = None
        self._compiled: dict[tuple[Any, ...], Any] = {}
        self._fast_auto: dict[tuple[Any, ...], LaunchDecision] = {}
        self._fast_explicit: dict[tuple[Any, ...], LaunchDecision] = {}
        self._configured: dict[Any, ConfiguredLaunch] = {}
        # Launch memo: identity of the arguments' cached ArgInfos -> (launcher, infos, config,
        # decision). A hit skips every check, plan and packing step (see kernel/runtime.py).
        # Never made while launch hooks are registered (kernel/hooks.py).
        self._memo: dict[tuple[int, ...], tuple[Any, ...]] = {}
        # Every ConfiguredLaunch made (also those evicted from _configured or never stored
        # there): close() and a new hook must reach their memos.
        self._configured_all: "weakref.WeakSet[ConfiguredLaunch]" = weakref.WeakSet()
        # Layout entries (kernel/runtime.py _add_layout_entry): launches on arrays of the same
        # types and layouts as an earlier one, with any scalar values; newest first.
        self._layouts: list[Any] = []
        #: The layout entries of the other hook state (``True``: made while launch hooks were
        #: registered, they report): put aside when hooks come or go, back when they return.
        self._layouts_aside: dict[bool, list[Any]] = {}
        self._layout_skip = 0  # entries still not to make after the list overflowed
        self._layout_pause = 0  # the length of the last such pause
        self._memo_skip = 0  # memoisations still to skip after a memo overflowed
        self._memo_pause = 0  # the length of the last such pause
        self._closed = False
        _hooks.KERNELS.add(self)

    # -- lifetime ----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release what this kernel loaded (its modules unload once nothing else holds them)
        and refuse launches afterwards; idempotent. A kernel is a module-level object that
        normally lives as long as the program: close it to drop its GPU code early."""
        if self._closed:
            return
        self._closed = True
        with _hooks._lock:  # (a hook added meanwhile must not put entries back)
            self._forget_memos()
        self._fast_auto.clear()
        self._fast_explicit.clear()
        self._configured.clear()
        for ck in self._compiled.values():
            ck.owned = False
            ck.close()
        self._compiled.clear()

    def __enter__(self) -> "GpuKernel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            from ..errors import ResourceClosedError

            raise ResourceClosedError(f"GpuKernel '{self.name}'", operation="launch",
                                      hint="define the kernel again (or do not close it while it is used)")  # fmt: skip

    def _forget_memos(self, hooked: bool | None = None) -> None:
        """Drop every launch memo and layout entry (closing; a context).

        ``hooked``: the first launch hook came (True) or the last one went (False). Memo
        entries are dropped (one reports its launches or not by how it was made; they are
        cheap to make again), while the layout entries of the state left are put aside and
        those of the state entered come back: each compiled a small function (~0.4 ms on
        the H200), which a profiler entered around one step of many would otherwise pay
        again at every entry and exit. Entries put aside hold no pointer they would trust
        later: each launch checks its arrays' records by identity or reads them again."""
        from ..compile.launcher import clear_memo

        clear_memo(self._memo)
        for launch in list(self._configured_all):
            clear_memo(launch._memo)
        if hooked is None:
            self._layouts = []
            self._layouts_aside = {}
        else:
            # sorted by how each entry was made: a list that a launch on another thread mixed up
            # while a hook came or went cannot leave a silent entry in the reporting state (its
            # launches unreported in every later profiler) nor a reporting one in the silent state
            aside = self._layouts_aside
            aside[not hooked] = [e for e in self._layouts if e.reports is not hooked and not e.launcher.closed]
            self._layouts = [e for e in aside.pop(hooked, []) if e.reports is hooked and not e.launcher.closed]

    # -- set-up (lazy) ------------------------------------------------------------------
    def _param_index(self, name: str, option: str) -> int:
        try:
            return self._params.index(name)
        except ValueError:
            raise ConfigurationError(
                f"kernel '{self.name}': {option}= names {name!r}, which is not a parameter",
                hint=f"parameters are {self._params}",
            ) from None

    @property
    def dispatcher(self) -> Any:
        """The underlying numba dispatcher (created, not compiled, on first access)."""
        if self._dispatcher is None:
            with self._lock:
                if self._dispatcher is None:
                    self._dispatcher = self._make_dispatcher()
        return self._dispatcher

    def _make_dispatcher(self) -> Any:
        from ..config import simulator_enabled

        sim = simulator_enabled()  # before numba.cuda: ringkernel picks the backend first
        from numba import cuda

        opts = dict(self._jit_options)
        if sim:
            opts.pop("lineinfo", None)
        return cuda.jit(**opts)(self.py_func)

    @property
    def arch(self) -> GpuArchitecture:
        """The GPU this kernel plans for (the current device unless given)."""
        if self._arch is None:
            self._arch = GpuArchitecture.current()
        return self._arch

    @property
    def selector(self) -> KernelModeSelector:
        if self._selector is None:
            self._selector = KernelModeSelector(self.arch)
        return self._selector

    @property
    def signatures(self) -> list[tuple[Any, ...]] | None:
        """Declared signatures as tuples of numba types (``None``: any types, compiled lazily)."""
        if self._raw_signatures is None:
            return None
        if self._signatures is None:
            from numba.core import sigutils

            parsed = []
            for sig in self._raw_signatures:
                try:
                    args, _ = sigutils.normalize_signature(sig)
                except Exception as exc:
                    raise ConfigurationError(
                        f"kernel '{self.name}': cannot parse signature {sig!r}: {exc}",
                        hint="write it as 'void(float32[:], float32[:])' or a tuple of numba types",
                    ) from exc
                if len(args) != len(self._params):
                    raise ConfigurationError(
                        f"kernel '{self.name}': signature {sig!r} has {len(args)} arguments, "
                        f"the function takes {len(self._params)}"
                    )
                parsed.append(tuple(args))
            self._signatures = parsed
        return self._signatures

    # -- argument checks --------------------------------------------------------------
    def _prepare_args(self, args: tuple[Any, ...], host_transfer: bool) -> tuple[tuple[Any, ...], list[tuple[int, np.ndarray, Any]]]:
        """See :func:`~ringkernel.kernel.args.prepare_arguments`."""
        return prepare_arguments(self.name, self._params, args, host_transfer, self._written_params)

    def _written_params(self) -> tuple[str, ...]:
        """Parameters the kernel may write (an over-approximation, from its code)."""
        try:
            return self.indexing.written
        except Exception as exc:  # noqa: BLE001 - cannot tell: treat every parameter as written
            log.debug("kernel %s: write analysis failed (%s); copying every array back", self.name, exc)
            return tuple(self._params)

    def _check_types(self, args: tuple[Any, ...], infos: list[ArrayInfo | None]) -> tuple[Any, ...] | None:
        """The declared signature these arguments match (``None`` if none are declared)."""
        sigs = self.signatures
        if not sigs:
            return None
        for sig in sigs:
            if all(accepts(t, a, i) for t, a, i in zip(sig, args, infos)):
                return sig
        got = ", ".join(describe(a) for a in args)
        accepted = "; ".join("(" + ", ".join(fmt_type(t) for t in s) + ")" for s in sigs)
        raise KernelArgumentError(
            f"no declared signature accepts ({got})",
            kernel_name=self.name,
            hint=f"declared signatures: {accepted}. Convert the arguments (e.g. arr.astype(np.float32)) "
            "or add a signature to @gpu_kernel(signatures=[...])",
            details={"arguments": got, "signatures": accepted},
        )

    # -- compilation and resources ----------------------------------------------------
    def resources(self, *args: Any) -> KernelResources | None:
        """Registers and shared memory of the kernel compiled for ``args`` (``None`` on the simulator)."""
        return self._resources_for(args, [array_info(a) for a in args])

    def _resources_for(self, args: tuple[Any, ...], infos: list[ArrayInfo | None]) -> KernelResources | None:
        key = tuple((i.dtype, len(i.shape)) if i is not None else type(a) for a, i in zip(args, infos))
        try:
            return self._resources[key]
        except KeyError:
            pass
        from ..config import simulator_enabled

        res: KernelResources | None = None
        if self.uses_runtime:
            from ..compile.launcher import describe_arg

            fast = [describe_arg(a) for a in args]
            if all(f is not None for f in fast):
                ck = self._compiled_for(args, fast, self._check_types(args, infos))
                res = KernelResources(ck.registers_per_thread, ck.shared_mem_per_block, ck.max_threads_per_block)
                self._resources[key] = res
                return res
        if not simulator_enabled():
            compiled = self._compile_for(args)
            try:
                res = KernelResources(
                    registers_per_thread=int(compiled.regs_per_thread),
                    shared_mem_per_block=int(compiled.shared_mem_per_block),
                    max_threads_per_block=int(compiled.max_threads_per_block),
                )
            except Exception as exc:  # attribute query unsupported: plan without it
                log.debug("kernel %s: resource query failed: %s", self.name, exc)
        self._resources[key] = res
        return res

    def _compile_for(self, args: tuple[Any, ...]) -> Any:
        try:
            return self.dispatcher._compile_for_args(*args)
        except Exception as exc:
            raise self._compile_error(args, exc) from exc

    def _compile_error(self, args: tuple[Any, ...], exc: Exception) -> KernelCompileError:
        got = ", ".join(describe(a) for a in args)
        first = str(exc).strip().splitlines()
        return KernelCompileError(
            f"numba could not compile it for ({got}): {type(exc).__name__}: {first[0] if first else ''}",
            kernel_name=self.name,
            hint="the body must be numba.cuda kernel code (no Python objects, no return value); "
            "the full numba message is chained below",
            details={"arguments": got},
        )

    # -- dimensionality (the indexing analysis) ---------------------------------------
    @property
    def indexing(self) -> KernelIndexing:
        """What the kernel's code says about its grid (see :mod:`ringkernel.kernel.indexing`)."""
        return self._indexing_for(None)

    def _indexing_for(self, ck: Any) -> KernelIndexing:
        ix = self._indexing
        if ix is None:
            raw = getattr(ck, "indexing", None) if ck is not None else None
            if raw:
                try:
                    ix = KernelIndexing.from_json(raw)
                except StaleIndexingRecord as exc:
                    log.debug("kernel %s: cached indexing record %s; analysing again", self.name, exc)
                except ValueError as exc:
                    log.warning("kernel %s: cached indexing record unreadable (%s); analysing again", self.name, exc)
            if ix is None:
                ix = analyze_kernel(self.py_func)
            self._indexing = ix
        return ix

    def _check_config(self, config: LaunchConfig, resources: KernelResources | None) -> None:
        problems = config.violations(self.arch, resources)
        if problems:
            arch = self.arch
            raise LaunchConfigError(
                "launch configuration out of range: " + "; ".join(problems),
                kernel_name=self.name,
                hint=f"the device allows blocks of at most {arch.max_threads_per_block} threads "
                f"(per dimension {arch.max_block_dim}) and grids of at most {arch.max_grid_dim} blocks; "
                "use a smaller block, a grid-stride kernel for huge inputs, or let ringkernel choose "
                "(call the kernel without [grid, block])",
                details={"grid": config.grid, "block": config.block, "shared_mem": config.shared_mem},
                context=ErrorContext(f'launch("{self.name}")', self.name, describe_stream(config.stream)),
            )

    # -- launching --------------------------------------------------------------------
    def _slow_call(
        self,
        *args: Any,
        elements: int | None = None,
        profile: WorkloadProfile | None = None,
        stream: Any = None,
        host_transfer: bool = False,
    ) -> None:
        """Launch with a configuration chosen for these arguments and this GPU (``__call__``:
        the compiled base's call takes its hot path itself and comes here with keywords)."""
        plain = elements is None and profile is None and not host_transfer
        if plain and (self._memo or self._layouts) and not _current.active:
            # The hot path, inlined (every attribute lookup shows at ~5 us a launch): the very
            # numba arrays of an earlier checked launch -> the entry's own, constant parameter
            # block and the driver call's arguments; one call. Entries die with their arrays
            # (launcher._DEPENDENTS); a non-zero result falls through to the checked path.
            m = self._memo.get(tuple(map(id, args)))
            if m is not None:
                if stream is None:
                    if not m[0](*m[1]):
                        self._last = m[2]
                        return
                elif memo_launch(self, m, stream):  # same arrays, another stream
                    return
            elif (layouts := self._layouts) and stream is None and len(args) == len(self._params):
                # arrays of an earlier launch's layouts (new ones, CuPy's, PyTorch's), scalars
                # of any value: the newest layout entry inlined, the others in _layout_launch
                # (one read of the list: another thread may replace it meanwhile)
                d = layouts[0](args)
                if d is not None and type(d) is not tuple:
                    self._last = d
                    return
                if self._layout_launch(args, d):
                    return
        if plain and self._fast_auto and len(args) == len(self._params):
            if self._try_fast(args, self._fast_auto, None, stream):
                self._memoize(self._memo, args, self._last)
                return
        decision = self.launch(*args, elements=elements, profile=profile, stream=stream, host_transfer=host_transfer)
        if plain and self.uses_runtime:
            self._memoize(self._memo, args, decision)

    __call__ = _slow_call  # (the compiled module's once it is built: install_native_call)

    @staticmethod
    def _install_native_call() -> bool:
        return install_native_call()

    def _call_rest(self, args: tuple[Any, ...]) -> None:
        """A plain call (no keywords, no context) that neither a memo nor the newest layout
        entry launched: the compiled base's call ends here (the rest of ``_slow_call``)."""
        if self._fast_auto and len(args) == len(self._params):
            if self._try_fast(args, self._fast_auto, None, None):
                self._memoize(self._memo, args, self._last)
                return
        decision = self.launch(*args)
        if self.uses_runtime:
            self._memoize(self._memo, args, decision)

    def launch(
        self,
        *args: Any,
        config: LaunchConfig | None = None,
        stream: Any = None,
        elements: int | None = None,
        profile: WorkloadProfile | None = None,
        host_transfer: bool = False,
    ) -> LaunchDecision:
        """Launch with ``config`` if given, else an automatic one; returns the decision used."""
        self._check_open()
        dev_args, copies = self._prepare_args(args, host_transfer)
        infos = [array_info(a) for a in dev_args]
        sig = self._check_types(dev_args, infos)
        ck, fast_infos, resources = None, None, _UNKNOWN
        if self.uses_runtime:
            from ..compile.launcher import describe_arg

            fast_infos = [describe_arg(a) for a in dev_args]
            if all(i is not None for i in fast_infos):
                ck = self._compiled_for(dev_args, fast_infos, sig)
                resources = KernelResources(ck.registers_per_thread, ck.shared_mem_per_block, ck.max_threads_per_block)
        if config is None:
            decision = self._plan(dev_args, infos, elements, profile, stream, resources, ck)
        else:
            if not isinstance(config, LaunchConfig):
                raise LaunchConfigError(
                    f"config must be a LaunchConfig, got {type(config).__name__}",
                    kernel_name=self.name,
                    hint="LaunchConfig(grid=..., block=...)",
                )
            if stream is not None:
                config = LaunchConfig(config.grid, config.block, config.shared_mem, stream)
            decision = self._explicit_decision(config, dev_args, infos, resources)
        if ck is not None:
            self._run_compiled(ck, fast_infos, decision.config)  # type: ignore[arg-type]
            if not copies:  # remember what the fast path may repeat
                tkey = tuple(i.type_key for i in fast_infos)  # type: ignore[union-attr]
                c = decision.config
                if config is None and elements is None and profile is None:
                    self._remember(self._fast_auto, self._auto_key(tkey, fast_infos), without_stream(decision))  # type: ignore[arg-type]
                elif config is not None:
                    self._remember(self._fast_explicit, (tkey, c.grid, c.block, c.shared_mem), without_stream(decision))
        else:
            self._run(decision.config, dev_args)
        self._last = decision
        if _hooks.HOOKS:  # the seam: every launch that is not a memo hit ends here or in _try_fast
            _hooks.notify(self.name, decision, decision.config.stream, "auto" if config is None else "explicit")
        for _, host, dev in copies:
            dev.copy_to_host(host)
        return decision

    def _run(self, config: LaunchConfig, args: tuple[Any, ...]) -> None:
        from ..config import SIMULATOR_LOCK, simulator_enabled

        stream = config.stream if config.stream is not None else 0
        try:
            if simulator_enabled():
                # numba's simulator swaps each module's `cuda` for a per-launch fake while a kernel
                # runs: two threads launching at once would read each other's (ringkernel's
                # intrinsics, shared by every kernel, first). It runs blocks one by one anyway.
                if not _SIMULATED_LAUNCHES_LOCKED:
                    _lock_simulated_launches()
                with SIMULATOR_LOCK:
                    self.dispatcher[config.grid, config.block, stream, config.shared_mem](*args)
            else:
                self.dispatcher[config.grid, config.block, stream, config.shared_mem](*args)
        except Exception as exc:
            raise self._translate(exc, config, args) from exc

    def _translate(self, exc: Exception, config: LaunchConfig, args: tuple[Any, ...]) -> Exception:
        from numba.core.errors import TypingError

        if isinstance(exc, TypingError):
            return self._compile_error(args, exc)
        if isinstance(exc, _numba_driver_errors()):
            return launch_error(self.name, config, exc)
        return exc

    # -- introspection ----------------------------------------------------------------
    @property
    def last_config(self) -> LaunchDecision | None:
        """The decision of the most recent launch (``None`` before the first)."""
        return self._last

    def explain(self, *args: Any, elements: int | None = None, profile: WorkloadProfile | None = None) -> str:
        """Why the last launch (or, given arguments, a launch with them) got its configuration."""
        if args or elements is not None or profile is not None:
            return self._plan(args, [array_info(a) for a in args], elements, profile, None).explain()
        if self._last is None:
            return f"kernel '{self.name}' has not been launched yet; pass arguments to see the plan"
        return self._last.explain()

    def __repr__(self) -> str:
        return f"<GpuKernel {self.name}({', '.join(self._params)}) grid_stride={self.grid_stride} mode={self.mode}>"


def _numba_driver_errors() -> tuple[type, ...]:
    """numba's own driver error classes (recognised by class, never by name or text)."""
    classes: list[type] = []
    try:
        from numba.cuda.cudadrv.error import CudaSupportError

        classes.append(CudaSupportError)
        from numba.cuda.cudadrv.driver import CudaAPIError, CudaDriverError

        classes += [CudaAPIError, CudaDriverError]
    except ImportError:  # the simulator's numba.cuda lacks some of them
        pass
    return tuple(classes)


def _is_block(block: Any) -> bool:
    def pos(v: Any) -> bool:
        return bool(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0)

    if isinstance(block, tuple):
        return 1 <= len(block) <= 3 and all(pos(b) for b in block)
    return pos(block)

