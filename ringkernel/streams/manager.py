"""``StreamManager``: compute and transfer streams with priorities, named events, async copies.

On a GPU the streams are created with ``cuStreamCreateWithPriority`` as *non-blocking*
streams (they do not synchronise with the legacy default stream, unlike ``cuda.stream()``)
and wrapped with ``numba.cuda.external_stream``, so numba launches and copies, and
``@gpu_kernel(..., stream=...)``, accept them. Under numba's simulator they are plain
simulator streams (priorities and overlap mean nothing there) and events time with the
host clock, since the simulator runs everything synchronously.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import numpy as np

from .. import driver
from ..driver import event_done
from ..errors import ConfigurationError, DeviceError, DriverError, KernelArgumentError

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


class Event:
    """A CUDA event (or, on the simulator, a host timestamp taken when recorded)."""

    def __init__(self, simulated: bool) -> None:
        self.simulated = simulated
        self._t: float | None = None
        if not simulated:
            from numba import cuda

            self._ev = cuda.event(timing=True)

    def record(self, stream: Any) -> None:
        if self.simulated:
            self._t = time.perf_counter()
        else:
            self._ev.record(stream)

    def query(self) -> bool:
        """True once the work before the record has finished. Raises :class:`DeviceError` if
        that work failed on the GPU (an illegal address, a trap): the error reaches whoever
        awaits the event."""
        if self.simulated:
            return True
        try:
            return event_done(self._ev)
        except DriverError as exc:  # the driver's answer for failed work (see event_done)
            raise _gpu_failure(exc) from exc

    def synchronize(self) -> None:
        if not self.simulated:
            try:
                driver.event_synchronize(self._ev)
            except DriverError as exc:
                raise _gpu_failure(exc) from exc

    def wait_on(self, stream: Any) -> None:
        """Make ``stream`` wait for this event (GPU side; the host does not block)."""
        if not self.simulated:
            self._ev.wait(stream)

    def elapsed_ms(self, end: "Event") -> float:
        if self.simulated:
            if self._t is None or end._t is None:
                raise ConfigurationError("both events must be recorded before timing them")
            return (end._t - self._t) * 1e3
        from numba import cuda

        return float(cuda.event_elapsed_time(self._ev, end._ev))

    def __await__(self) -> Any:
        return _poll(self.query).__await__()


def _gpu_failure(exc: DriverError) -> DriverError:
    return DriverError(
        f"GPU work before this event failed: {exc.message}",
        operation=exc.operation,
        result=exc.result,
        result_name=exc.result_name,
        hint="a kernel queued earlier faulted; the CUDA context is unusable after such an error, so "
        "restart the process (run the kernel under compute-sanitizer to find the faulting access)",
    )


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


class StreamManager:
    """Compute streams, an optional transfer stream, and named events between them.

    ``manager.stream(StreamId.compute(0))`` is a numba stream: pass it to numba launches,
    copies and ``@gpu_kernel`` (``kernel(a, b, stream=s)``). ``await manager.wait(id)``
    completes when the stream's queued work has.
    """

    def __init__(self, config: StreamConfig | None = None) -> None:
        from numba import cuda

        self.config = config or StreamConfig()
        self.simulated = _simulated()
        self._cuda = cuda
        self._handles: list[int] = []
        self._streams: dict[StreamId, Any] = {}
        self._events: dict[str, Event] = {}
        self._lock = threading.Lock()
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
        self._finalizer = weakref.finalize(self, _destroy_streams, list(self._handles))

    # -- streams --------------------------------------------------------------------------
    @staticmethod
    def priority_range() -> tuple[int, int]:
        """``(least, greatest)`` stream priorities of the current context, e.g. ``(0, -5)``."""
        if _simulated():
            return (0, 0)
        from numba import cuda

        cuda.current_context()  # the query needs a current context
        return driver.stream_priority_range()

    def _create_stream(self, priority: int) -> Any:
        self._cuda.current_context()
        h = driver.stream_create(priority, non_blocking=True)
        self._handles.append(h)
        return self._cuda.external_stream(h)

    def stream(self, stream_id: StreamId) -> Any:
        try:
            return self._streams[stream_id]
        except KeyError:
            have = ", ".join(str(s) for s in self._streams)
            raise ConfigurationError(f"no stream {stream_id}; this manager has {have}") from None

    def stream_handle(self, stream_id: StreamId) -> int:
        """The raw ``CUstream`` (0 for the default stream and on the simulator)."""
        if self.simulated:
            return 0
        return driver.stream_handle(self.stream(stream_id)) if stream_id != StreamId.DEFAULT else 0

    def stream_for_workload(self, workload_index: int) -> StreamId:
        """Round-robin over the compute streams."""
        return StreamId.compute(workload_index % self.config.num_compute_streams)

    @property
    def stream_ids(self) -> list[StreamId]:
        return list(self._streams)

    def sync_stream(self, stream_id: StreamId) -> None:
        self.stream(stream_id).synchronize()

    def sync_all(self) -> None:
        for s in self._streams.values():
            s.synchronize()

    async def wait(self, stream_id: StreamId) -> None:
        """Completes when the work queued on ``stream_id`` so far has finished (polls an event)."""
        ev = Event(self.simulated)
        ev.record(self.stream(stream_id))
        await ev

    def capture(self, stream_id: StreamId) -> Any:
        """A :class:`~ringkernel.streams.graph.CapturedGraph` recording launches on ``stream_id``.

        Needs ``StreamConfig(enable_graph_capture=True)`` and a GPU (the simulator has no graphs).
        """
        if not self.config.enable_graph_capture:
            raise ConfigurationError(
                "graph capture is off for this manager", hint="create it with StreamConfig(enable_graph_capture=True)"
            )
        if self.simulated:
            raise ConfigurationError(
                "numba's simulator has no CUDA graphs", hint="capture on a GPU; on the simulator launch directly"
            )
        from .graph import CapturedGraph

        return CapturedGraph(self.stream(stream_id), self.stream_handle(stream_id))

    # -- events ---------------------------------------------------------------------------
    def record_event(self, name: str, stream_id: StreamId) -> Event:
        """Record (or re-record) the event ``name`` on ``stream_id``."""
        with self._lock:
            ev = self._events.get(name)
            if ev is None:
                ev = self._events[name] = Event(self.simulated)
        ev.record(self.stream(stream_id))
        return ev

    def event(self, name: str) -> Event:
        try:
            return self._events[name]
        except KeyError:
            raise ConfigurationError(
                f"no event named {name!r}", hint=f"record it first; recorded: {sorted(self._events)}"
            ) from None

    def stream_wait_event(self, stream_id: StreamId, name: str) -> None:
        """Make ``stream_id`` wait (on the GPU) for event ``name``."""
        self.event(name).wait_on(self.stream(stream_id))

    def event_elapsed_ms(self, start: str, end: str) -> float:
        e = self.event(end)
        e.synchronize()
        return self.event(start).elapsed_ms(e)

    # -- transfers ------------------------------------------------------------------------
    def async_memcpy_htod(self, dst: Any, src: np.ndarray, stream_id: StreamId = StreamId.TRANSFER, *, allow_sync: bool = False) -> None:
        """Copy host ``src`` into device ``dst`` asynchronously on ``stream_id``.

        ``src`` must be pinned (``numba.cuda.pinned_array``): a pageable array cannot be
        copied asynchronously and is refused, unless ``allow_sync=True`` asks for a
        synchronous copy instead.
        """
        sid = stream_id if stream_id in self._streams else StreamId.DEFAULT
        if not self._is_pinned(src):
            if not allow_sync:
                raise KernelArgumentError(
                    "async_memcpy_htod needs pinned host memory; this array is pageable",
                    kernel_name="StreamManager",
                    hint="allocate it with numba.cuda.pinned_array(shape, dtype), or pass allow_sync=True "
                    "to copy synchronously",
                )
            dst.copy_to_device(src)
            return
        dst.copy_to_device(src, stream=self.stream(sid))

    def async_memcpy_dtoh(self, dst: np.ndarray, src: Any, stream_id: StreamId = StreamId.TRANSFER, *, allow_sync: bool = False) -> None:
        """Copy device ``src`` into pinned host ``dst`` asynchronously (see :meth:`async_memcpy_htod`)."""
        sid = stream_id if stream_id in self._streams else StreamId.DEFAULT
        if not self._is_pinned(dst):
            if not allow_sync:
                raise KernelArgumentError(
                    "async_memcpy_dtoh needs pinned host memory; this array is pageable",
                    kernel_name="StreamManager",
                    hint="allocate it with numba.cuda.pinned_array(shape, dtype), or pass allow_sync=True",
                )
            src.copy_to_host(dst)
            return
        src.copy_to_host(dst, stream=self.stream(sid))

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
        """Synchronise and destroy the streams (idempotent)."""
        if not self._finalizer.alive:
            return
        try:
            self.sync_all()
        finally:
            self._finalizer()

    def __enter__(self) -> "StreamManager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _destroy_streams(handles: list[int]) -> None:
    if not handles:
        return
    try:
        for h in handles:
            driver.stream_destroy(h)
    except Exception:  # the context may be gone at exit
        pass
