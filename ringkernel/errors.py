"""The exceptions ringkernel raises, each carrying the numbers behind it.

::

    RingKernelError
    ├── ConfigurationError        (also ValueError)  an option or profile is out of range
    ├── ResourceClosedError                           a resource was used after its close()
    ├── MessageError              (also TypeError)   a message of the wrong dtype or shape for a queue
    ├── ProfilerError                                 a profiler range ended twice, out of order or elsewhere
    ├── DeviceError                                   no usable device, or a driver call failed
    │   └── DriverError                               a driver call failed: result, its name, operation
    ├── MemoryError_                                  pool and guard errors (not Python's MemoryError)
    │   ├── InsufficientMemory                        an allocation would exceed a limit
    │   └── InvalidFree                   (ValueError) double free, foreign pointer, wrong size
    ├── BenchmarkError                                a benchmark could not run or be compared
    │   └── EnvironmentMismatchError                  baseline taken on another GPU/driver/version
    └── KernelError                                   something about one kernel
        ├── KernelArgumentError   (also TypeError)   an argument no signature accepts, a host array
        ├── LaunchConfigError     (also ValueError)  grid/block/shared memory/elements out of range
        ├── KernelCompileError                        numba could not type or compile the body
        └── KernelLaunchError                         the driver refused the launch

Every error says what happened, the values involved and what to do; the values are also
kept as attributes (``kernel_name``, ``details``, ``hint``) so callers can act on them
without parsing the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = [
    "RingKernelError",
    "ConfigurationError",
    "DeviceError",
    "DriverError",
    "KernelError",
    "KernelArgumentError",
    "LaunchConfigError",
    "KernelCompileError",
    "KernelLaunchError",
    "BenchmarkError",
    "EnvironmentMismatchError",
    "MemoryError_",
    "InsufficientMemory",
    "InvalidFree",
    "ResourceClosedError",
    "MessageError",
    "ProfilerError",
    "ErrorContext",
    "MemorySnapshot",
]


@dataclass(frozen=True)
class MemorySnapshot:
    """Device memory when an error was raised: ``used`` / ``total`` bytes, and the bytes a
    ringkernel pool had handed out (``pool_in_use``; ``None`` when no pool was in play)."""

    used: int
    total: int
    pool_in_use: int | None = None

    def __str__(self) -> str:
        text = f"{_gb(self.used)} / {_gb(self.total)} used ({self.used / self.total:.0%})" if self.total else "unknown"
        if self.pool_in_use is not None:
            text += f", pool {_gb(self.pool_in_use)} in use"
        return text


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB"


@dataclass(frozen=True)
class ErrorContext:
    """Where an error happened (design proposal 11.5): the operation, the kernel, the stream
    and the memory at that moment. ``str(error)`` prints each that is known."""

    operation: str
    kernel_name: str | None = None
    stream_id: Any = None
    memory: MemorySnapshot | None = None


class RingKernelError(Exception):
    """Base of every ringkernel error.

    Parameters
    ----------
    message:
        What happened, with the values involved.
    hint:
        What to do about it (``suggestion`` is the same); appended to the message.
    details:
        The values behind the message, kept as a mapping for programs.
    context:
        An :class:`ErrorContext`: printed as ``Operation:``, ``Stream:``, ``Memory:`` and
        ``Suggestion:`` lines, as in the design proposal's example.
    """

    def __init__(
        self, message: str, *, hint: str | None = None, details: Mapping[str, Any] | None = None,
        context: ErrorContext | None = None,
    ) -> None:  # fmt: skip
        self.message = message
        self.hint = hint
        self.details: dict[str, Any] = dict(details or {})
        self.context = context
        if context is not None:
            self.operation: str | None = context.operation
        elif not hasattr(self, "operation"):  # subclasses that name their operation set it first
            self.operation = None
        super().__init__(self._format())

    @property
    def suggestion(self) -> str | None:
        return self.hint

    @property
    def stream_id(self) -> Any:
        return self.context.stream_id if self.context is not None else None

    @property
    def memory(self) -> MemorySnapshot | None:
        return self.context.memory if self.context is not None else None

    def _format(self) -> str:
        ctx = getattr(self, "context", None)
        if ctx is None:
            if self.hint:
                return f"{self.message}\n  hint: {self.hint}"
            return self.message
        lines = [self.message, f"  Operation: {ctx.operation}"]
        if ctx.stream_id is not None:
            lines.append(f"  Stream: {ctx.stream_id}")
        if ctx.memory is not None:
            lines.append(f"  Memory: {ctx.memory}")
        if self.hint:
            lines.append(f"  Suggestion: {self.hint}")
        return "\n".join(lines)


class ConfigurationError(RingKernelError, ValueError):
    """An option, profile or preset name is invalid."""


class ResourceClosedError(RingKernelError):
    """A resource was used after its ``close()``: ``resource`` names its kind (``"StreamManager"``),
    ``operation`` what was asked of it (``"sync_all"``; ``None`` if not known).

    Raised before any driver call, so using a closed resource never reaches the driver
    with a destroyed handle.
    """

    def __init__(
        self,
        resource: str,
        *,
        operation: str | None = None,
        hint: str | None = "create a new one",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.resource = resource
        self.operation = operation
        message = f"{resource} is closed" + (f": {operation} cannot be used after close()" if operation else "")
        merged = {"resource": resource, "operation": operation, **dict(details or {})}
        super().__init__(message, hint=hint, details=merged)


class MessageError(RingKernelError, TypeError):
    """A message given to a queue (``LockFreeInbox``, ``PartitionedQueue``) is not of its dtype,
    not of the expected shape, or ``None``."""


class ProfilerError(RingKernelError):
    """A profiler range was misused: ended twice, ended while an inner range is still open, ended
    in another thread or asyncio task than it began in, or unknown to this profiler.
    ``range_name`` and ``range_id`` name the range."""

    def __init__(self, message: str, *, range_name: str | None = None, range_id: int | None = None,
                 hint: str | None = None) -> None:  # fmt: skip
        self.range_name = range_name
        self.range_id = range_id
        super().__init__(message, hint=hint, details={"range_name": range_name, "range_id": range_id})


class DeviceError(RingKernelError):
    """No usable CUDA device, or a device query failed."""


class DriverError(DeviceError):
    """A CUDA driver call failed (raised by ``ringkernel.driver.check``, the one choke point).

    ``result`` is the numeric ``CUresult`` (``None`` when the driver library could not be
    loaded at all), ``result_name`` its name (``"CUDA_ERROR_ILLEGAL_ADDRESS"``) and
    ``operation`` the call that failed.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None,
        result: int | None,
        result_name: str | None = None,
        hint: str | None = None,
        details: Mapping[str, Any] | None = None,
        context: "ErrorContext | None" = None,
    ) -> None:
        self.operation = operation
        self.result = result
        self.result_name = result_name
        merged = {"operation": operation, "result": result, "result_name": result_name, **dict(details or {})}
        super().__init__(message, hint=hint, details=merged, context=context)


class KernelError(RingKernelError):
    """An error about one kernel; ``kernel_name`` names it."""

    def __init__(
        self,
        message: str,
        *,
        kernel_name: str,
        hint: str | None = None,
        details: Mapping[str, Any] | None = None,
        context: ErrorContext | None = None,
    ) -> None:
        self.kernel_name = kernel_name
        super().__init__(f"kernel '{kernel_name}': {message}", hint=hint, details=details, context=context)


class KernelArgumentError(KernelError, TypeError):
    """An argument has a type, dtype or location (host memory) the kernel cannot take."""


class LaunchConfigError(KernelError, ValueError):
    """A launch configuration or element count is out of the device's or kernel's range."""


class KernelCompileError(KernelError):
    """numba could not type or compile the kernel for the given arguments."""


class KernelLaunchError(KernelError):
    """The driver rejected a launch that passed ringkernel's own checks."""


class BenchmarkError(RingKernelError):
    """A benchmark failed to run, or results could not be read or compared."""


class EnvironmentMismatchError(BenchmarkError):
    """A baseline was measured in a different environment; ``details['differences']`` lists how."""


class MemoryError_(RingKernelError):  # noqa: N801 - Python's own MemoryError is a different thing
    """Errors of the memory pool and the resource guard."""


class InsufficientMemory(MemoryError_):
    """An allocation would exceed the device's free memory or a configured limit.

    ``needed``, ``available`` and ``recommended_max`` (elements, when an element size is
    known) are attributes as well as in the message.
    """

    def __init__(
        self, needed: int, available: int, recommended_max: int | None = None, *, what: str = "GPU memory",
        hint: str | None = None, context: ErrorContext | None = None,
    ) -> None:  # fmt: skip
        self.needed, self.available, self.recommended_max = needed, available, recommended_max
        msg = f"Insufficient {what}: need {needed} bytes, have {available} bytes."
        if recommended_max is not None:
            msg += f" Reduce workload to {recommended_max} elements."
        super().__init__(
            msg, hint=hint, details={"needed": needed, "available": available, "recommended_max": recommended_max},
            context=context,
        )  # fmt: skip


class InvalidFree(MemoryError_, ValueError):
    """A deallocation the pool refuses: a double free, a pointer it never gave out, a wrong size."""
