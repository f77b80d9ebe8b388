"""``GpuContext``: one object owning a device's memory pool, streams and kernel cache.

::

    with GpuContextBuilder().with_memory_pool(PoolConfig.for_compute()).with_streams(4) \\
            .with_ptx_cache_dir("/scratch/kernels").build() as ctx:
        x = ctx.allocate(n, np.float32)          # from the context's pool
        kernel(x, ...)                           # compiled/loaded through the context's cache
        ctx.launch(kernel, x, ..., stream=StreamId.compute(1))
        await ctx.launch_async(kernel, x, ...)   # on the next compute stream, awaited
        ctx.synchronize()

Kernels find the context through ``ringkernel._current`` (a ``ContextVar``, on the lowest
layer): inside ``with ctx:`` and in ``ctx.launch``, a ``@gpu_kernel`` loads and compiles
through the context's ``CachingCompiler`` (its cache directory), not the process-wide one.
Outside any context the process-wide defaults apply, which is what today's code uses.
Compiled kernels are kept per context (a first launch in a context goes through its
cache). Launches inside a context skip the per-argument launch memo (its entries are
shared by all contexts) and use the per-signature fast path instead.

Why a ``ContextVar`` and not a thread-local: asyncio tasks started inside ``with ctx:``
inherit it, and two tasks may use two contexts on one thread.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import _current
from .errors import ConfigurationError, ResourceClosedError

__all__ = ["ContextConfig", "GpuContext", "GpuContextBuilder", "current_context"]


@dataclass(frozen=True)
class ContextConfig:
    """What a :class:`GpuContext` is made of (the builder fills it in).

    Parameters
    ----------
    device:
        CUDA device ordinal. Only 0 (numba's current device) for now: several GPUs come
        with the multi-GPU work, and a context must not silently run on another device.
    pool:
        ``PoolConfig`` of the context's memory pool (``None``: ``PoolConfig.default()``).
    streams:
        Compute streams of its ``StreamManager``.
    profiling:
        Record every launch made in the context (``ctx.launches()``) and profile the context
        with a :class:`~ringkernel.profiling.GpuProfiler` (``ctx.profiler``): its launches,
        GPU-timed, and its pool's allocations and frees.
    cache_dir:
        Directory of its kernel cache (``None``: the default, ``RINGKERNEL_CACHE_DIR`` or
        the platform's cache directory).
    max_recorded_launches:
        Bound of the launch record when profiling.
    """

    device: int = 0
    pool: Any = None
    streams: int = 4
    profiling: bool = False
    cache_dir: Path | None = None
    max_recorded_launches: int = 100_000

    def __post_init__(self) -> None:
        if isinstance(self.device, bool) or not isinstance(self.device, int) or self.device < 0:
            raise ConfigurationError(f"device must be a non-negative int, got {self.device!r}")
        if self.device != 0:
            raise ConfigurationError(
                f"GpuContext(device={self.device}): only device 0 is supported for now",
                hint="select the GPU with CUDA_VISIBLE_DEVICES=<n> so that it becomes device 0",
            )
        if isinstance(self.streams, bool) or not isinstance(self.streams, int) or not 1 <= self.streams <= 64:
            raise ConfigurationError(f"streams must be 1..64, got {self.streams!r}")
        if not isinstance(self.profiling, bool):
            raise ConfigurationError(f"profiling must be True or False, got {self.profiling!r}")
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(os.fspath(self.cache_dir)).expanduser())
        if self.pool is not None:
            from .memory import PoolConfig

            if not isinstance(self.pool, PoolConfig):
                raise ConfigurationError(f"pool must be a PoolConfig, got {type(self.pool).__name__}")
        if isinstance(self.max_recorded_launches, bool) or not isinstance(self.max_recorded_launches, int) or (
            self.max_recorded_launches < 1
        ):
            raise ConfigurationError(f"max_recorded_launches must be a positive int, got {self.max_recorded_launches!r}")


class GpuContextBuilder:
    """``GpuContextBuilder().with_memory_pool(cfg).with_streams(4).with_profiling(True)
    .with_ptx_cache_dir(path).build()`` (design proposal 11.2). Each ``with_`` returns the
    builder; :meth:`build` validates and creates the context."""

    def __init__(self) -> None:
        self._opts: dict[str, Any] = {}

    def with_device(self, device: int) -> "GpuContextBuilder":
        self._opts["device"] = device
        return self

    def with_memory_pool(self, config: Any) -> "GpuContextBuilder":
        self._opts["pool"] = config
        return self

    def with_streams(self, count: int) -> "GpuContextBuilder":
        self._opts["streams"] = count
        return self

    def with_profiling(self, enabled: bool = True) -> "GpuContextBuilder":
        self._opts["profiling"] = enabled
        return self

    def with_ptx_cache_dir(self, path: str | os.PathLike[str]) -> "GpuContextBuilder":
        self._opts["cache_dir"] = path
        return self

    def build(self) -> "GpuContext":
        return GpuContext(config=ContextConfig(**self._opts))


_ids = itertools.count(1)


class GpuContext:
    """A device with its pool, streams and kernel cache (design proposal 11.1).

    ``GpuContext()`` or ``GpuContext(device=0, streams=2, cache_dir=...)``; see
    :class:`ContextConfig` for the options and :class:`GpuContextBuilder` for the builder.
    The pool and the stream manager are created on first use. ``close()`` (or leaving a
    ``with`` block) synchronises, closes them and refuses further use.
    """

    def __init__(self, device: int = 0, *, config: ContextConfig | None = None, **options: Any) -> None:
        if config is None:
            config = ContextConfig(device=device, **options)
        elif options or device != 0:
            raise ConfigurationError("pass either config= or options, not both")
        from .compile import CachingCompiler, PtxCache

        self.config = config
        self.id = next(_ids)
        self.compiler = CachingCompiler(PtxCache(config.cache_dir) if config.cache_dir is not None else None)
        self._pool: Any = None
        self._streams: Any = None
        self._lock = threading.Lock()
        self._compiled: "weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], Any]]" = weakref.WeakKeyDictionary()
        self._launches: collections.deque[Any] = collections.deque(maxlen=config.max_recorded_launches)
        self._hook: int | None = None
        self._rr = itertools.count()
        self._closed = False
        self._tokens: list[Any] = []
        self._telemetry: Any = None
        self._profiler: Any = None
        if config.profiling:
            from .kernel import add_launch_hook
            from .profiling import GpuProfiler

            ref = weakref.ref(self)
            self._hook = add_launch_hook(_Recorder(ref))
            self._profiler = GpuProfiler(f"context {self.id}", launch_filter=lambda: _current.current() is ref())
        # pool, streams, profiler: what the finalizer closes (the profiler first)
        self._parts: list[Any] = [None, None, self._profiler]
        self._finalizer = weakref.finalize(self, _release, self._hook, self._parts)

    # -- parts -----------------------------------------------------------------------
    def _check(self, operation: str) -> None:
        if self._closed:
            raise ResourceClosedError("GpuContext", operation=operation)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def arch(self) -> Any:
        """The device's :class:`~ringkernel.device.GpuArchitecture`."""
        self._check("arch")
        from .device import GpuArchitecture

        return GpuArchitecture.current()

    @property
    def pool(self) -> Any:
        """The context's :class:`~ringkernel.memory.GpuMemoryPool` (created on first use)."""
        self._check("pool")
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    from .memory import GpuMemoryPool

                    self._pool = GpuMemoryPool(self.config.pool)
                    self._parts[0] = self._pool
                    if self._profiler is not None:
                        self._profiler.track_pool(self._pool, "context pool")
        return self._pool

    @property
    def streams(self) -> Any:
        """The context's :class:`~ringkernel.streams.StreamManager` (created on first use)."""
        self._check("streams")
        if self._streams is not None and self._streams.closed:
            raise ResourceClosedError("StreamManager", operation="GpuContext.streams",
                                      hint="the context's streams were closed (`with ctx.streams:` closes them at its "
                                      "end); use them inside that block, or a new GpuContext")  # fmt: skip
        if self._streams is None:
            with self._lock:
                if self._streams is None:
                    from .streams import StreamConfig, StreamManager

                    self._streams = StreamManager(StreamConfig(num_compute_streams=self.config.streams))
                    self._parts[1] = self._streams
        return self._streams

    def _compiled_for_kernel(self, kernel: Any) -> dict[tuple[Any, ...], Any]:
        """The compiled kernels of ``kernel`` loaded through this context (by type key)."""
        self._check("launch")
        table = self._compiled.get(kernel)
        if table is None:
            table = self._compiled.setdefault(kernel, {})
        return table

    # -- the current context -----------------------------------------------------------
    @contextlib.contextmanager
    def use(self) -> Iterator["GpuContext"]:
        """Make this the current context inside the block (without closing it after)."""
        self._check("use")
        if self._profiler is not None and not self._profiler.active:
            self._start_profiler()
        token = _current.CURRENT.set(self)
        _current.active += 1
        try:
            yield self
        finally:
            _current.CURRENT.reset(token)
            _current.active -= 1

    def __enter__(self) -> "GpuContext":
        """``with GpuContext() as ctx:``: current inside the block, closed at its end (the
        outermost block's, where blocks of one context nest; an inner one closed it before)."""
        self._check("__enter__")
        if self._profiler is not None and not self._profiler.active:
            self._start_profiler()
        with self._lock:
            self._tokens.append(_current.CURRENT.set(self))
            _current.active += 1
        return self

    def __exit__(self, *exc: object) -> None:
        # the token this thread or task made (blocks of one context in two tasks or threads
        # overlap and end in any order: popping the last token reset another's, a ValueError that
        # left the context open and every later launch off its fast path; an adversarial trial)
        with self._lock:
            for k in range(len(self._tokens) - 1, -1, -1):
                try:
                    _current.CURRENT.reset(self._tokens[k])
                except ValueError:  # made in another thread's or task's context
                    continue
                del self._tokens[k]
                _current.active -= 1
                break
            else:
                if self._tokens:  # blocks are open, none of them this thread's or task's
                    raise ConfigurationError(
                        "GpuContext.__exit__ outside the thread or asyncio task that entered the block",
                        hint="leave a `with ctx:` block in the thread or task that entered it",
                    )
            last = not self._tokens
        if last:
            self.close()

    # -- convenience (proposal 11.1) ------------------------------------------------------
    def allocate(self, count: int | Sequence[int], dtype: Any = np.float32) -> Any:
        """A :class:`~ringkernel.memory.DeviceArray` of ``count`` elements (or a shape) from the
        context's pool, returned to it when the array and its views are collected."""
        self._check("allocate")
        return self.pool.device_array(count, dtype)

    def compile_kernel(self, fn_or_source: Any, *, signature: Any = None, **options: Any) -> Any:
        """A ``GpuKernel`` from a function or its source text; with ``signature``, compiled
        into this context's cache now (its first launch here then loads it), else compiled
        on its first launch."""
        self._check("compile_kernel")
        from .kernel import GpuKernel, gpu_kernel, kernel_from_source

        if isinstance(fn_or_source, str):
            kernel = kernel_from_source(fn_or_source)
            if options:
                kernel = gpu_kernel(**options)(kernel.py_func)
        elif isinstance(fn_or_source, GpuKernel):
            if options:
                raise ConfigurationError("options apply to functions and source, not to an existing GpuKernel")
            kernel = fn_or_source
        elif callable(fn_or_source):
            kernel = gpu_kernel(**options)(fn_or_source)
        else:
            raise ConfigurationError(f"compile_kernel takes a function or source text, got {type(fn_or_source).__name__}")
        if signature is not None:
            # Into this context's cache now; the first launch here loads it from there (a hit),
            # keyed by the launcher's own reading of the arguments.
            self.compiler.compile(kernel, signature)
        return kernel

    def launch(self, kernel: Any, *args: Any, stream: Any = None, **kwargs: Any) -> Any:
        """Launch ``kernel`` in this context: its compiler and cache; ``stream`` a
        :class:`~ringkernel.streams.StreamId` of the context's streams or any stream object.
        Returns the kernel's ``LaunchDecision``."""
        self._check("launch")
        s = self._resolve_stream(stream)
        with self.use():
            kernel(*args, stream=s, **kwargs)
        return kernel.last_config

    async def launch_async(self, kernel: Any, *args: Any, stream: Any = None, **kwargs: Any) -> Any:
        """Launch on ``stream`` (default: the context's next compute stream, round robin) and
        wait, without blocking the event loop, until the GPU finished it."""
        self._check("launch_async")
        from .streams import StreamId

        if stream is None:
            stream = StreamId.compute(next(self._rr) % self.config.streams)
        elif not isinstance(stream, StreamId) or stream == StreamId.DEFAULT:
            raise ConfigurationError(
                f"launch_async takes a StreamId of the context's streams, got {stream!r}",
                hint="pass StreamId.compute(i) or StreamId.TRANSFER, or nothing (the next compute stream)",
            )
        decision = self.launch(kernel, *args, stream=stream, **kwargs)
        await self.streams.wait(stream)
        return decision

    def synchronize(self) -> None:
        """Wait for all work of the device (every stream, the default one included)."""
        self._check("synchronize")
        if self._streams is not None:
            self._streams.sync_all()
        from .config import simulator_enabled

        if simulator_enabled():
            from numba import cuda

            cuda.synchronize()
        else:
            from . import driver

            driver.ctx_synchronize()  # a fault in queued work raises DriverError here

    def launches(self) -> list[Any]:
        """The :class:`~ringkernel.kernel.LaunchEvent` s of launches made in this context
        (recorded only with ``profiling=True``; the most recent ``max_recorded_launches``)."""
        if not self.config.profiling:
            raise ConfigurationError(
                "this context does not record launches", hint="build it with .with_profiling(True)"
            )
        return list(self._launches)

    @property
    def profiler(self) -> Any:
        """The context's :class:`~ringkernel.profiling.GpuProfiler` (``profiling=True``): active
        from the first time the context is current (``with ctx:``, ``use()``, ``launch``) until
        :meth:`close`, which closes it; it captures the launches made while the context is
        current and every allocation and free of the context's pool."""
        self._check("profiler")
        if self._profiler is None:
            raise ConfigurationError("this context does not profile", hint="build it with .with_profiling(True)")
        return self._profiler

    def _start_profiler(self) -> None:
        with self._lock:
            if not self._profiler.active:
                self._profiler.__enter__()  # left in close()

    def profiling_summary(self, **options: Any) -> Any:
        """``ctx.profiler.summary(**options)``: per-kernel GPU times, streams, ranges."""
        return self.profiler.summary(**options)

    def export_chrome_tracing(self, path: str | os.PathLike[str] | None = None) -> str:
        """``ctx.profiler.export_chrome_tracing(path)``: the context's trace (before :meth:`close`)."""
        return self.profiler.export_chrome_tracing(path)  # type: ignore[no-any-return]

    def enable_telemetry(self, endpoint: str | None = None, meter_provider: Any = None, **options: Any) -> Any:
        """OpenTelemetry metrics of the launches made in this context and of its pool (design
        proposal 11.7): a :class:`~ringkernel.profiling.telemetry.GpuTelemetry`, closed with
        the context. ``endpoint``: an OTLP/HTTP receiver; ``meter_provider``: yours; neither:
        the global provider. Needs ``pip install "ringkernel[telemetry]"``."""
        self._check("enable_telemetry")
        if self._telemetry is not None and not self._telemetry.closed:
            raise ConfigurationError("telemetry is enabled in this context already", hint="close() it first")
        from .profiling.telemetry import GpuTelemetry

        ref = weakref.ref(self)  # the telemetry must not keep the context alive
        self._telemetry = GpuTelemetry(
            meter_provider, endpoint, pool=lambda: getattr(ref(), "_pool", None), context=self, **options
        )
        return self._telemetry

    def _resolve_stream(self, stream: Any) -> Any:
        from .streams import StreamId

        if isinstance(stream, StreamId):
            return None if stream == StreamId.DEFAULT else self.streams.stream(stream)
        return stream

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """Close the profiler (``profiling=True``), synchronise, close the pool and the streams; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._telemetry is not None:
            self._telemetry.close()
        try:
            if self._profiler is not None:
                self._profiler.close()  # waits for the captured launches; unwraps the pool
            if self._streams is not None and not self._streams.closed:  # (the caller may have closed it:
                self._streams.sync_all()  # `with ctx.streams as m:` inside `with ctx:`, an adversarial trial)
        finally:
            self._finalizer()
            self._compiled = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        where = self.config.cache_dir or "default cache"
        return f"<GpuContext #{self.id} device {self.config.device} {state}, {where}>"


class _Recorder:
    """The launch hook of a profiling context: records launches made while it is current."""

    __slots__ = ("ctx",)

    def __init__(self, ctx: Callable[[], GpuContext | None]) -> None:
        self.ctx = ctx

    def __call__(self, event: Any) -> None:
        ctx = self.ctx()
        if ctx is not None and _current.current() is ctx:
            ctx._launches.append(event)


def _release(hook: int | None, parts: list[Any]) -> None:
    if hook is not None:
        from .kernel import remove_launch_hook

        remove_launch_hook(hook)
    pool, streams, profiler = parts
    for part in (profiler, streams, pool):
        if part is not None:
            try:
                part.close()
            except Exception:  # noqa: BLE001 - at exit the CUDA context may be gone first
                pass


def current_context() -> GpuContext | None:
    """The context entered with ``with ctx:`` in this thread or task (``None``: the defaults)."""
    return _current.current()  # type: ignore[no-any-return]
