"""Profiling: ``GpuProfiler`` (NVTX ranges, GPU-timed launch and copy capture), Chrome/Perfetto traces, summaries.

See docs/profiling.md. Importing this package imports neither numba nor ``nvtx``: both are
loaded when a profiler first needs them.
"""

from .categories import ProfileCategory, TransferDirection
from .events import EventKind, ProfileEvent
from .profiler import GpuProfiler, RangeHandle
from .summary import KernelStats, ProfilingSummary, RangeStats, StreamStats, TransferStats
from .telemetry import GpuTelemetry  # imports OpenTelemetry only when enabled
from .timing import GpuTiming, LaunchCapture

__all__ = [
    "GpuProfiler", "RangeHandle", "ProfileCategory", "TransferDirection", "ProfileEvent", "EventKind",
    "ProfilingSummary", "KernelStats", "StreamStats", "RangeStats", "TransferStats", "GpuTiming", "LaunchCapture", "GpuTelemetry", "reset",
]  # fmt: skip


def reset() -> None:
    """Forget the module-level state (custom categories, the NVTX domain, the measured copy ceiling); for tests."""
    from . import categories, markers, summary

    categories.reset()
    markers.reset()
    summary.reset()
