"""ringkernel: the infrastructure every numba-cuda project ends up writing by hand.

Importing ringkernel neither imports numba nor initialises CUDA nor writes to disk: numba
is imported when a kernel is first compiled or a device is first queried. The device-side
helpers (``thread_idx_x``, ``global_thread_id``, ``grid_stride``, ...) are numba device
functions and are therefore resolved lazily, on first access.

Importing ringkernel installs an import hook (:func:`ringkernel.config.install_import_hook`):
the first import of ``numba.cuda``, ringkernel's or the user's own, first chooses between
the GPU and numba's CUDA simulator (:func:`ringkernel.config.select_backend`), so a machine
without a GPU runs on the simulator. Import ringkernel before ``numba.cuda`` for that.
"""

from __future__ import annotations

from typing import Any

from .config import install_import_hook as _install_import_hook

_install_import_hook()  # before anything below can import numba.cuda
del _install_import_hook

from .benchmark import (
    REPORT_FORMATS,
    Benchmark,
    BenchmarkBaseline,
    BenchmarkConfig,
    BenchmarkResult,
    BenchmarkRunner,
    BenchmarkSuite,
    ConfidenceInterval,
    EnvironmentFingerprint,
    EnvironmentPolicy,
    GpuTimer,
    OutlierKind,
    OutlierReport,
    Progress,
    RegressionReport,
    RegressionResult,
    RegressionStatus,
    ScalingMetrics,
    Statistics,
    Summary,
    compare_results,
    compare_samples,
)
from .compile import (
    CACHE_VERSION,
    CacheEntry,
    CacheMode,
    CachingCompiler,
    CompiledKernel,
    PtxCache,
    PtxCacheStats,
    code_fingerprint,
    code_fingerprint_report,
    default_cache_dir,
    default_compiler,
)
from .device import PRESETS, SIMULATED, GpuArchitecture
from .streams import (
    CapturedGraph,
    Event,
    PipelineReport,
    StreamConfig,
    StreamId,
    StreamKind,
    StreamManager,
    StreamPool,
    StreamPoolStats,
    run_pipeline,
)
from .memory import (
    ClassDiagnostics,
    DeviceArray,
    DriverBackend,
    GpuMemoryPool,
    ManagedBuffer,
    MemoryBackend,
    MemoryEstimate,
    PoolConfig,
    PoolDiagnostics,
    PooledBuffer,
    ResourceGuard,
    SimulatorBackend,
    SizeClass,
    default_backend,
)
from .kernel import (
    ConfiguredLaunch,
    kernel_from_source,
    GpuKernel,
    LaunchEvent,
    add_launch_hook,
    gpu_kernel,
    launch_hooks,
    remove_launch_hook,
)
from .errors import (
    ConfigurationError,
    DeviceError,
    KernelArgumentError,
    KernelCompileError,
    KernelError,
    KernelLaunchError,
    BenchmarkError,
    EnvironmentMismatchError,
    InsufficientMemory,
    InvalidFree,
    LaunchConfigError,
    ProfilerError,
    MessageError,
    ResourceClosedError,
    RingKernelError,
    DriverError,
    ErrorContext,
    MemorySnapshot,
)
from .context import ContextConfig, GpuContext, GpuContextBuilder, current_context
from .kernel.indexing import AxisMap, KernelIndexing, analyze_kernel
from .launch import (
    AccessPattern,
    KernelMode,
    KernelModeSelector,
    KernelResources,
    LaunchConfig,
    LaunchDecision,
    ModeKind,
    PatternKind,
    WorkloadProfile,
)

__version__ = "0.1.0"

_INTRINSICS = (
    "thread_idx_x", "thread_idx_y", "thread_idx_z",
    "block_idx_x", "block_idx_y", "block_idx_z",
    "block_dim_x", "block_dim_y", "block_dim_z",
    "grid_dim_x", "grid_dim_y", "grid_dim_z",
    "global_thread_id", "global_thread_id_2d", "grid_stride", "grid_stride_2d", "sync_threads",
)  # fmt: skip

_MESSAGING = ("LockFreeInbox", "PartitionedQueue")
_HYBRID = ("ProcessingMode", "HybridConfig", "HybridDispatcher", "HybridStats", "elementwise")

__all__ = [
    "__version__",
    *_MESSAGING,
    *_HYBRID,
    "ContextConfig",
    "GpuContext",
    "GpuContextBuilder",
    "current_context",
    "LaunchEvent",
    "add_launch_hook",
    "remove_launch_hook",
    "launch_hooks",
    "AxisMap",
    "KernelIndexing",
    "analyze_kernel",
    # profiling
    "GpuProfiler", "ProfileCategory",
    # device
    "GpuArchitecture", "PRESETS", "SIMULATED",
    # launch
    "AccessPattern", "KernelMode", "KernelModeSelector", "KernelResources", "LaunchConfig",
    "LaunchDecision", "ModeKind", "PatternKind", "WorkloadProfile",
    # dsl
    "gpu_kernel", "GpuKernel", "ConfiguredLaunch",
    # benchmark
    "Benchmark", "BenchmarkBaseline", "BenchmarkConfig", "BenchmarkResult", "BenchmarkRunner",
    "BenchmarkSuite", "ConfidenceInterval", "EnvironmentFingerprint", "EnvironmentPolicy", "GpuTimer",
    "OutlierKind", "OutlierReport", "Progress", "REPORT_FORMATS", "RegressionReport", "RegressionResult",
    "RegressionStatus", "ScalingMetrics", "Statistics", "Summary", "compare_results", "compare_samples",
    # compile
    "CACHE_VERSION", "CacheEntry", "CacheMode", "PtxCache", "PtxCacheStats", "default_cache_dir",
    "CachingCompiler", "CompiledKernel", "default_compiler", "kernel_from_source", "code_fingerprint", "code_fingerprint_report",
    # memory (use_pool and plugin_pool resolve lazily: see __getattr__)
    "GpuMemoryPool", "DeviceArray", "ManagedBuffer", "MemoryEstimate", "PoolConfig", "PoolDiagnostics", "ClassDiagnostics",
    "PooledBuffer", "ResourceGuard", "SizeClass", "MemoryBackend", "DriverBackend", "SimulatorBackend",
    "default_backend", "use_pool", "plugin_pool",
    # streams
    "CapturedGraph", "Event", "StreamConfig", "StreamId", "StreamKind", "StreamManager",
    "PipelineReport", "run_pipeline", "StreamPool", "StreamPoolStats",
    # errors
    "RingKernelError", "ConfigurationError", "DeviceError", "KernelError", "KernelArgumentError",
    "LaunchConfigError", "KernelCompileError", "KernelLaunchError", "BenchmarkError", "EnvironmentMismatchError",
    "InsufficientMemory", "InvalidFree", "ResourceClosedError", "MessageError", "ProfilerError",
    "DriverError", "ErrorContext", "MemorySnapshot",
    # device-side helpers (lazy)
    *_INTRINSICS,
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _INTRINSICS:
        from .kernel import intrinsics

        return getattr(intrinsics, name)
    if name in ("use_pool", "plugin_pool"):
        from .memory import plugin_state

        return getattr(plugin_state, name)
    if name in _MESSAGING:  # imported on first use: the package imports numba
        from . import messaging

        return getattr(messaging, name)
    if name in _HYBRID:  # imported on first use
        from . import hybrid

        return getattr(hybrid, name)
    if name in ("GpuProfiler", "ProfileCategory"):  # imported on first use: a program that never
        from . import profiling  # profiles never loads the package (its launches pay nothing)

        return getattr(profiling, name)
    raise AttributeError(f"module 'ringkernel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_INTRINSICS) | set(_MESSAGING) | set(_HYBRID) | {"use_pool", "plugin_pool", "GpuProfiler", "ProfileCategory"})
