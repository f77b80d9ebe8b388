"""The runtime half of ``GpuKernel``: compile through the cache, launch through the driver.

``GpuKernel`` (ringkernel.kernel.core) checks arguments and plans configurations (``autoconfig``,
``explicit``); these methods load the compiled kernel for an argument signature
(``CachingCompiler``), launch it with one ``cuLaunchKernel`` (``KernelLauncher``), and
remember checked launches so that repeats skip every check (the launch memo and the
per-type-key decision tables). Only used on a real GPU; under the simulator launches go
through numba's dispatcher.
"""

from __future__ import annotations

from struct import error as struct_error

import numpy as np
from typing import Any, Callable

from .. import _current
from . import hooks as _hooks
from .args import array_info, describe
from .. import driver
from ..compile.launcher import clear_memo, describe_arg, first_launch, guard_for, native_check_for, register_memo
from ..native import entry_type as native_entry_type
from ..driver import stream_handle
from ..errors import DriverError, ErrorContext, KernelArgumentError, KernelLaunchError, MemorySnapshot
from ..launch import LaunchConfig, LaunchDecision

__all__ = ["RuntimeLaunchMixin", "memo_launch", "launch_error", "numba_type", "DECISION_CACHE_LIMIT"]

DECISION_CACHE_LIMIT = 256
LAYOUT_ENTRIES = 4  # layout entries per kernel (see _add_layout_entry)
GENERATED_ENTRIES = True  # layout entries as generated straight-line code (_generated_launch)
_SCALARS = (bool, int, float, complex, np.generic)


class RuntimeLaunchMixin:
    """Methods ``GpuKernel`` gets for the compiled-kernel runtime (see the module docstring)."""

    # Set by GpuKernel.__init__ (declared here for the type checker).
    name: str
    py_func: Callable[..., None]
    dispatcher: Any
    _jit_options: dict[str, Any]
    _runtime: bool | None
    _compiled: dict[tuple[Any, ...], Any]
    _same_size: tuple[int, ...]
    _elements_index: int | None
    _nd_launch: bool
    _closed: bool
    _memo: dict[tuple[int, ...], tuple[Any, ...]]
    _layouts: list[Any]
    _layout_skip: int
    _layout_pause: int
    _memo_skip: int
    _memo_pause: int
    _check_open: Callable[[], None]
    _last: LaunchDecision | None
    _check_types: Callable[..., tuple[Any, ...] | None]
    _install_native_call: Callable[[], bool]
    #: False: this kernel's launch entries are Python even where the compiled module is loaded.
    _native_entries = True

    @property
    def compile_options(self) -> dict[str, Any]:
        """Options that change the compiled code (part of the cache key)."""
        return dict(self._jit_options)

    @property
    def uses_runtime(self) -> bool:
        """True when launches go through ringkernel's cache and driver launcher (a real GPU, no debug)."""
        if self._runtime is None:
            from ..config import simulator_enabled

            self._runtime = not simulator_enabled() and not self._jit_options["debug"]
        return self._runtime

    def compiled(self, *args: Any) -> Any:
        """The :class:`~ringkernel.compile.CompiledKernel` for these arguments (compiling or loading it)."""
        self._check_open()

        infos = [describe_arg(a) for a in args]
        if any(i is None for i in infos):
            raise KernelArgumentError(
                "compiled() takes device arrays and scalars", kernel_name=self.name,
                details={"arguments": ", ".join(describe(a) for a in args)},
            )  # fmt: skip
        return self._compiled_for(args, infos, self._check_types(args, [array_info(a) for a in args]))

    def _compiled_table(self) -> tuple[dict[tuple[Any, ...], Any], Any]:
        """``(compiled kernels by type key, compiler)`` of the current context (the process's
        defaults outside any ``GpuContext``)."""
        ctx = _current.current()
        if ctx is None:
            return self._compiled, None
        return ctx._compiled_for_kernel(self), ctx.compiler

    def _compiled_for(self, args: tuple[Any, ...], fast_infos: list[Any], sig: tuple[Any, ...] | None) -> Any:
        tkey = tuple(i.type_key for i in fast_infos)
        table, compiler = self._compiled_table()
        ck = table.get(tkey)
        if ck is None:
            self._install_native_call()  # a real GPU: the compiled call (first time: built, ~0.5 s)
            if compiler is None:
                from ..compile.compiler import default_compiler

                compiler = default_compiler()
            argtypes = sig if sig is not None else tuple(numba_type(self.dispatcher, a) for a in args)
            ck = compiler.load_or_compile(
                self.py_func, tuple(argtypes), self.compile_options, self.dispatcher, self.name,
                analyze=_indexing_record,
            )
            ck.owned = True  # the kernel's memo may hold its function: kernel.close() releases it
            table[tkey] = ck
        return ck

    def _memoize(
        self, memo: dict[tuple[int, ...], tuple[Any, ...]], args: tuple[Any, ...], decision: Any, stream: Any = None,
        layout: bool = True,
    ) -> None:  # fmt: skip
        """Remember a checked launch on these very arrays (numba device arrays only).

        The entry is ``(fn, call_args, decision, launcher, infos, config, keepalive)``:
        ``fn(*call_args)`` is the complete ``cuLaunchKernel`` call on ``stream``, with a
        parameter block of the entry's own, packed once. It never changes, so threads may
        launch from it concurrently.
        """

        if _current.active:
            return  # a context's first launch must reach its own compiler
        hooked = bool(_hooks.HOOKS)  # entries made now report their launches to the hooks
        if decision is not None and stream is None and decision.config.stream is not None:
            decision = without_stream(decision)  # the entry launches on the default stream
        key = tuple(map(id, args))
        # Memoise arrays launched before: a memo entry costs a parameter block and weakref
        # bookkeeping that arrays used once (a new array set every call) never pay back.
        # Judged per array (scalars, new objects each call, do not count): ids leave the set
        # when their array dies (before CPython can reuse them), so a new array at an old
        # array's address counts as new; an id reused by a read-every-call object (no weak
        # reference) only makes a memo sooner, which is still correct.
        if decision is None:
            return
        if layout and stream is None and memo is self._memo:
            if self._layout_skip:
                self._layout_skip -= 1  # backing off: more layouts rotate than the entries hold
            else:
                self._add_layout_entry(args, decision, hooked)
        if self._memo_skip:
            self._memo_skip -= 1  # backing off: the memo overflowed with entries never hit
            return
        if first_launch(args):
            return
        infos = [describe_arg(a) for a in args]
        if any(i is None or i.ref is None for i in infos):  # type: ignore[union-attr]
            return  # scalars, arrays read every call: the layout entries serve them
        ck = self._compiled.get(tuple(i.type_key for i in infos))  # type: ignore[union-attr]
        if ck is None:
            return

        if len(memo) >= DECISION_CACHE_LIMIT:
            clear_memo(memo)
            self._memo_overflowed()

        c = decision.config
        lau = ck.launcher
        report = None
        if hooked:  # the entry reports each launch to the hooks
            kind = "auto" if memo is self._memo else "explicit"
            report = (_hooks.notify, self.name, decision if stream is None else with_stream(decision, stream), stream, kind)
        fn, call_args, buf = lau.constant_call(infos, c.grid, c.block, c.shared_mem, stream_handle(stream),
                                               self._native_entries, report)  # fmt: skip
        memo[key] = (fn, call_args, decision, lau, infos, c, buf)
        register_memo(memo, key, args)
        if bool(_hooks.HOOKS) != hooked or _current.active or self._closed or lau.closed:
            memo.pop(key, None)  # a hook came or went, a context or close() arrived meanwhile

    def _add_layout_entry(self, args: tuple[Any, ...], decision: Any, hooked: bool = False) -> None:
        """A layout entry for launches like this one: arguments of the same types, dtypes,
        shapes and strides (any arrays: new ones, CuPy's, PyTorch's) and scalars of the same
        types with any values. At most ``LAYOUT_ENTRIES`` per kernel, newest first; see
        ``_guarded_launch`` for what a call checks."""
        infos = [describe_arg(a) for a in args]
        if any(i is None for i in infos):
            return
        ck = self._compiled.get(tuple([i.type_key for i in infos]))  # type: ignore[union-attr]
        if ck is None:
            return
        lau = ck.launcher
        by_pos = {pos: (pack, off) for pos, pack, off in lau.scalar_slots}
        scalar_slots, guards, stream_checks = [], [], []
        for p, info in enumerate(infos):
            if not info.is_array:  # type: ignore[union-attr]
                if p not in by_pos:
                    return  # complex scalars take two slots: the fast table handles them
                scalar_slots.append((p, type(args[p]), by_pos[p][0], by_pos[p][1]))
                continue
            got = guard_for(args[p])
            if got is None:
                return  # an interface-only type: read through the interface every call
            guard, default_stream = got
            guards.append((p, guard, lau.arg_offsets[p] + 4 * 8))
            if default_stream is not None and default_stream not in stream_checks:
                stream_checks.append(default_stream)
        c = decision.config
        if self._native_entries and native_entry_type() is not None:  # compiled: one C object checks, packs, launches
            buf, _ptrs = lau.pack_constant(infos)
            go = lau.native_entry(
                buf, c.grid, c.block, c.shared_mem, 0,
                tuple([(p, tp, lau.scalar_codes[p], off) for p, tp, _pack, off in scalar_slots]),
                tuple([(p, *native_check_for(args[p], guard), off) for p, guard, off in guards]),
                tuple(stream_checks), decision, _hooks.notify if hooked else None, self.name if hooked else None,
            )  # fmt: skip
        else:
            fn, call_args, buf = lau.constant_call(infos, c.grid, c.block, c.shared_mem, 0, False)
            current = [info if info.ref is not None else None for info in infos]  # type: ignore[union-attr]
            go = _make_entry(fn, call_args, buf, lau, decision, tuple(scalar_slots), tuple(guards),
                             tuple(stream_checks), current, (self.name, decision) if hooked else None)  # fmt: skip
        go.reports, go.launcher = hooked, lau  # type: ignore[attr-defined]  # (hook changes sort entries by them)
        entries = self._layouts
        if len(entries) >= LAYOUT_ENTRIES:
            self._layout_pause = min(2 * self._layout_pause or LAYOUT_ENTRIES, 1 << 16)
            self._layout_skip = self._layout_pause
            entries = entries[: LAYOUT_ENTRIES - 1]
        # one assignment of a new list: a launch on another thread iterates the old one
        self._layouts = [go, *entries]
        if bool(_hooks.HOOKS) != hooked or _current.active or self._closed or lau.closed:
            self._layouts = []  # a hook came or went, a context or close() arrived meanwhile

    def _layout_launch(self, args: tuple[Any, ...], first: Any) -> bool:
        """The rest of a layout-entry launch (``__call__`` tried the first entry: ``first`` is
        what it returned); False: no entry applies. The entry that served moves to the front
        (the next call most likely has its layout)."""
        entries = self._layouts
        if first is None:
            for k in range(1, len(entries)):
                go = entries[k]
                first = go(args)
                if first is not None:
                    self._layouts = [go, *entries[:k], *entries[k + 1 :]]  # one assignment (threads)
                    if bool(_hooks.HOOKS) is not go.reports:
                        self._layouts = []  # a hook came or went meanwhile: this list is the other state's
                    break
            else:
                return False
        else:
            go = entries[0]
        if type(first) is tuple:  # arrays only: a launch-memo entry may serve them next
            first = first[0]
            self._promote(go, args, first)
        self._last = first
        return True

    def _promote(self, go: Any, args: tuple[Any, ...], decision: Any) -> None:
        """Try a launch-memo entry for ``args`` (all arrays) after a layout-entry launch. The
        memo's own rule decides (arrays launched before, with identity records). Attempts
        that make no entry (new arrays every call) back off, doubling after the first 32:
        32 array sets rotating through a kernel all get entries."""
        b = go.backoff
        self._memoize(self._memo, args, decision, layout=False)
        if tuple(map(id, args)) in self._memo:
            return
        b[2] += 1
        if b[2] > 32:
            b[1] = min(2 * b[1] or 1, 1 << 16)
            b[0] = b[1]

    def _memo_overflowed(self) -> None:
        """A memo filled up: more array sets rotate through this kernel than it holds, so new
        entries would be evicted before they are used. Make none for a while, doubling the
        pause at each overflow (making an entry costs several launches' worth of time)."""
        self._memo_pause = min(2 * self._memo_pause or DECISION_CACHE_LIMIT, 1 << 16)
        self._memo_skip = self._memo_pause

    def _auto_key(self, tkey: tuple[Any, ...], infos: list[Any]) -> tuple[Any, ...]:
        """Key of an automatic launch's decision: the element count of a 1-D kernel; every
        array's shape and strides for a 2-D/3-D one (equal sizes can have other shapes)."""
        if self._nd_launch:
            return (tkey, tuple([i.values[5:] for i in infos if i.is_array]))
        if self._elements_index is not None:
            return (tkey, infos[self._elements_index].size)
        return (tkey, max([i.size for i in infos]))

    @staticmethod
    def _remember(table: dict[Any, LaunchDecision], key: Any, decision: LaunchDecision) -> None:
        if len(table) >= DECISION_CACHE_LIMIT:
            table.clear()
        table[key] = decision

    def _run_compiled(self, ck: Any, fast_infos: list[Any], config: LaunchConfig) -> None:

        try:  # a thread's first launch may find no current context: numba's is made current
            driver.in_numba_context(ck.launcher.launch, fast_infos, config.grid, config.block, config.shared_mem,
                                    stream_handle(config.stream))  # fmt: skip
        except DriverError as exc:
            raise launch_error(self.name, config, exc) from exc
        except (struct_error, OverflowError) as exc:
            raise KernelArgumentError(
                f"an argument does not fit the compiled signature ({', '.join(str(t) for t in ck.argtypes)}): {exc}",
                kernel_name=self.name,
            ) from exc

    def _try_fast(self, args: tuple[Any, ...], table: dict[Any, LaunchDecision], extra: Any, stream: Any) -> bool:
        """Repeat a launch the checked path has seen before, with nothing but packing and the driver call."""

        infos: list[Any] = [describe_arg(a) for a in args]
        if None in infos:
            return False
        tkey = tuple([i.type_key for i in infos])
        if extra is None:  # automatic: the element count (1-D) or the shapes (N-D) pick the decision
            if self._same_size:
                first = infos[self._same_size[0]].size
                for j in self._same_size:
                    if infos[j].size != first:
                        return False  # the checked path raises the proper error
            decision = table.get(self._auto_key(tkey, infos))
        else:
            decision = table.get((tkey, *extra))
            if decision is not None:
                n = max([i.size for i in infos])
                if n != decision.elements:  # the table is keyed by types: report this launch's size
                    from dataclasses import replace

                    decision = replace(decision, elements=n)
        if decision is None:
            return False
        ck = (self._compiled_table()[0] if _current.active else self._compiled).get(tkey)
        if ck is None:
            return False  # first launch of this signature in this context: the checked path compiles
        c = decision.config
        try:
            ck.launcher.launch(infos, c.grid, c.block, c.shared_mem, stream_handle(stream) if stream is not None else 0)
        except Exception:
            return False  # let the checked path launch again and raise a proper error
        self._last = decision if stream is None else with_stream(decision, stream)
        if _hooks.HOOKS:
            _hooks.notify(self.name, decision, stream, "auto" if extra is None else "explicit")
        return True


def _guarded_launch(
    fn: Any, call_args: tuple[Any, ...], buf: Any, launcher: Any, decision: Any,
    scalar_slots: tuple[Any, ...], guards: tuple[Any, ...], stream_checks: tuple[Any, ...],
    current: list[Any], report: tuple[str, Any] | None = None,
) -> Callable[[tuple[Any, ...]], Any]:  # fmt: skip
    """The call of a layout entry: ``go(args)`` launches and returns the decision, or returns
    None without launching when a check fails (the caller takes the checked path).

    The entry owns a parameter block, packed once. A call checks each scalar's type is the
    one compiled for and writes its value; for each array, if it is the very array whose
    pointer the block holds (its identity-cache record, which dies with the array, is the
    one remembered in ``current``) nothing is read, else its guard checks type, dtype, shape
    and strides against the entry's and returns its pointer, which is written. Writing into
    the block is only safe on one thread at a time: an entry serves the thread that made it
    (others take the checked fast path with their own buffers) and refuses re-entry (a
    finalizer launching from inside a launch)."""
    import threading
    from struct import Struct

    from ..compile.launcher import IDENTITY_CACHE

    owner = threading.get_ident()
    get_ident = threading.get_ident
    cache_get = IDENTITY_CACHE.get
    pack_ptr = Struct("<Q").pack_into
    busy = False

    def go(args: tuple[Any, ...]) -> Any:
        nonlocal busy
        if busy or get_ident() != owner or launcher.closed:
            return None
        busy = True
        try:
            for pos, tp, pack_into, offset in scalar_slots:
                v = args[pos]
                if type(v) is not tp:
                    return None  # another scalar type: another compiled signature
                pack_into(buf, offset, v)
            for pos, guard, offset in guards:
                x = args[pos]
                info = cache_get(id(x))
                if info is not None and info is current[pos]:
                    continue  # the very array the block holds (the record dies with it)
                ptr = guard(x)
                if ptr is None:
                    return None  # another type, dtype, shape or strides than this entry's
                pack_ptr(buf, offset, ptr)
                current[pos] = info  # x's record if cached (a record is only ever its array's)
            for default_stream in stream_checks:
                if not default_stream():
                    return None  # the producer's stream must be waited for: the checked path does
            if fn(*call_args):
                return None  # the checked path launches again and raises the driver's error
            if report is not None:  # made while launch hooks were registered
                _hooks.notify(report[0], report[1], None, "auto")
            if not scalar_slots:  # arrays only: the caller may try a launch-memo entry
                if backoff[0]:
                    backoff[0] -= 1
                else:
                    return (decision,)
            return decision
        except (struct_error, OverflowError):
            return None  # a value that does not fit: the checked path says so
        finally:
            busy = False

    backoff = [0, 0, 0]  # calls not to suggest a memo entry for; the last pause; attempts made
    go.backoff = backoff  # type: ignore[attr-defined]
    return go


def _generated_launch(
    fn: Any, call_args: tuple[Any, ...], buf: Any, launcher: Any, decision: Any,
    scalar_slots: tuple[Any, ...], guards: tuple[Any, ...], stream_checks: tuple[Any, ...],
    current: list[Any], report: tuple[str, Any] | None = None,
) -> Callable[[tuple[Any, ...]], Any]:  # fmt: skip
    """``_guarded_launch``'s entry as straight-line code made for this entry (as Triton makes
    a launcher per signature): the same checks in the same order, with the loops unrolled and
    every constant bound by name, which saves ~0.1 us per argument on the hot path. Only
    names of objects made here enter the source; no value from the caller is formatted
    into it."""
    import threading
    from struct import Struct

    from ..compile.launcher import IDENTITY_CACHE

    env: dict[str, Any] = {
        "fn": fn, "call_args": call_args, "buf": buf, "launcher": launcher, "decision": decision,
        "owner": threading.get_ident(), "get_ident": threading.get_ident,
        "cache_get": IDENTITY_CACHE.get, "pack_ptr": Struct("<Q").pack_into, "cur": current,
        "backoff": [0, 0, 0], "struct_error": struct_error,
    }  # fmt: skip
    body = []
    for k, (pos, tp, pack_into, offset) in enumerate(scalar_slots):
        env[f"st{k}"], env[f"sp{k}"] = tp, pack_into
        body += [f"v = args[{int(pos)}]", f"if type(v) is not st{k}: return None", f"sp{k}(buf, {int(offset)}, v)"]
    for k, (pos, guard, offset) in enumerate(guards):
        env[f"g{k}"] = guard
        body += [
            f"x = args[{int(pos)}]", "i = cache_get(id(x))", f"if i is None or i is not cur[{int(pos)}]:",
            f"    p = g{k}(x)", "    if p is None: return None", f"    pack_ptr(buf, {int(offset)}, p)",
            f"    cur[{int(pos)}] = i",
        ]  # fmt: skip
    for k, check in enumerate(stream_checks):
        env[f"c{k}"] = check
        body.append(f"if not c{k}(): return None")
    body.append("if fn(*call_args): return None")
    if report is not None:  # made while launch hooks were registered
        env["notify"], env["report_name"], env["report_decision"] = _hooks.notify, report[0], report[1]
        body.append('notify(report_name, report_decision, None, "auto")')
    if scalar_slots:
        body.append("return decision")
    else:
        body += ["if backoff[0]:", "    backoff[0] -= 1", "    return decision", "return (decision,)"]
    src = "def make():\n    busy = False\n    def go(args):\n        nonlocal busy\n"
    src += "        if busy or get_ident() != owner or launcher.closed: return None\n        busy = True\n        try:\n"
    src += "".join(f"            {line}\n" for line in body)
    src += "        except (struct_error, OverflowError): return None\n        finally: busy = False\n"
    src += "    go.backoff = backoff\n    return go\n"
    exec(compile(src, f"<ringkernel layout entry {launcher.name}>", "exec"), env)  # noqa: S102 - see docstring
    return env["make"]()  # type: ignore[no-any-return]


def _make_entry(*args: Any) -> Callable[[tuple[Any, ...]], Any]:
    return _generated_launch(*args) if GENERATED_ENTRIES else _guarded_launch(*args)


def with_stream(decision: LaunchDecision, stream: Any) -> LaunchDecision:
    """``decision`` as launched on ``stream`` (what ``last_config`` reports)."""
    from dataclasses import replace

    c = decision.config
    return replace(decision, config=LaunchConfig(c.grid, c.block, c.shared_mem, stream))


def without_stream(decision: LaunchDecision) -> LaunchDecision:
    """``decision`` with no stream: what the per-signature tables and memos keep."""
    return with_stream(decision, None) if decision.config.stream is not None else decision


def _indexing_record(py_func: Any) -> str:
    from .indexing import analyze_kernel

    return analyze_kernel(py_func).to_json()


def launch_error(kernel_name: str, config: LaunchConfig, exc: Exception) -> KernelLaunchError:
    """The error for a launch the driver refused (numba's dispatcher or ringkernel's launcher),
    with its context: the operation, the stream, the device's memory and what to do."""
    hint = getattr(exc, "hint", None) or (
        "check the configuration against `ringkernel info`; an earlier asynchronous error "
        "(an out-of-bounds access) also surfaces here"
    )
    return KernelLaunchError(
        f"the driver refused the launch grid={config.grid} block={config.block} shared_mem={config.shared_mem}: "
        f"{getattr(exc, 'message', exc)}",
        kernel_name=kernel_name,
        hint=hint,
        details={"grid": config.grid, "block": config.block, "result": getattr(exc, "result", None)},
        context=error_context(f'launch("{kernel_name}")', kernel_name, config.stream),
    )


def error_context(operation: str, kernel_name: str | None, stream: Any) -> ErrorContext:
    """An :class:`~ringkernel.errors.ErrorContext` for an error raised now: the memory snapshot
    is taken if the driver still answers (after a fault it may not)."""
    return ErrorContext(operation, kernel_name, describe_stream(stream), memory_snapshot())


def describe_stream(stream: Any) -> str:
    if stream is None or stream == 0:
        return "default"
    try:
        return f"0x{driver.stream_handle(stream):x}"
    except Exception:  # noqa: BLE001 - only a description
        return repr(stream)


def memory_snapshot() -> MemorySnapshot | None:
    from ..config import simulator_enabled

    if simulator_enabled():
        return None
    try:
        free, total = driver.mem_get_info()
    except Exception:  # noqa: BLE001 - a broken context: no snapshot rather than a second error
        return None
    pool_in_use = None
    ctx = _current.current()
    if ctx is not None and getattr(ctx, "_pool", None) is not None:
        try:
            pool_in_use = int(ctx._pool.diagnostics().in_use_bytes)
        except Exception:  # noqa: BLE001
            pool_in_use = None
    return MemorySnapshot(total - free, total, pool_in_use)


_stream_handle: Any = None


def numba_type(dispatcher: Any, value: Any) -> Any:
    """numba's type for a kernel argument. numba's own arrays carry it (``_numba_type_``, what
    ``typeof`` returns for them), which skips ``typeof``'s first-call dispatch (~0.3 ms in a
    fresh process); everything else goes through ``typeof``."""
    t = getattr(value, "_numba_type_", None)
    return t if t is not None else dispatcher.typeof_pyval(value)


def memo_launch(kernel: Any, m: tuple[Any, ...], stream: Any) -> bool:
    """Launch a launch-memo entry (see ``_memoize``) on another ``stream`` than it was built for.

    A memo entry is found by the arguments' ids and dropped the moment one of its numba
    arrays dies, so it means the very same arrays: no check can fail now. Packs into this
    thread's buffer (the entry's own block is bound to its stream in ``m[1]``).
    """
    global _stream_handle
    if _stream_handle is None:

        _stream_handle = stream_handle
    decision, launcher, infos, c = m[2], m[3], m[4], m[5]
    try:
        launcher.launch(infos, c.grid, c.block, c.shared_mem, _stream_handle(stream) if stream is not None else 0)
    except DriverError:
        return False  # the checked path launches again and raises a translated error
    kernel._last = decision
    if _hooks.HOOKS:
        _hooks.notify(kernel.name, decision, stream, "auto")
    return True
