"""``@elementwise``: one per-element body, a parallel CPU loop and a GPU kernel, the dispatcher between.

::

    @elementwise
    def saxpy(i, a, x, y, out):
        out[i] = a * x[i] + y[i]

    saxpy(np.float32(2), x, y, out)          # NumPy or device arrays; the dispatcher picks the side
    print(saxpy.explain(len(x)))             # which side, and the models' numbers

The body ``f(i, *args)`` must run under both ``numba.njit`` and ``numba.cuda.jit(device=True)``:
indexing, arithmetic and ``math`` functions, no ``cuda.*`` calls. From it are built a
``numba.njit(parallel=True)`` loop (``for i in prange(n)``) and a grid-stride ``@gpu_kernel``.
Array arguments are 1-D, all of one length ``n`` (or at least ``n=`` elements when given);
scalars are passed as they are. Arrays may live on the host (NumPy) or on the device (numba,
CuPy, PyTorch, ringkernel's ``DeviceArray``: anything with ``__cuda_array_interface__``).

Each call returns when its results are in place (as a NumPy call does), so both sides are
timed the same way: the GPU side includes copying host arrays in and the written ones back
and the synchronisation; the CPU side includes copying device arrays to the host and the
written ones back. Which arrays the body writes is read from its bytecode (the analysis
``@gpu_kernel`` uses: stores through a parameter or a view of it, here or in the functions it
calls). The first call of a new argument type on a side compiles; it is not taught to the
models.
"""

from __future__ import annotations

import inspect
import logging
import re
import sys
import threading
import time
import weakref
from typing import Any, Callable

import numpy as np

from ..config import simulator_enabled, simulator_exclusive
from ..errors import ConfigurationError, KernelArgumentError
from .arrays import _device_view, _host_span, _is_device
from .dispatcher import SETTLED_DECISIONS, Decision, HybridConfig, HybridDispatcher
from .targets import for_target
from .written import _written

__all__ = ["elementwise", "HybridKernel", "default_dispatcher"]

log = logging.getLogger(__name__)

_TEACH_EVERY = 4
_LEASED_SIZES = 64  # sizes whose kept decisions a kernel holds (all let go when more come)
_FIXED = frozenset({"mode", "threshold", "no GPU"})  # decisions no model made
_NAMES: "weakref.WeakValueDictionary[str, HybridKernel]" = weakref.WeakValueDictionary()
_names_lock = threading.Lock()
_default: HybridDispatcher | None = None
_default_lock = threading.Lock()


def default_dispatcher() -> HybridDispatcher:
    """The process-wide ``ADAPTIVE`` dispatcher that ``@elementwise`` kernels share unless given one."""
    global _default
    if _default is None:  # the lock only for the first call: this runs on every call of a kernel
        with _default_lock:
            if _default is None:
                _default = HybridDispatcher(HybridConfig())
    return _default


_POOL: Any = None
_pool_lock = threading.Lock()
_SYNC: Any = None


def _staging_pool() -> Any:
    """The pool that stages host arrays for the GPU side (one per process, made on first use)."""
    global _POOL
    if _POOL is None:
        with _pool_lock:
            if _POOL is None:
                from ..memory import GpuMemoryPool

                _POOL = GpuMemoryPool()
    return _POOL


def _synchronize() -> None:
    """Wait for the device: the driver's context synchronisation (numba's ``cuda.synchronize()``
    looks its context up first, several microseconds more); numba's on the simulator."""
    global _SYNC
    if _SYNC is None:
        from ..config import simulator_enabled

        if simulator_enabled():
            from numba import cuda

            _SYNC = cuda.synchronize
        else:
            from .. import driver

            def sync() -> None:
                driver.in_numba_context(driver.ctx_synchronize)

            _SYNC = sync
    _SYNC()


_SIMULATED_GPU_LIMIT = 1 << 12  # elements: above, ADAPTIVE runs the CPU when the "GPU" is numba's simulator


def _cannot_compile(exc: BaseException) -> bool:
    """A first run's failure that says these argument types cannot run on that side: numba's
    compile errors (typing, lowering, an unsupported type such as float16 on the CPU) or the
    launch path refusing an argument."""
    if isinstance(exc, (NotImplementedError, KernelArgumentError, TypeError)):  # (TypeError: the simulator's typing)
        return True
    try:
        from numba.core.errors import NumbaError
    except ImportError:  # pragma: no cover - numba is a dependency
        return False
    return isinstance(exc, NumbaError)


def _reason(exc: BaseException) -> str:
    """The line of an error that says why: numba's typing errors start with the pipeline step
    that failed ("Failed in nopython mode pipeline (step: nopython frontend)"), the reason is
    the next line (an adversarial trial: the message never said what failed)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    why = next((ln for ln in lines if not ln.startswith(("Failed in ", "During:", "File ", "<source"))), None)
    if lines[0].startswith("Failed in ") and why is not None:
        return f"{why} ({lines[0].removeprefix('Failed in ')})"
    return lines[0]


def _describe(a: Any) -> str:
    dtype = getattr(a, "dtype", None)
    return f"{type(a).__name__}[{dtype}]" if dtype is not None and not isinstance(a, np.generic) else type(a).__name__


class _Targets:
    """A body's compiled CPU loop and GPU kernel (built on first use), and the argument types
    each side has run (a first run of a type compiles: it is not taught to the models); shared
    by the kernels :meth:`HybridKernel.with_dispatcher` makes."""

    __slots__ = ("cpu", "gpu", "warm", "lock", "max_threads", "failed", "gpu_elements")

    def __init__(self) -> None:
        self.max_threads = 1  # numba's thread count, read when the CPU loop is built
        self.cpu: Any = None
        self.gpu: Any = None
        #: launch the GPU kernel with elements=n: the body's subscripts do not show which array
        #: the position indexes (it reaches its arrays through zip, a list, ...), so the
        #: automatic launch could not size the grid from an array (it refuses)
        self.gpu_elements = False
        self.warm: set[tuple[str, tuple[Any, ...]]] = set()
        #: (side, argument layout) -> why that side cannot run those types (its first run failed
        #: to compile or launch): the other side runs them where the mode allows
        self.failed: dict[tuple[str, tuple[Any, ...]], KernelArgumentError] = {}
        self.lock = threading.Lock()


class HybridKernel:
    """An ``@elementwise`` body with its CPU loop and GPU kernel; call it like the body without ``i``."""

    def __init__(self, func: Callable[..., Any], dispatcher: HybridDispatcher | None = None, name: str | None = None) -> None:
        if not callable(func):
            raise ConfigurationError(f"@elementwise needs a function, got {func!r}")
        if not inspect.isfunction(func) and inspect.isfunction(getattr(func, "py_func", None)):
            func = func.py_func  # type: ignore[attr-defined]  # a numba dispatcher (@njit, @cuda.jit): its Python function
        if not inspect.isfunction(func):
            raise ConfigurationError(f"@elementwise needs a Python function (def), got {func!r}",
                                     hint="def body(i, x, out): out[i] = 2 * x[i]")  # fmt: skip
        params = list(inspect.signature(func).parameters.values())
        if not params or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
            raise ConfigurationError(
                f"@elementwise body {func.__name__} must take (i, arg1, arg2, ...) with plain positional parameters",
                hint="def body(i, x, out): out[i] = 2 * x[i]",
            )  # fmt: skip
        if dispatcher is not None and not isinstance(dispatcher, HybridDispatcher):
            raise ConfigurationError(f"dispatcher must be a HybridDispatcher, got {dispatcher!r}")
        reserved = [p.name for p in params if p.name.startswith("_rk_")]
        if reserved:
            raise ConfigurationError(f"@elementwise body parameters may not start with _rk_ (the generated loops' names): {reserved}")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigurationError(f"name must be a non-empty str, got {name!r}")
        raiser = _raises(func)
        if raiser is not None:
            raise ConfigurationError(
                f"@elementwise body {func.__name__} can raise (a raise or assert in {raiser}): numba's parallel CPU "
                "loop drops an exception raised in its body and returns with the output half written, and a GPU "
                "kernel cannot raise at all",
                hint="check the inputs before the call (e.g. if (x > 3).any(): raise ...), or write a flag array "
                "the body sets and check it afterwards",
            )  # fmt: skip
        self.func = func
        base: str = name or str(getattr(func, "__name__", "body"))
        with _names_lock:  # a second live kernel of this name gets "name#2": models are kept per name
            self.name: str = base
            k = 1
            while (other := _NAMES.get(self.name)) is not None and other.func is not func:
                k += 1
                self.name = f"{base}#{k}"
            _NAMES[self.name] = self
        self._ident = re.sub(r"\W", "_", self.name)
        self.params = [p.name for p in params[1:]]
        #: the trailing parameters' default values, and how many parameters have none
        self._defaults = tuple(p.default for p in params[1:] if p.default is not p.empty)
        self._required = len(self.params) - len(self._defaults)
        self._last_on_device = False
        self.written, self._cautious = _written(func, self.params)
        self._dispatcher = dispatcher
        self._targets = _Targets()
        #: The decision of the latest call, from whichever thread made it (``None`` before the
        #: first; a program calling from several threads reads its own calls' from ``stats()``
        #: or times them itself).
        self.last_decision: Any = None
        self._taught = 0
        self._first_array = ""
        #: (size, data on the device) -> (dispatcher, the dispatcher's settled entry): decisions
        #: far from a tie reused without asking (HybridDispatcher.lease), while an entry's count
        #: lasts
        self._leases: dict[tuple[int, bool], tuple[HybridDispatcher, list[Any]]] = {}

    @property
    def dispatcher(self) -> HybridDispatcher:
        return self._dispatcher if self._dispatcher is not None else default_dispatcher()

    # -- the two targets ------------------------------------------------------------------------
    def _source(self, target: str) -> str:
        # the generated names start with _rk_ (refused as parameter names): no parameter of the
        # body (n, i, body, cuda, ...) can collide with them
        args = "".join(f", {p}" for p in self.params)
        if target == "cpu":
            # the thread count is set inside the compiled function (numba allows it there):
            # two Python calls of numba.set_num_threads around the loop cost ~4 us a call.
            # numba's parallel loops do not raise from their body, so the restore always runs.
            return (f"def _rk_cpu_{self._ident}(_rk_n, _rk_t{args}):\n"
                    f"    _rk_old = _rk_get_threads()\n"
                    f"    if _rk_t > 0:\n        _rk_set_threads(_rk_t)\n"
                    f"    for _rk_i in _rk_prange(_rk_n):\n"
                    f"        _rk_body(_rk_i{args})\n"
                    f"    _rk_set_threads(_rk_old)\n")  # fmt: skip
        return (f"def _rk_gpu_{self._ident}(_rk_n{args}):\n"
                f"    for _rk_i in range(_rk_cuda.grid(1), _rk_n, _rk_cuda.gridsize(1)):\n"
                f"        _rk_body(_rk_i{args})\n")  # fmt: skip

    def cpu_loop(self) -> Any:
        """The ``numba.njit(parallel=True)`` loop (built on first use)."""
        t = self._targets
        if t.cpu is not None:  # built: no lock (this runs on every CPU call)
            return t.cpu
        with t.lock:
            if t.cpu is None:
                import numba

                t.max_threads = numba.config.NUMBA_NUM_THREADS

                with simulator_exclusive():  # (the simulator swaps `cuda` in module globals during a launch)
                    body = for_target(self.func, "cpu")  # the functions it calls as njit functions
                ns: dict[str, Any] = {"_rk_body": numba.njit(body), "_rk_prange": numba.prange,
                                      "_rk_get_threads": numba.get_num_threads, "_rk_set_threads": numba.set_num_threads}
                exec(compile(self._source("cpu"), f"<elementwise {self.name} cpu>", "exec"), ns)  # noqa: S102
                t.cpu = numba.njit(parallel=True)(ns[f"_rk_cpu_{self._ident}"])
            return t.cpu

    def gpu_kernel(self) -> Any:
        """The grid-stride ``GpuKernel`` (built on first use)."""
        t = self._targets
        if t.gpu is not None:  # built: no lock (this runs on every GPU call)
            return t.gpu
        with t.lock:
            if t.gpu is None:
                from numba import cuda

                from ..kernel import GpuKernel

                with simulator_exclusive():  # (the simulator swaps `cuda` in module globals during a launch)
                    body = for_target(self.func, "gpu")  # the functions it calls as device functions
                ns: dict[str, Any] = {"_rk_body": cuda.jit(device=True)(body), "_rk_cuda": cuda}
                exec(compile(self._source("gpu"), f"<elementwise {self.name} gpu>", "exec"), ns)  # noqa: S102
                fn = ns[f"_rk_gpu_{self._ident}"]
                gk = GpuKernel(fn, grid_stride=True, elements=self._first_array)
                gk.name = self.name  # (errors, profiles and traces name the body, not the generated loop)
                from ..errors import LaunchConfigError
                from ..kernel.planning import require_exact_1d

                try:
                    require_exact_1d(self.name, gk.indexing)
                except LaunchConfigError:  # (an adversarial trial: a body zipping its arrays was refused)
                    t.gpu_elements = True
                t.gpu = gk
            return t.gpu

    def with_dispatcher(self, dispatcher: HybridDispatcher) -> "HybridKernel":
        """This body under another dispatcher (another mode, its own models and statistics),
        sharing the compiled CPU loop and GPU kernel: nothing is compiled again, and launches
        from either reuse the GPU kernel's launch caches (two modes of one body compared in
        one program run the very same code)."""
        if not isinstance(dispatcher, HybridDispatcher):
            raise ConfigurationError(f"dispatcher must be a HybridDispatcher, got {dispatcher!r}")
        k = HybridKernel(self.func, dispatcher, self.name)
        k._targets = self._targets
        return k

    def explain(self, size: int, *, data_on_device: bool | None = None) -> Any:
        """:meth:`HybridDispatcher.explain` for this kernel; ``data_on_device=None``: where the
        data of its latest call was (the host before any call)."""
        if data_on_device is None:
            data_on_device = self._last_on_device
        return self.dispatcher.explain(size, kernel=self.name, data_on_device=data_on_device)

    # -- a call -----------------------------------------------------------------------------------
    def _check(self, args: tuple[Any, ...], n: int | None) -> tuple[int, list[int], bool, tuple[Any, ...], tuple[int, ...]]:
        if len(args) != len(self.params):
            raise KernelArgumentError(
                f"{self.name} takes {len(self.params)} arguments ({', '.join(self.params)}), got {len(args)}",
                kernel_name=self.name,
            )  # fmt: skip
        arrays: list[int] = []
        sizes: list[int] = []
        spans: dict[int, Any] = {}  # device arrays' spans, read once (host ones when needed)
        device = False
        # what numba compiles a new version for: type, dtype, layout, writability
        layout: list[Any] = []
        written = self.written
        for name, a in zip(self.params, args):
            if isinstance(a, np.ndarray):
                if type(a) is not np.ndarray and isinstance(a, np.ma.MaskedArray):
                    raise KernelArgumentError(
                        f"array {name!r} is a masked array: neither side knows its mask",
                        kernel_name=self.name, hint="pass a.filled(value) (or a.data to ignore the mask)",
                    )  # fmt: skip
                shape = a.shape
                if len(shape) != 1:
                    raise KernelArgumentError(
                        f"array {name!r} has shape {shape}; @elementwise takes 1-D arrays",
                        kernel_name=self.name, hint="pass x.reshape(-1) (a contiguous array) and index it flat",
                    )  # fmt: skip
                flags = a.flags
                if name in written and not flags.writeable:
                    why = "" if self._cautious is None else f" ({self._cautious}: arrays it may write count as written)"
                    raise KernelArgumentError(f"array {name!r} is written by the body but is read-only{why}",
                                              kernel_name=self.name, hint="pass a writable array")  # fmt: skip
                layout.append((np.ndarray, a.dtype, flags.c_contiguous, flags.writeable))
                arrays.append(len(sizes))
                sizes.append(shape[0])
            elif a is None:
                raise KernelArgumentError(f"argument {name!r} is None", kernel_name=self.name,
                                          hint="pass an array or a number")  # fmt: skip
            elif isinstance(a, (bool, int, float, complex, np.generic)):
                if isinstance(a, int) and not isinstance(a, bool) and not -(1 << 63) <= a < (1 << 63):
                    # numba's CPU side cannot take it (a raw OverflowError there, uint64 on the GPU)
                    raise KernelArgumentError(
                        f"argument {name!r} is the integer {a}, outside int64: the two sides would not agree "
                        "on its type", kernel_name=self.name,
                        hint="pass np.uint64(value) for an unsigned 64-bit value, or a float",
                    )  # fmt: skip
                sizes.append(-1)
                layout.append((type(a), getattr(a, "dtype", None)))
            elif _is_device(a) and (view := _device_view(a)) is not None:
                shape, contiguous, where, dtype = view
                if len(shape) != 1:
                    raise KernelArgumentError(
                        f"array {name!r} has shape {shape}; @elementwise takes 1-D arrays",
                        kernel_name=self.name, hint="pass x.reshape(-1) (a contiguous array) and index it flat",
                    )  # fmt: skip
                if not contiguous and self.dispatcher.config.mode.kind != "gpu_only":
                    raise KernelArgumentError(
                        f"device array {name!r} is not contiguous: the CPU side cannot copy it to the host",
                        kernel_name=self.name, hint="pass a contiguous device array (copy the view first), "
                        "or run the body under ProcessingMode.GPU_ONLY, where strided device arrays are fine",
                    )  # fmt: skip
                layout.append((type(a), dtype, contiguous, True))
                spans[len(sizes)] = where
                arrays.append(len(sizes))
                sizes.append(shape[0])
                device = True
            else:
                raise KernelArgumentError(
                    f"argument {name!r} is a {type(a).__name__}: @elementwise takes arrays (NumPy or device) and numbers",
                    kernel_name=self.name, hint="pass a NumPy array (e.g. a CPU tensor's .numpy()), a device array "
                    "(numba, CuPy, a CUDA tensor) or a number",
                )  # fmt: skip
        if not arrays:
            raise KernelArgumentError(f"{self.name} got no array argument", kernel_name=self.name)
        if n is None:
            n = sizes[arrays[0]]
            for i in arrays:
                if sizes[i] != n:
                    got = {self.params[j]: sizes[j] for j in arrays}
                    raise KernelArgumentError(
                        f"{self.name}'s arrays differ in length {got}: which n is meant is not clear",
                        kernel_name=self.name, hint="pass arrays of one length, or n= (every array at least n long)",
                    )  # fmt: skip
        else:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
                raise KernelArgumentError(f"n must be a non-negative int, got {n!r}", kernel_name=self.name)
            short = {self.params[i]: sizes[i] for i in arrays if sizes[i] < n}
            if short:
                raise KernelArgumentError(f"n={n} but arrays {short} are shorter", kernel_name=self.name)
            n = int(n)
        self._first_array = self.params[arrays[0]]
        if len(arrays) > 1:
            return n, arrays, device, tuple(layout), self._check_aliasing(args, arrays, spans)
        return n, arrays, device, tuple(layout), ()

    def _check_aliasing(self, args: tuple[Any, ...], arrays: list[int], spans: dict[int, Any]) -> tuple[int, ...]:
        """Refuse arguments that share memory where the result would depend on the side: two
        written ones, or a written one overlapping another view that is not the very same view
        (each side copies arrays separately, and the CPU loop runs in parallel). Returns the
        positions of inputs that are the very array a written argument is: the call reads a
        snapshot of them (as NumPy's ``out=``: the inputs as they were before the call)."""
        snap: list[int] = []
        for x, i in enumerate(arrays):
            a = args[i]
            host_a = i not in spans
            for j in arrays[x + 1:]:
                b = args[j]
                host_b = j not in spans
                if host_a != host_b or (host_a and not np.may_share_memory(a, b)):
                    continue  # host and device memory never overlap; may_share_memory: bounds only, fast
                si = spans[i] if not host_a else _host_span(a)
                sj = spans[j] if not host_b else _host_span(b)
                if si is None or sj is None or si[1] >= sj[2] or sj[1] >= si[2] or _interleaved(si, sj):
                    continue
                pi, pj = self.params[i], self.params[j]
                wi, wj = pi in self.written, pj in self.written
                same_view = si == sj
                if (wi and wj) or ((wi or wj) and not same_view):
                    raise KernelArgumentError(
                        f"arguments {pi!r} and {pj!r} share memory and the body writes "
                        f"{' and '.join(repr(p) for p, w in ((pi, wi), (pj, wj)) if w)}: the result would "
                        "depend on which side runs the call", kernel_name=self.name,
                        hint="pass separate arrays (e.g. a copy of the input); the very same array as an "
                        "input and the output is fine (the input is read as it was before the call)",
                    )  # fmt: skip
                if wi or wj:
                    # the same array in and out: the CPU loop would update it in place, in
                    # parallel (and numba assumes its arguments do not overlap), the GPU side of
                    # host data read a copy: a snapshot of the input makes both read it as it was
                    snap.append(j if wi else i)
        return tuple(snap)

    @staticmethod
    def _snapshot(args: tuple[Any, ...], positions: tuple[int, ...]) -> tuple[Any, ...]:
        """``args`` with the inputs at ``positions`` copied where they are (host or device)."""
        out = list(args)
        for p in set(positions):
            a = args[p]
            if isinstance(a, np.ndarray):
                out[p] = a.copy()
                continue
            from numba import cuda

            # numba's (and the simulator's) arrays as they are; ringkernel's DeviceArray through
            # its own numba view (the simulator has no as_cuda_array: an adversarial trial's
            # AttributeError); CuPy's, PyTorch's through a numba view of their memory (no copy)
            if type(a).__module__.startswith("numba"):
                src = a
            elif hasattr(a, "as_numba"):
                src = a.as_numba()
            else:
                src = cuda.as_cuda_array(a)
            c = cuda.device_array(tuple(src.shape), src.dtype)
            c.copy_to_device(src)  # device to device
            out[p] = c
        return tuple(out)

    def __call__(self, *args: Any, n: int | None = None, **by_name: Any) -> None:
        if by_name:
            raise KernelArgumentError(
                f"{self.name} takes its arguments by position ({', '.join(self.params)}); got "
                f"{', '.join(repr(k) for k in by_name)} by name", kernel_name=self.name,
                hint=f"call {self.name}({', '.join(self.params)}) in that order; only n= is a keyword",
            )  # fmt: skip
        if len(args) < len(self.params) and len(args) >= self._required:
            args = args + self._defaults[len(args) - len(self.params):]  # the body's default values
        size, arrays, on_device, layout, snap = self._check(args, n)
        self._last_on_device = on_device
        if size == 0:
            return  # nothing to run, nothing to learn
        if snap:
            args = self._snapshot(args, snap)
        d = self.dispatcher
        # a decision the dispatcher keeps for this size, held per size (a program cycling through
        # a few sizes asks the dispatcher once per kept run of each, not at every change of size)
        held = self._leases.get((size, on_device))
        if held is not None and held[0] is d and (entry := held[1])[2] > 0 and not entry[4]:
            entry[2] -= 1  # (not under the dispatcher's lock: at worst a call more or less)
            entry[5].last_n = size  # (the previous size, for the dispatcher's next decision)
            decision = self.last_decision = entry[0]
            asked = False
        else:
            asked = True
            decision = self.last_decision = d.decide(size, kernel=self.name, data_on_device=on_device)
            if decision is SETTLED_DECISIONS[decision.use_gpu]:
                kept = d.lease(size, kernel=self.name, data_on_device=on_device)
                if kept is not None:
                    if len(self._leases) >= _LEASED_SIZES:
                        self._leases.clear()
                    self._leases[size, on_device] = (d, kept)
            elif self._leases:
                self._leases.clear()  # (a probe of this thread pairs with its next decision: every call asks)
        reason = decision.reason
        use_gpu = decision.use_gpu
        targets = self._targets
        types_key = ("gpu" if use_gpu else "cpu", layout)
        if use_gpu and size > _SIMULATED_GPU_LIMIT and self._may_switch(reason) and simulator_enabled():
            # numba's simulator runs a kernel thread by thread in Python (tens of microseconds an
            # element): ADAPTIVE exploring it at a million elements would take minutes
            use_gpu, reason = False, "simulator"
            types_key = ("cpu", layout)
            self.last_decision = Decision(False, reason)
        if targets.failed and types_key in targets.failed:  # this side cannot run these types
            use_gpu = self._other_side(use_gpu, reason, layout)
            types_key = ("gpu" if use_gpu else "cpu", layout)
            reason = "fallback"
            self.last_decision = Decision(use_gpu, reason)
        warm = types_key in targets.warm
        t0 = time.perf_counter()
        try:
            if use_gpu:
                self._run_gpu(args, arrays, size)
            else:
                self._run_cpu(args, arrays, size)
        except Exception as exc:  # noqa: BLE001 - only a first run's compile or launch failure is handled
            if warm or not _cannot_compile(exc):
                raise
            targets.failed[types_key] = err = self._side_error(use_gpu, args, exc)
            if reason == "fallback" or not self._may_switch(reason):
                raise self._both_failed(layout) from exc
            log.warning("%s; the other side runs these argument types from now on", str(err).splitlines()[0])
            return self(*args, n=n)  # (the call again: decided anew, it falls back to the other side)
        seconds = time.perf_counter() - t0
        targets.warm.add(types_key)
        if reason in ("fallback", "simulator"):  # not the dispatcher's choice: counted, nothing taught
            (d.record_gpu_execution if use_gpu else d.record_cpu_execution)(seconds, kernel=self.name,
                                                                            data_on_device=on_device)  # fmt: skip
            return
        record = d.record_gpu_execution if use_gpu else d.record_cpu_execution
        probe = reason != "model"
        # Every probe teaches the models; of the calls the models decided, one in four (enough
        # to follow drift, and a microsecond less on the others, which matters at small sizes);
        # where the dispatcher keeps a decision far from a tie, the call that asked it (about one
        # in 32: a held decision's calls do no dispatcher work at all); a fixed mode's calls
        # teach nothing (no model decides there: counts and times only).
        if decision is SETTLED_DECISIONS[use_gpu]:
            taught = asked  # (the extra work of a call then falls in one call of a run, not two)
        else:
            self._taught += 1
            taught = self._taught % _TEACH_EVERY == 0
        teach = warm and reason not in _FIXED and (probe or taught)
        record(seconds, size=size if teach else None, kernel=self.name, data_on_device=on_device, probe=probe)

    @staticmethod
    def _may_switch(reason: str) -> bool:
        """Whether a call the dispatcher put on a side that cannot run its types may run on the
        other: not where the mode names the side (GPU_ONLY, CPU_ONLY) or there is no GPU."""
        return reason not in ("mode", "no GPU")

    def _other_side(self, use_gpu: bool, reason: str, layout: tuple[Any, ...]) -> bool:
        if not self._may_switch(reason) or ("cpu" if use_gpu else "gpu", layout) in self._targets.failed:
            raise self._both_failed(layout)  # (this side's error alone where the other has not failed)
        return not use_gpu

    def _side_error(self, use_gpu: bool, args: tuple[Any, ...], exc: BaseException) -> KernelArgumentError:
        side = "GPU" if use_gpu else "CPU"
        kinds = ", ".join(f"{p}: {_describe(a)}" for p, a in zip(self.params, args))
        first = _reason(exc)
        hint = ("the body must compile for both sides with these types, or choose the side that can: "
                f"ProcessingMode.{'CPU' if use_gpu else 'GPU'}_ONLY")
        if not use_gpu and "float16" in str(exc) + kinds:
            hint = "numba's CPU compiler has no float16: cast to float32, or use ProcessingMode.GPU_ONLY"
        return KernelArgumentError(f"{self.name} cannot run on the {side} with these arguments ({kinds}): "
                                   f"{type(exc).__name__}: {first}", kernel_name=self.name, hint=hint)  # fmt: skip

    def _both_failed(self, layout: tuple[Any, ...]) -> KernelArgumentError:
        errs = [self._targets.failed[k] for k in (("cpu", layout), ("gpu", layout)) if k in self._targets.failed]
        if len(errs) == 1:
            return errs[0]
        prefix = f"kernel {self.name!r}: {self.name} "
        why = [str(e).splitlines()[0].removeprefix(prefix) for e in errs]
        return KernelArgumentError(
            f"{self.name} cannot run with these arguments on either side: " + "; ".join(why),
            kernel_name=self.name, hint="check that each argument the body indexes is an array and each number "
            "a scalar of a type both numba's CPU and CUDA compilers take (float32/64, int32/64, bool)",
        )  # fmt: skip

    def _run_cpu(self, args: tuple[Any, ...], arrays: list[int], n: int) -> None:
        loop = self.cpu_loop()
        host = list(args)
        back = []
        for i in arrays:
            a = args[i]
            if not isinstance(a, np.ndarray):
                if hasattr(a, "copy_to_host"):  # numba's, ringkernel's DeviceArray, the simulator's
                    dev = a
                else:
                    from numba import cuda

                    dev = cuda.as_cuda_array(a)  # CuPy, PyTorch, any interface: a numba view, no copy
                host[i] = dev.copy_to_host()
                if self.params[i] in self.written:
                    back.append((dev, host[i]))
        threads = self.dispatcher.config.cpu_threads  # (a property: the given or the shared dispatcher)
        loop(n, min(threads, self._targets.max_threads) if threads is not None else 0, *host)
        for dev, h in back:
            dev.copy_to_device(h)

    def _run_gpu(self, args: tuple[Any, ...], arrays: list[int], n: int) -> None:
        kernel = self.gpu_kernel()
        dev = list(args)
        back = []
        for i in arrays:
            a = args[i]
            if isinstance(a, np.ndarray):
                # staged through a pooled device array (a cuMemAlloc and its free per array and
                # call cost far more than the copy at small sizes); a strided view is gathered first
                try:
                    d = dev[i] = _staging_pool().device_array(a.shape, a.dtype)
                except ConfigurationError as exc:  # a dtype device arrays do not hold (datetimes, ...):
                    # these argument types cannot run on this side (ADAPTIVE falls back to the CPU)
                    raise KernelArgumentError(
                        f"argument '{self.params[i]}' ({_describe(a)}) cannot be staged to the GPU: "
                        f"{str(exc).splitlines()[0]}", kernel_name=self.name,
                        hint="run it on the CPU (ProcessingMode.CPU_ONLY), or pass a dtype both sides take",
                    ) from exc
                if a.size:
                    d.copy_to_device(a if a.flags.c_contiguous else np.ascontiguousarray(a))
                if self.params[i] in self.written:
                    back.append((d, a))
        # the copies and the kernel are all on the legacy default stream (a launch without
        # stream=, in a GpuContext too): in order, and a copy to the host waits for the kernel
        if self._targets.gpu_elements:
            kernel(n, *dev, elements=n)  # (the grid-stride loop covers n whatever the grid)
        else:
            kernel(n, *dev)
        for d, h in back:
            if h.flags.c_contiguous:
                d.copy_to_host(h)
            else:
                h[...] = d.copy_to_host()
        if not back:  # nothing copied back that waited for the kernel: wait here
            _synchronize()

    def __repr__(self) -> str:
        return f"<elementwise {self.name}({', '.join(self.params)}), writes {sorted(self.written)}>"


def _codes(code: Any) -> list[Any]:
    """A code object and those nested in it (inner functions, comprehensions)."""
    out, todo = [], [code]
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(k for k in c.co_consts if inspect.iscode(k))
    return out


def _raises(func: Any, seen: set[int] | None = None) -> str | None:
    """The name of ``func`` or of a Python function it calls (through its globals, closure or
    nested functions) whose code has a ``raise`` or ``assert``, else None. (An adversarial
    trial: a raising body returned normally on the CPU side with its output half written.)"""
    import dis

    seen = set() if seen is None else seen
    code = getattr(func, "__code__", None)
    if code is None or id(code) in seen:
        return None
    seen.add(id(code))
    codes = _codes(code)  # (inner functions and comprehensions too)
    for c in codes:
        if any(ins.opname == "RAISE_VARARGS" for ins in dis.get_instructions(c)):
            return f"{getattr(func, '__name__', '?')}" + (f" ({c.co_name})" if c is not code else "")
    glb = getattr(func, "__globals__", {})
    # the globals the code loads (co_names also holds attribute names: math.sqrt is not the
    # module's own sqrt, a review's false refusal)
    names = {ins.argval for c in codes for ins in dis.get_instructions(c) if ins.opname == "LOAD_GLOBAL"}
    called = [glb.get(n) for n in names]
    for cell in getattr(func, "__closure__", None) or ():
        try:
            called.append(cell.cell_contents)
        except ValueError:
            pass
    for f in called:
        f = getattr(f, "py_func", f)  # (an @njit or @cuda.jit helper: its Python function)
        if inspect.isfunction(f):
            got = _raises(f, seen)
            if got is not None:
                return got
    return None


def _interleaved(si: tuple[Any, ...], sj: tuple[Any, ...]) -> bool:
    """True where two 1-D spans (memory space, first byte, end byte, (shape, strides)) whose
    bounds overlap share no byte: elements a common step apart that fall between each other's
    (``x[0::2]`` and ``x[1::2]``). False where unsure (other steps): the caller refuses then."""
    (shape_i, strides_i), (shape_j, strides_j) = si[3], sj[3]
    if len(shape_i) != 1 or len(shape_j) != 1 or not shape_i[0] or not shape_j[0]:
        return False
    step = abs(int(strides_i[0]))
    if step != abs(int(strides_j[0])) or step == 0:
        return False
    item_i = si[2] - si[1] - (shape_i[0] - 1) * step  # (the span ends one element past the last)
    item_j = sj[2] - sj[1] - (shape_j[0] - 1) * step
    r = (sj[1] - si[1]) % step  # where j's elements fall between i's, from an element of i
    return item_i <= r and step - r >= item_j


def elementwise(func: Callable[..., Any] | None = None, *, dispatcher: HybridDispatcher | None = None,
                name: str | None = None) -> Any:  # fmt: skip
    """Decorate a per-element body ``f(i, *args)``: returns a :class:`HybridKernel`.

    ``dispatcher``: a :class:`HybridDispatcher` (default: one shared ``ADAPTIVE`` dispatcher).
    """
    if func is None:
        return lambda f: HybridKernel(f, dispatcher, name)
    return HybridKernel(func, dispatcher, name)


# A profiler active before this module was imported wraps its CPU side now (ringkernel.profiling
# wraps it on activation only where this module is loaded; looked up, not imported: a program
# that never profiles does not load the profiler for it).
_capture = sys.modules.get("ringkernel.profiling.capture")
if _capture is not None:
    _capture.refresh()
