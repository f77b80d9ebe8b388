"""Ranges, marks and annotations: ``GpuProfiler``'s methods for them, ``RangeHandle``, the checks of their arguments."""

from __future__ import annotations

import functools
import logging
import inspect
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any, Callable, Iterator, NoReturn, TypeVar

from ..errors import ConfigurationError, ProfilerError
from ..launch import WorkloadProfile
from . import markers
from .categories import ProfileCategory, TransferDirection
from .events import EventKind, ProfileEvent

__all__ = ["RangeHandle", "RangesMixin"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def _task() -> Any:
    """The running asyncio task, or None (without importing asyncio: no task exists if it is not loaded)."""
    aio = sys.modules.get("asyncio")
    if aio is None:
        return None
    loop = aio._get_running_loop()  # the public get_running_loop() raises outside a loop
    return aio.current_task(loop) if loop is not None else None


class Open:
    """A range between begin and end (internal)."""

    __slots__ = ("id", "name", "category", "start_ns", "track_key", "track_id", "parent_id", "nvtx_id", "args", "ended")

    def __init__(self, id: int, name: str, category: ProfileCategory, start_ns: int, track_key: Any, track_id: int,
                 parent_id: int | None, args: dict[str, Any]) -> None:  # fmt: skip
        self.id, self.name, self.category, self.start_ns = id, name, category, start_ns
        self.track_key, self.track_id, self.parent_id, self.args = track_key, track_id, parent_id, args
        self.nvtx_id: Any = None
        self.ended = False


class RangeHandle:
    """An open range: pass it to :meth:`GpuProfiler.end_range`, or use it as a context manager
    (``with profiler.annotate_memory("staging", n): ...`` ends it at the block's end)."""

    __slots__ = ("_profiler", "_open", "__weakref__")

    def __init__(self, profiler: "RangesMixin | None", open_: Open | None) -> None:
        self._profiler = profiler
        self._open = open_

    @property
    def id(self) -> int:
        """0 for the handles of a disabled profiler (ending them does nothing)."""
        return self._open.id if self._open is not None else 0

    @property
    def name(self) -> str:
        return self._open.name if self._open is not None else ""

    @property
    def ended(self) -> bool:
        return self._open is None or self._open.ended

    def end(self) -> None:
        if self._profiler is not None:
            self._profiler.end_range(self)

    def __enter__(self) -> "RangeHandle":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None or self._profiler is None:
            self.end()
            return
        # an exception is unwinding the block: end this range (and the ones still open inside it,
        # which the exception left) without raising, so the program's own error is the one seen
        # (an adversarial trial: a ProfilerError about the inner range replaced it)
        try:
            self._profiler._end_unwinding(self)
        except Exception as err:  # noqa: BLE001 - never mask the exception in flight
            log.debug("profiler: ending range %r while an exception unwinds: %s", self.name, err)

    def __repr__(self) -> str:
        return f"RangeHandle({self.name!r}, id={self.id}{', ended' if self.ended else ''})"


DISABLED = RangeHandle(None, None)


class _Decorated:
    """``@profiled``'s range around a call: ended as a ``with`` block ends it, except that a
    profiler closed during the call (a program's ``main()`` closing its profiler at the end)
    leaves it be: the decorator sits on application code, which must not fail for it (an
    adversarial trial: ``ResourceClosedError`` from the decorated ``main()``)."""

    __slots__ = ("handle", "profiler")

    def __init__(self, handle: RangeHandle, profiler: Any) -> None:
        self.handle, self.profiler = handle, profiler

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        if not self.profiler._closed:
            self.handle.__exit__(*exc)


def check_bytes(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{what} must be a non-negative integer of bytes, got {value!r}")
    return value


def check_name(name: Any, what: str = "a range name") -> str:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{what} must be a non-empty string, got {name!r}")
    return name


def check_args(args: Any) -> dict[str, Any]:
    """A range's ``args`` as the trace will hold them: a dict of str keys to str, bool, int,
    finite float or None (NumPy scalars become Python numbers). An adversarial trial: a NaN made
    the exported trace invalid JSON, an ``np.int64`` made the export fail and lose the session."""
    import math

    import numpy as np

    if not isinstance(args, dict):
        raise ConfigurationError(f"args must be a dict of str to numbers or strings, got {type(args).__name__}")
    out: dict[str, Any] = {}
    for k, v in args.items():
        if not isinstance(k, str):
            raise ConfigurationError(f"args keys must be strings, got {k!r}")
        if isinstance(v, np.generic) and v.dtype.kind in "biuf":
            v = v.item()
        if v is not None and not isinstance(v, (str, bool, int, float)):
            raise ConfigurationError(f"args[{k!r}] is a {type(v).__name__}: a trace holds numbers, strings, booleans "
                                     "and None", hint=f"pass str(value) or a number for {k!r}")  # fmt: skip
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigurationError(f"args[{k!r}] is {v}: JSON (and so the trace) has no NaN or infinity",
                                     hint="pass None, or the value as a string")  # fmt: skip
        out[k] = v
    return out


def check_category(category: Any) -> ProfileCategory:
    if not isinstance(category, ProfileCategory):
        raise ConfigurationError(
            f"category must be a ProfileCategory, got {category!r}",
            hint="e.g. ProfileCategory.ALGORITHM, or ProfileCategory.custom('name', color=0x123456)",
        )
    return category


class RangesMixin:
    """Methods ``GpuProfiler`` gets for ranges, marks and annotations (see the module docstring)."""

    # Set by GpuProfiler.__init__ (declared here for the type checker).
    enabled: bool
    _closed: bool
    _lock: threading.RLock
    _ids: Iterator[int]
    _stacks: dict[Any, tuple[Open, ...]]
    _ctx: ContextVar[tuple[Open, ...]]
    _inherited: Callable[[], int | None]
    _tracks: dict[Any, tuple[int, str]]
    _open_ranges: dict[int, Open]
    _last: dict[Any, int]
    _kernel_bytes: dict[str, tuple[int | None, int | None]]
    _pools: list[tuple[Any, str]]
    _refuse: Callable[[str], NoReturn]
    _track: Callable[[], tuple[Any, int]]
    _add: Callable[[ProfileEvent], None]
    _sample_pools: Callable[[], None]

    def begin_range(self, name: str, category: ProfileCategory = ProfileCategory.ALGORITHM, *,
                    args: dict[str, Any] | None = None, _payload: Any = None) -> RangeHandle:  # fmt: skip
        """Open a range (also an NVTX range); end it with :meth:`end_range` in the same thread or task."""
        if self._closed:
            self._refuse("begin_range")
        if not self.enabled:
            return DISABLED
        check_name(name)
        check_category(category)
        key, tid = self._track()
        stack = self._stacks.get(key, ())
        t = time.perf_counter_ns()
        op = Open(next(self._ids), name, category, t, key, tid, (stack[-1].id if stack else self._inherited()),
                  check_args(args) if args else {})  # fmt: skip
        op.nvtx_id = markers.start(name, category, _payload)
        self._stacks[key] = stack + (op,)
        self._ctx.set(self._ctx.get() + (op,))  # (child tasks and to_thread see it as their origin)
        self._open_ranges[op.id] = op  # (LaunchCapture.CUPTI finds a launch's parent among them too)
        self._last[key] = t
        return RangeHandle(self, op)

    def end_range(self, handle: RangeHandle) -> None:
        """End a range: the innermost open one of this thread or task.

        Raises :class:`~ringkernel.errors.ProfilerError` when it was already ended, when an
        inner range is still open, when it began in another thread or task, or when the
        handle is not one of this profiler's.
        """
        if self._closed:
            self._refuse("end_range")
        if not isinstance(handle, RangeHandle):
            raise ProfilerError(f"end_range needs a RangeHandle from begin_range, got {handle!r}")
        op = handle._open
        if op is None:
            return  # a disabled profiler's handle
        if handle._profiler is not self:
            raise ProfilerError(f"range {op.name!r} belongs to another profiler", range_name=op.name, range_id=op.id)
        key = self._track()[0]
        stack = self._stacks.get(key, ())
        with self._lock:
            if op.ended:
                raise ProfilerError(f"range {op.name!r} (id {op.id}) was already ended", range_name=op.name,
                                    range_id=op.id, hint="end each range once")  # fmt: skip
            if not stack or stack[-1] is not op:
                if op in stack:
                    inner = ", ".join(repr(o.name) for o in stack[stack.index(op) + 1:])
                    raise ProfilerError(
                        f"range {op.name!r} ended while ranges opened inside it are still open: {inner}",
                        range_name=op.name, range_id=op.id, hint="end the inner ranges first (ranges nest)",
                    )  # fmt: skip
                raise ProfilerError(
                    f"range {op.name!r} (id {op.id}) began in another thread or asyncio task",
                    range_name=op.name, range_id=op.id,
                    hint="end a range in the thread or task that began it",
                )  # fmt: skip
            op.ended = True
        t = time.perf_counter_ns()
        self._stacks[key] = stack[:-1]
        ctx = self._ctx.get()
        if ctx and ctx[-1] is op:
            self._ctx.set(ctx[:-1])
        markers.end(op.nvtx_id)
        nbytes = op.args.get("bytes")
        self._add(ProfileEvent(EventKind.RANGE, op.name, op.category, op.start_ns, t, self._tracks[op.track_key][1],
                               op.track_id, op.id, op.parent_id, op.args, nbytes=nbytes))  # fmt: skip
        self._open_ranges.pop(op.id, None)  # (after the event: a reader in between sees one of the two)
        self._last[op.track_key] = t
        if self._pools:
            self._sample_pools()

    def _end_unwinding(self, handle: RangeHandle) -> None:
        """End ``handle``'s range while an exception unwinds its block: first the ranges opened
        inside it and left open (each marked ``unwound`` in its args), then it; nothing when it
        is not open on this track (ended already, another thread's) or the profiler is closed."""
        op = handle._open
        if self._closed or op is None or op.ended or handle._profiler is not self:
            return
        stack = self._stacks.get(self._track()[0], ())
        if op not in stack:
            return
        for inner in reversed(stack[stack.index(op) + 1:]):
            inner.args["unwound"] = True
            self.end_range(RangeHandle(self, inner))
        self.end_range(handle)

    def range(self, name: str, category: ProfileCategory = ProfileCategory.ALGORITHM) -> RangeHandle:
        """``with profiler.range("step", ProfileCategory.ALGORITHM): ...`` (begins at the call)."""
        return self.begin_range(name, category)

    def profiled(self, fn: F | None = None, *, name: str | None = None,
                 category: ProfileCategory = ProfileCategory.ALGORITHM) -> Any:  # fmt: skip
        """Decorator: each call of a function (``def`` or ``async def``) is a range named after it.

        ``@profiler.profiled`` or ``@profiler.profiled(name="load", category=ProfileCategory.IO)``.
        After ``close()`` the function runs unprofiled: the decorator sits on application code
        (a module-level profiler closed at the end of a run must not break the functions it
        decorated); the profiler's own methods still refuse.
        """
        check_category(category)
        if name is not None:
            check_name(name)

        def wrap(f: F) -> F:
            label: str = name or str(getattr(f, "__qualname__", repr(f)))
            if inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f):
                raise ConfigurationError(
                    f"@profiled cannot time the generator function {label}: its body runs while it is "
                    "iterated, not when it is called", hint="wrap the loop that consumes it in "
                    "`with profiler.range(...)`, or decorate a function that consumes it",
                )  # fmt: skip
            if inspect.iscoroutinefunction(f):

                @functools.wraps(f)
                async def awrapper(*args: Any, **kwargs: Any) -> Any:
                    if self._closed:
                        return await f(*args, **kwargs)
                    with _Decorated(self.begin_range(label, category), self):
                        return await f(*args, **kwargs)

                return awrapper  # type: ignore[return-value]

            @functools.wraps(f)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if self._closed:
                    return f(*args, **kwargs)
                with _Decorated(self.begin_range(label, category), self):
                    return f(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return wrap(fn) if fn is not None else wrap

    # -- annotations ----------------------------------------------------------------------
    def annotate_kernel(self, name: str, *, bytes_per_element: int | None = None, bytes_per_launch: int | None = None,
                        profile: WorkloadProfile | None = None) -> RangeHandle:  # fmt: skip
        """Open a KERNEL range named ``name`` and remember the bytes its launches move.

        The bytes (``bytes_per_launch``, or ``bytes_per_element`` times a launch's elements,
        or the ``profile``'s ``bytes_per_element``) apply to every captured launch of the
        ``@gpu_kernel`` called ``name`` in this session, those made before this call too (the
        last annotation of a name wins); the summary turns them into bandwidth.
        """
        check_name(name, "a kernel name")
        if profile is not None:
            if not isinstance(profile, WorkloadProfile):
                raise ConfigurationError(f"profile must be a WorkloadProfile, got {profile!r}")
            bytes_per_element = bytes_per_element if bytes_per_element is not None else profile.bytes_per_element
        bpe = None if bytes_per_element is None else check_bytes(bytes_per_element, "bytes_per_element")
        bpl = None if bytes_per_launch is None else check_bytes(bytes_per_launch, "bytes_per_launch")
        if self._closed:
            self._refuse("annotate_kernel")
        if bpe is not None or bpl is not None:
            self._kernel_bytes[name] = (bpe, bpl)
        args = {k: v for k, v in (("bytes_per_element", bpe), ("bytes_per_launch", bpl)) if v is not None}
        return self.begin_range(name, ProfileCategory.KERNEL, args=args)

    def annotate_memory(self, operation: str, nbytes: int) -> RangeHandle:
        """Open a MEMORY range for ``operation`` (e.g. ``"allocate staging"``) of ``nbytes`` bytes."""
        check_name(operation, "a memory operation")
        check_bytes(nbytes, "nbytes")
        return self.begin_range(operation, ProfileCategory.MEMORY, args={"bytes": nbytes}, _payload=nbytes)

    def annotate_transfer(self, direction: TransferDirection | str, nbytes: int) -> RangeHandle:
        """Open a MEMORY range for a copy of ``nbytes`` (``"HtoD"``, ``"DtoH"``, ``"DtoD"``, ``"PtoP"``)."""
        d = TransferDirection.parse(direction)
        check_bytes(nbytes, "nbytes")
        return self.begin_range(f"transfer {d.value}", ProfileCategory.MEMORY,
                                args={"bytes": nbytes, "direction": d.value}, _payload=nbytes)  # fmt: skip

    def mark(self, name: str, category: ProfileCategory = ProfileCategory.ALGORITHM) -> None:
        """An instant event (an NVTX mark)."""
        if self._closed:
            self._refuse("mark")
        if not self.enabled:
            return
        check_name(name, "a mark name")
        check_category(category)
        key, tid = self._track()
        stack = self._stacks.get(key, ())
        t = time.perf_counter_ns()
        markers.mark(name, category)
        self._add(ProfileEvent(EventKind.MARK, name, category, t, t, self._tracks[key][1], tid, next(self._ids),
                               (stack[-1].id if stack else self._inherited())))  # fmt: skip
        self._last[key] = t
