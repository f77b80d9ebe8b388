"""``StreamManager``: compute and transfer streams with priorities, named events, async copies.

On a GPU the streams are created with ``cuStreamCreateWithPriority`` as *non-blocking*
streams (they do not synchronise with the legacy default stream, unlike ``cuda.stream()``)
and wrapped with ``numba.cuda.external_stream``, so numba launches and copies, and
``@gpu_kernel(..., stream=...)``, accept them. Under numba's simulator they are plain
simulator streams (priorities and overlap mean nothing there) and events time with the
host clock, since the simulator runs everything synchronously.

Lifetimes (docs/streams.md, "Lifetimes"): a closed ``StreamManager`` or ``Event`` refuses
every method with :class:`~ringkernel.errors.ResourceClosedError` before any driver call.
The check is one attribute read, no lock: ``close()`` must not race with calls on the same
object from other threads. Raw numba streams already handed out by ``stream()`` cannot be
policed: using one after ``close()`` reaches the driver with a destroyed handle.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Coroutine, NoReturn

import numpy as np

from .. import driver
from ..driver import event_done
from ..errors import ConfigurationError, DriverError, ErrorContext, KernelArgumentError, MemorySnapshot, ResourceClosedError

if TYPE_CHECKING:
    from .graph import CapturedGraph

__all__ = ["StreamKind", "StreamId", "StreamConfig", "StreamManager", "Event"]


class StreamKind(Enum):
    COMPUTE = "compute"
    TRANSFER = "transfer"
    DEFAULT = "default"


@dataclass(frozen=True)
class StreamId:
    """``StreamId.compute(i)``, ``StreamId.TRANSFER`` or ``StreamId.DEFAULT``."""

    kind: StreamKind
    index: int = 0

    TRANSFER: ClassVar["StreamId"]
    DEFAULT: ClassVar["StreamId"]

    def __post_init__(self) -> None:
        if not isinstance(self.kind, StreamKind):
            raise ConfigurationError(f"StreamId.kind must be a StreamKind, got {self.kind!r}")
        if isinstance(self.index, bool) or not isinstance(self.index, (int, np.integer)):
            raise ConfigurationError(f"a stream index must be an int, got {self.index!r}")
        object.__setattr__(self, "index", int(self.index))
        if self.index < 0 or (self.kind is not StreamKind.COMPUTE and self.index != 0):
            raise ConfigurationError(f"invalid stream index {self.index} for {self.kind.value}")

    @staticmethod
    def compute(index: int) -> "StreamId":
        return StreamId(StreamKind.COMPUTE, index)

    def __str__(self) -> str:
        return f"Compute({self.index})" if self.kind is StreamKind.COMPUTE else self.kind.value.capitalize()


StreamId.TRANSFER = StreamId(StreamKind.TRANSFER)
StreamId.DEFAULT = StreamId(StreamKind.DEFAULT)


@dataclass(frozen=True)
class StreamConfig:
    """How many streams, and their priorities (lower numbers are higher priority in CUDA)."""

    num_compute_streams: int = 4
    use_transfer_stream: bool = True
    compute_priority: int = 0
    transfer_priority: int = 0
    enable_graph_capture: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.num_compute_streams, int) or not 1 <= self.num_compute_streams <= 64:
            raise ConfigurationError(f"num_compute_streams must be 1..64, got {self.num_compute_streams!r}")


#: A simulated event's stand-in for the numba event (``None`` marks a closed event).
_HOST_CLOCK = object()


class Event:
    """A CUDA event (or, on the simulator, a host timestamp taken when recorded).

    An event is its own resource: it does not depend on the stream it was recorded on, so
    it stays usable after the manager or pool that made it is closed, until its own
    :meth:`close` (or a ``with`` block, or garbage collection). A closed event refuses every
    method with :class:`~ringkernel.errors.ResourceClosedError`.
    """

    def __init__(self, simulated: bool) -> None:
        self.simulated = simulated
        self._t: float | None = None
        if simulated:
            ev: Any = _HOST_CLOCK
        else:
            from numba import cuda

            ev = cuda.event(timing=True)
        # Every method reads ``_ev`` once into a local before checking it: a close() from
        # another thread then cannot pull the numba event from under a driver call.
        self._ev: Any = ev
        # Holds the numba event until close() or collection; numba's own finalizer then
        # destroys the CUevent.
        self._finalizer = weakref.finalize(self, _release_event, [ev])

    def _refuse(self, operation: str) -> NoReturn:
        raise ResourceClosedError("Event", operation=operation)

    @property
    def closed(self) -> bool:
        return self._ev is None

    def record(self, stream: Any) -> None:
        ev = self._ev
        if ev is None:
            self._refuse("record")
        if self.simulated:
            self._t = time.perf_counter()
        else:
            ev.record(stream)

    def query(self) -> bool:
        """True once the work before the record has finished. Raises :class:`DeviceError` if
        that work failed on the GPU (an illegal address, a trap): the error reaches whoever
        awaits the event."""
        ev = self._ev
        if ev is None:
            self._refuse("query")
        if self.simulated:
            return True
        try:
            return event_done(ev)
        except DriverError as exc:  # the driver's answer for failed work (see event_done)
            raise _gpu_failure(exc) from exc

    def synchronize(self) -> None:
        ev = self._ev
        if ev is None:
            self._refuse("synchronize")
        if not self.simulated:
            try:
                driver.event_synchronize(ev)
            except DriverError as exc:
                raise _gpu_failure(exc) from exc

    def wait_on(self, stream: Any) -> None:
        """Make ``stream`` wait for this event (GPU side; the host does not block)."""
        ev = self._ev
        if ev is None:
            self._refuse("wait_on")
        if not self.simulated:
            ev.wait(stream)

    def elapsed_ms(self, end: "Event") -> float:
        start_ev, end_ev = self._ev, end._ev
        if start_ev is None:
            self._refuse("elapsed_ms")
        if end_ev is None:
            end._refuse("elapsed_ms (as the end event)")
        if self.simulated:
            if self._t is None or end._t is None:
                raise ConfigurationError("both events must be recorded before timing them")
            return (end._t - self._t) * 1e3
        from numba import cuda

        return float(cuda.event_elapsed_time(start_ev, end_ev))

    def __await__(self) -> Any:
        if self._ev is None:
            self._refuse("await")
        return _poll(self.query).__await__()

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Release the event (idempotent); a task still awaiting it gets ResourceClosedError."""
        self._ev = None
        self._finalizer()

    def __enter__(self) -> "Event":
        if self._ev is None:
            self._refuse("with")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _release_event(holder: list[Any]) -> None:
    holder.clear()  # the last reference: numba's finalizer queues cuEventDestroy


def _copy(do: Any, operation: str, nbytes: int, sid: StreamId) -> None:
    """Run a numba copy; a driver failure becomes a DriverError with the copy's context."""
    try:
        do()
    except Exception as exc:
        code = getattr(exc, "code", None)
        if type(exc).__module__.startswith("numba") and isinstance(code, int):
            snapshot = None
            try:
                free, total = driver.mem_get_info()
                snapshot = MemorySnapshot(total - free, total)
            except Exception:  # noqa: BLE001 - after a fault the driver may not answer
                pass
            raise DriverError(
                f"{operation} of {nbytes} bytes failed: {driver.error_name(code)}",
                operation=f"{operation} ({nbytes} bytes)",
                result=code,
                result_name=driver.error_name(code),
                hint=driver.error(code, operation).hint,
                context=ErrorContext(f"{operation} ({nbytes} bytes)", stream_id=str(sid), memory=snapshot),
            ) from exc
        raise


def _gpu_failure(exc: DriverError) -> DriverError:
    return DriverError(
        f"GPU work before this event failed: {exc.message}",
        operation=exc.operation,
        result=exc.result,
        result_name=exc.result_name,
        hint="a kernel queued earlier faulted; the CUDA context is unusable after such an error, so "
        "restart the process (run the kernel under compute-sanitizer to find the faulting access)",
    )


async def _await_event(ev: Event) -> None:
    try:
        await ev
    finally:
        ev.close()


async def _poll(done: Any) -> None:
    import asyncio  # imported here: it costs ~20 ms, and only async users need it

    delay = 20e-6
    while not done():
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1e-3)


def _simulated() -> bool:
    """The backend choice; a clear DeviceError when the GPU was chosen and there is none."""
    from ..config import require_backend

    return require_backend()


def _priority_range() -> tuple[int, int]:
    """``(least, greatest)`` stream priorities of the current context, e.g. ``(0, -5)``."""
    if _simulated():
        return (0, 0)
    from numba import cuda

    cuda.current_context()  # the query needs a current context
    return driver.stream_priority_range()


def _refused_priority_range() -> tuple[int, int]:
    raise ResourceClosedError("StreamManager", operation="priority_range")


class _PriorityRange:
    """``StreamManager.priority_range()``: a static query, refused through a closed manager."""

    def __get__(self, obj: "StreamManager | None", owner: type | None = None) -> Callable[[], tuple[int, int]]:
        if obj is not None and obj._closed:
            return _refused_priority_range
        return _priority_range


class StreamManager:
    """Compute streams, an optional transfer stream, and named events between them.

    ``manager.stream(StreamId.compute(0))`` is a numba stream: pass it to numba launches,
    copies and ``@gpu_kernel`` (``kernel(a, b, stream=s)``). ``await manager.wait(id)``
    completes when the stream's queued work has.

    ``close()`` (or the end of a ``with`` block) finishes the queued work and destroys the
    streams; afterwards every method raises
    :class:`~ringkernel.errors.ResourceClosedError` before reaching the driver. Numba
    streams obtained from :meth:`stream` before the close are not policed: do not use them
    after it. Events and captured graphs outlive the manager (see docs/streams.md).
    """

    def __init__(self, config: StreamConfig | None = None) -> None:
        from numba import cuda

        self.config = config or StreamConfig()
        self.simulated = _simulated()
        self._cuda = cuda
        # The one lifetime flag every method reads (an attribute read, no lock).
        self._closed = False
        self._handles: list[int] = []
        self._streams: dict[StreamId, Any] = {}
        self._events: dict[str, Event] = {}
        #: Graphs whose capture block is open on one of these streams: close() ends them first.
        self._capturing: set["CapturedGraph"] = set()
        self._lock = threading.Lock()
        # Registered before the first stream exists, on the list itself: a failure half-way
        # through creating them still destroys the ones made.
        self._finalizer = weakref.finalize(self, _destroy_streams, self._handles)
        if self.simulated:
            make = lambda prio: cuda.stream()  # noqa: E731
        else:
            lo, hi = self.priority_range()
            for name, p in (("compute_priority", self.config.compute_priority), ("transfer_priority", self.config.transfer_priority)):
                if not hi <= p <= lo:
                    raise ConfigurationError(
                        f"{name}={p} is outside this device's range {hi} (highest) .. {lo} (lowest)",
                        hint="lower numbers are higher priority; StreamManager.priority_range() tells the range",
                    )
            make = self._create_stream
        for i in range(self.config.num_compute_streams):
            self._streams[StreamId.compute(i)] = make(self.config.compute_priority)
        if self.config.use_transfer_stream:
            self._streams[StreamId.TRANSFER] = make(self.config.transfer_priority)
        self._streams[StreamId.DEFAULT] = cuda.default_stream()

    def _refuse(self, operation: str) -> NoReturn:
        raise ResourceClosedError("StreamManager", operation=operation)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`: every other method then raises ResourceClosedError."""
        return self._closed

    # -- streams --------------------------------------------------------------------------
    #: ``StreamManager.priority_range()``: ``(least, greatest)`` stream priorities of the
    #: current context, e.g. ``(0, -5)``. Callable on the class; through a closed manager it
    #: raises ResourceClosedError like every other method.
    priority_range = _PriorityRange()

    def _create_stream(self, priority: int) -> Any:
        self._cuda.current_context()
        h = driver.stream_create(priority, non_blocking=True)
        self._handles.append(h)
        return self._cuda.external_stream(h)

    def stream(self, stream_id: StreamId) -> Any:
        """The numba stream for ``stream_id``; valid until :meth:`close` (which cannot recall it)."""
        if self._closed:
            self._refuse("stream")
        try:
            return self._streams[stream_id]
        except KeyError:
            self._no_stream(stream_id)

    def _lookup(self, stream_id: StreamId) -> Any:
        try:
            return self._streams[stream_id]
        except KeyError:
            self._no_stream(stream_id)

    def _no_stream(self, stream_id: StreamId) -> NoReturn:
        have = ", ".join(str(s) for s in self._streams)
        raise ConfigurationError(f"no stream {stream_id}; this manager has {have}") from None

    def stream_handle(self, stream_id: StreamId) -> int:
        """The raw ``CUstream`` (0 for the default stream and on the simulator); destroyed by :meth:`close`."""
        if self._closed:
            self._refuse("stream_handle")
        if self.simulated:
            return 0
        return driver.stream_handle(self._lookup(stream_id)) if stream_id != StreamId.DEFAULT else 0

    def stream_for_workload(self, workload_index: int) -> StreamId:
        """Round-robin over the compute streams."""
        if self._closed:
            self._refuse("stream_for_workload")
        return StreamId.compute(workload_index % self.config.num_compute_streams)

    @property
    def stream_ids(self) -> list[StreamId]:
        if self._closed:
            self._refuse("stream_ids")
        return list(self._streams)

    def sync_stream(self, stream_id: StreamId) -> None:
        if self._closed:
            self._refuse("sync_stream")
        self._lookup(stream_id).synchronize()

    def sync_all(self) -> None:
        if self._closed:  # a destroyed stream handle reaching the driver crashes the process
            self._refuse("sync_all")
        self._sync_all()

    def _sync_all(self) -> None:
        for s in list(self._streams.values()):
            s.synchronize()

    def wait(self, stream_id: StreamId) -> Coroutine[Any, Any, None]:
        """``await manager.wait(id)`` completes when the work queued on ``stream_id`` before
        this call has finished (an event recorded now, polled; released when done)."""
        if self._closed:
            self._refuse("wait")
        stream = self._lookup(stream_id)
        ev = Event(self.simulated)
        ev.record(stream)
        return _await_event(ev)

    def capture(self, stream_id: StreamId) -> "CapturedGraph":
        """A :class:`~ringkernel.streams.graph.CapturedGraph` recording launches on ``stream_id``.

        Needs ``StreamConfig(enable_graph_capture=True)`` and a GPU (the simulator has no graphs).
        The graph outlives the manager; :meth:`close` ends a capture still in progress.
        """
        if self._closed:
            self._refuse("capture")
        if not self.config.enable_graph_capture:
            raise ConfigurationError(
                "graph capture is off for this manager", hint="create it with StreamConfig(enable_graph_capture=True)"
            )
        if self.simulated:
            raise ConfigurationError(
                "numba's simulator has no CUDA graphs", hint="capture on a GPU; on the simulator launch directly"
            )
        from .graph import CapturedGraph

        return CapturedGraph(self._lookup(stream_id), self.stream_handle(stream_id), manager=self)

    # -- events ---------------------------------------------------------------------------
    def record_event(self, name: str, stream_id: StreamId) -> Event:
        """Record (or re-record) the event ``name`` on ``stream_id``.

        The returned :class:`Event` stays usable after the manager closes; if it was closed
        itself, recording the name again makes a new one.
        """
        if self._closed:
            self._refuse("record_event")
        stream = self._lookup(stream_id)
        with self._lock:
            ev = self._events.get(name)
            if ev is None or ev.closed:
                ev = self._events[name] = Event(self.simulated)
        ev.record(stream)
        return ev

    def event(self, name: str) -> Event:
        if self._closed:
            self._refuse("event")
        return self._event(name)

    def _event(self, name: str) -> Event:
        try:
            return self._events[name]
        except KeyError:
            raise ConfigurationError(
                f"no event named {name!r}", hint=f"record it first; recorded: {sorted(self._events)}"
            ) from None

    def stream_wait_event(self, stream_id: StreamId, name: str) -> None:
        """Make ``stream_id`` wait (on the GPU) for event ``name``."""
        if self._closed:
            self._refuse("stream_wait_event")
        self._event(name).wait_on(self._lookup(stream_id))

    def event_elapsed_ms(self, start: str, end: str) -> float:
        if self._closed:
            self._refuse("event_elapsed_ms")
        e = self._event(end)
        e.synchronize()
        return self._event(start).elapsed_ms(e)

    # -- transfers ------------------------------------------------------------------------
    def async_memcpy_htod(self, dst: Any, src: np.ndarray, stream_id: StreamId = StreamId.TRANSFER, *, allow_sync: bool = False) -> None:
        """Copy host ``src`` into device ``dst`` asynchronously on ``stream_id``.

        ``src`` must be pinned (``numba.cuda.pinned_array``): a pageable array cannot be
        copied asynchronously and is refused, unless ``allow_sync=True`` asks for a
        synchronous copy instead.
        """
        if self._closed:
            self._refuse("async_memcpy_htod")
        sid = self._copy_stream(stream_id)
        if not self._is_pinned(src):
            if not allow_sync:
                raise KernelArgumentError(
                    "async_memcpy_htod needs pinned host memory; this array is pageable",
                    kernel_name="StreamManager",
                    hint="allocate it with numba.cuda.pinned_array(shape, dtype), or pass allow_sync=True "
                    "to copy synchronously",
                )
            # on the stream asked for, then waited for: ordered after the work queued there (the
            # manager's streams do not wait for the legacy default stream: an adversarial trial
            # found this copy on stream 0, free to overwrite an input a queued kernel had yet to read)
            stream = self._lookup(sid)
            _copy(lambda: (dst.copy_to_device(src, stream=stream), stream.synchronize()), "memcpy HtoD (synchronous)",
                  src.nbytes, sid)  # fmt: skip
            return
        stream = self._lookup(sid)
        _copy(lambda: dst.copy_to_device(src, stream=stream), "memcpy HtoD", src.nbytes, sid)

    def async_memcpy_dtoh(self, dst: np.ndarray, src: Any, stream_id: StreamId = StreamId.TRANSFER, *, allow_sync: bool = False) -> None:
        """Copy device ``src`` into pinned host ``dst`` asynchronously (see :meth:`async_memcpy_htod`)."""
        if self._closed:
            self._refuse("async_memcpy_dtoh")
        sid = self._copy_stream(stream_id)
        if not self._is_pinned(dst):
            if not allow_sync:
                raise KernelArgumentError(
                    "async_memcpy_dtoh needs pinned host memory; this array is pageable",
                    kernel_name="StreamManager",
                    hint="allocate it with numba.cuda.pinned_array(shape, dtype), or pass allow_sync=True",
                )
            stream = self._lookup(sid)  # (ordered after the stream's work, as above)
            _copy(lambda: (src.copy_to_host(dst, stream=stream), stream.synchronize()), "memcpy DtoH (synchronous)",
                  dst.nbytes, sid)  # fmt: skip
            return
        stream = self._lookup(sid)
        _copy(lambda: src.copy_to_host(dst, stream=stream), "memcpy DtoH", dst.nbytes, sid)

    def _copy_stream(self, stream_id: StreamId) -> StreamId:
        """The stream an async copy runs on: ``stream_id``; the default stream for TRANSFER
        (the copies' default) where the manager has no transfer stream; any other stream it
        does not have is refused, as by every other method (an adversarial trial: a compute
        index out of range went to the default stream silently)."""
        if stream_id in self._streams:
            return stream_id
        if stream_id == StreamId.TRANSFER:
            return StreamId.DEFAULT
        self._no_stream(stream_id)

    def _is_pinned(self, arr: Any) -> bool:
        if not isinstance(arr, np.ndarray):
            raise KernelArgumentError(
                f"expected a NumPy host array, got {type(arr).__name__}", kernel_name="StreamManager"
            )
        if self.simulated:
            return True  # the simulator cannot tell; its copies are synchronous anyway
        return driver.pointer_is_pinned_host(arr.ctypes.data)

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """End any capture in progress, finish the queued work and destroy the streams (idempotent).

        Afterwards every method raises :class:`~ringkernel.errors.ResourceClosedError`. Events
        it made stay usable; captured graphs keep their executable but refuse to replay on
        their (destroyed) capture stream. The streams are destroyed even if finishing the
        work raises (a kernel fault), and that error propagates.
        """
        with self._lock:  # close() is no hot path; the lock makes two racing closes one
            if self._closed:
                return
            self._closed = True
        try:
            for graph in list(self._capturing):
                graph._abort_capture("StreamManager")  # its stream is about to be destroyed
            self._capturing.clear()
            self._sync_all()
        finally:
            self._events.clear()  # forgotten, not closed: an event outlives its stream
            self._finalizer()
            self._streams.clear()

    def __enter__(self) -> "StreamManager":
        if self._closed:
            self._refuse("with")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _destroy_streams(handles: list[int]) -> None:
    while handles:
        h = handles.pop()
        try:
            driver.stream_destroy(h)
        except Exception:  # noqa: BLE001 - the context may be gone at exit; destroy the rest
            pass
