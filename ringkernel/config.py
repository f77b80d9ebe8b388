"""The one place that reads ``RINGKERNEL_*`` (and the simulator's) environment variables; picks GPU or simulator.

=============================  ==========================================================
variable                       meaning
=============================  ==========================================================
``RINGKERNEL_CACHE_DIR``       directory of the on-disk kernel cache (default: the
                               platform's user cache dir + ``ringkernel``)
``RINGKERNEL_CACHE_SHARED``    ``1``: the kernel cache is shared by the members of its
                               directory's group (entries written 0640, other members'
                               entries accepted; docs/cache.md, "Trust model"); ``0`` or
                               unset: private to the current user
``RINGKERNEL_GPU_TESTS``       ``1``: the test suite runs on the real GPU instead of the
                               CUDA simulator
``RINGKERNEL_DEFAULT_BLOCK``   override of the selector's preferred block size (testing
                               and tuning; must be a multiple of 32, at most 1024)
``RINGKERNEL_SIMULATOR``       ``1``: kernels run on numba's CUDA simulator; ``0``: on the
                               GPU (a :class:`~ringkernel.errors.DeviceError` at first use
                               when there is none); unset: the GPU when ``libcuda``
                               reports one, else the simulator, with one warning
``NUMBA_ENABLE_CUDASIM``       numba's own switch: non-zero runs kernels on the simulator
                               (wins over ``RINGKERNEL_SIMULATOR=0``)
=============================  ==========================================================

:func:`settings` reads them once and caches the result; :func:`reset` forgets it (tests).

Choosing the backend
--------------------
numba chooses between the GPU and its simulator once, when ``numba.cuda`` is first
imported, from ``NUMBA_ENABLE_CUDASIM``. :func:`select_backend` makes that choice for it,
before the import: ``import ringkernel`` installs an import hook (:func:`install_import_hook`)
that runs it when anything (ringkernel or the user's own ``from numba import cuda``)
first imports ``numba.cuda``, and ringkernel's modules that import numba call it too.
Choosing the simulator sets ``NUMBA_ENABLE_CUDASIM=1`` (also in ``numba.config`` when
numba itself is already imported). The choice is made once per process: numba cannot
switch after ``numba.cuda`` is imported, so afterwards :func:`select_backend` reports what
numba chose. :func:`require_backend` is what ringkernel calls where it first touches the
device: the choice, plus a clear :class:`~ringkernel.errors.DeviceError` when the GPU was
chosen (or ``numba.cuda`` was imported before ringkernel could choose) and there is none.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import ConfigurationError, DeviceError

__all__ = [
    "Settings", "settings", "reset",
    "select_backend", "require_backend", "simulator_enabled", "use_simulator_if_no_gpu", "gpu_present",
    "install_import_hook", "reset_backend_selection", "ensure_numba_cuda",
]  # fmt: skip

log = logging.getLogger(__name__)


def _simulator_choice(env: Mapping[str, str]) -> bool | None:
    """``RINGKERNEL_SIMULATOR``: True (``1``), False (``0``) or None (unset or empty: automatic)."""
    raw = env.get("RINGKERNEL_SIMULATOR")
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip()
    if value in ("0", "1"):
        return value == "1"
    raise ConfigurationError(
        f"RINGKERNEL_SIMULATOR={raw!r} is not one of the allowed values",
        hint="set it to 1 (run kernels on numba's CUDA simulator), 0 (require a CUDA GPU), "
        "or unset it (the GPU when there is one, else the simulator)",
        details={"value": raw},
    )


def _numba_simulator_env(env: Mapping[str, str]) -> bool:
    """Whether numba will read ``NUMBA_ENABLE_CUDASIM`` as on (it parses an int; anything else is 0)."""
    raw = env.get("NUMBA_ENABLE_CUDASIM")
    if raw is None:
        return False
    try:
        return int(raw) != 0
    except ValueError:
        return False


@dataclass(frozen=True)
class Settings:
    """A snapshot of the environment variables ringkernel reads."""

    cache_dir: Path | None
    gpu_tests: bool
    default_block: int | None
    #: ``RINGKERNEL_SIMULATOR``: True forces the simulator, False the GPU, None is automatic.
    simulator: bool | None = None
    #: ``RINGKERNEL_CACHE_SHARED=1``: the kernel cache is shared with the directory's group.
    cache_shared: bool = False
    #: ``RINGKERNEL_NATIVE``: False turns the compiled launch path off, True makes a failure to
    #: build it an error, None (unset) falls back to Python when it cannot be built.
    native: bool | None = None

    @classmethod
    def from_environ(cls, environ: os._Environ[str] | dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        raw_dir = env.get("RINGKERNEL_CACHE_DIR") or None
        raw_block = env.get("RINGKERNEL_DEFAULT_BLOCK") or None
        block: int | None = None
        if raw_block is not None:
            try:
                block = int(raw_block)
            except ValueError:
                raise ConfigurationError(
                    f"RINGKERNEL_DEFAULT_BLOCK={raw_block!r} is not an integer",
                    hint="set it to a multiple of 32 between 32 and 1024, or unset it",
                ) from None
            if block <= 0 or block > 1024 or block % 32:
                raise ConfigurationError(
                    f"RINGKERNEL_DEFAULT_BLOCK={block} is out of range",
                    hint="set it to a multiple of 32 between 32 and 1024, or unset it",
                    details={"value": block},
                )
        raw_shared = (env.get("RINGKERNEL_CACHE_SHARED") or "").strip()
        if raw_shared not in ("", "0", "1"):
            raise ConfigurationError(
                f"RINGKERNEL_CACHE_SHARED={raw_shared!r} is not one of the allowed values",
                hint="set it to 1 (share the kernel cache with the directory's group), 0 or unset (private cache)",
                details={"value": raw_shared},
            )
        raw_native = (env.get("RINGKERNEL_NATIVE") or "").strip()
        if raw_native not in ("", "0", "1"):
            raise ConfigurationError(
                f"RINGKERNEL_NATIVE={raw_native!r} is not one of the allowed values",
                hint="set it to 0 (the pure-Python launch path), 1 (the compiled one, an error if it cannot be "
                "built) or unset it (compiled where a C compiler is found)",
                details={"value": raw_native},
            )
        return cls(
            native=None if raw_native == "" else raw_native == "1",
            cache_dir=Path(raw_dir).expanduser() if raw_dir else None,
            gpu_tests=env.get("RINGKERNEL_GPU_TESTS", "") == "1",
            default_block=block,
            simulator=_simulator_choice(env),
            cache_shared=raw_shared == "1",
        )


def cache_root() -> Path:
    """``RINGKERNEL_CACHE_DIR`` if set, else platformdirs' user cache dir + ``ringkernel``:
    the kernel cache's directory, and the compiled launch path's (``native``) parent."""
    configured = settings().cache_dir
    if configured is not None:
        return configured
    import platformdirs

    return Path(platformdirs.user_cache_dir("ringkernel", appauthor=False))


@functools.lru_cache(maxsize=1)
def settings() -> Settings:
    """The environment as ringkernel sees it (read once, cached; :func:`reset` re-reads)."""
    return Settings.from_environ()


def reset() -> None:
    """Forget the cached settings so the next :func:`settings` call re-reads the environment.

    The backend choice is kept: numba cannot switch between GPU and simulator once
    ``numba.cuda`` is imported. Tests that exercise the choice itself use
    :func:`reset_backend_selection`.
    """
    settings.cache_clear()
    gpu_present.cache_clear()


def _probe_gpu() -> tuple[bool, str]:
    """``(present, why not)`` from ``cuInit`` and ``cuDeviceGetCount`` through ctypes (no numba)."""
    import ctypes

    from . import driver  # imports no numba
    from .errors import DriverError

    try:
        lib = driver.lib()
    except DriverError:
        return False, "the CUDA driver library, libcuda, could not be loaded"
    try:
        rc = lib.cuInit(0)
        if rc != 0:
            return False, f"cuInit failed with {driver.error_name(rc)}"
        count = ctypes.c_int(0)
        rc = lib.cuDeviceGetCount(ctypes.byref(count))
        if rc != 0:
            return False, f"cuDeviceGetCount failed with {driver.error_name(rc)}"
        if count.value <= 0:
            return False, "the CUDA driver reports no device"
        return True, ""
    except AttributeError as exc:
        return False, f"the CUDA driver library lacks an entry point: {exc}"


_probe_detail = ""  # why gpu_present() said no


@functools.lru_cache(maxsize=1)
def gpu_present() -> bool:
    """Whether a CUDA driver with at least one device is present, asked without numba.

    Uses ``cuInit`` and ``cuDeviceGetCount`` from ``libcuda`` through ctypes, so it can run
    before numba is imported (numba decides between GPU and simulator at import time).
    """
    global _probe_detail
    present, _probe_detail = _probe_gpu()
    return present


# -- backend selection -----------------------------------------------------------------------

_NO_GPU = "no CUDA GPU found"
_NO_GPU_WARNING = (
    "ringkernel: no CUDA GPU or driver found (%s); kernels run on numba's CUDA simulator, "
    "which is slow. Set RINGKERNEL_SIMULATOR=1 to choose the simulator and silence this "
    "warning, or RINGKERNEL_SIMULATOR=0 to require the GPU."
)


@dataclass(frozen=True)
class _Decision:
    simulator: bool
    #: Why: "RINGKERNEL_SIMULATOR=1", "NUMBA_ENABLE_CUDASIM", "RINGKERNEL_SIMULATOR=0",
    #: "a CUDA GPU was found" or "no CUDA GPU found".
    reason: str
    #: Why there is no GPU, or that NUMBA_ENABLE_CUDASIM overrode RINGKERNEL_SIMULATOR=0.
    detail: str = ""


_lock = threading.Lock()
_decision: _Decision | None = None  # made by ringkernel before numba.cuda was imported
_reported: bool | None = None  # numba's own choice, once numba.cuda is imported
_gpu_confirmed = False  # require_backend found the GPU the choice relies on
_warned: set[str] = set()


def _decide(env: Mapping[str, str], probe: Callable[[], tuple[bool, str]]) -> _Decision:
    """The choice for this environment (pure but for ``probe``, which is only called when needed)."""
    forced = _simulator_choice(env)
    if forced is True:
        return _Decision(True, "RINGKERNEL_SIMULATOR=1")
    if _numba_simulator_env(env):
        return _Decision(True, "NUMBA_ENABLE_CUDASIM", "overrides RINGKERNEL_SIMULATOR=0" if forced is False else "")
    if forced is False:
        return _Decision(False, "RINGKERNEL_SIMULATOR=0")
    present, why = probe()
    if present:
        return _Decision(False, "a CUDA GPU was found")
    return _Decision(True, _NO_GPU, why)


def _numba_choice() -> bool | None:
    """What numba chose (``ENABLE_CUDASIM`` of numba.cuda's config), once numba.cuda is imported."""
    if "numba.cuda" not in sys.modules:
        return None
    # numba-cuda keeps its own config module; with numba installed it is numba.core.config.
    for name in ("numba.cuda.core.config", "numba.core.config"):
        cfg = sys.modules.get(name)
        if cfg is not None and hasattr(cfg, "ENABLE_CUDASIM"):
            return bool(cfg.ENABLE_CUDASIM)
    return None  # numba.cuda is being imported and has not read its config yet


def _enable_simulator() -> None:
    """Turn numba's simulator on for the coming import of numba.cuda."""
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    # `import numba` (or `from numba import njit`) before numba.cuda has read the variable
    # already; numba.cuda and ringkernel's own checks read numba.config.ENABLE_CUDASIM.
    cfg = sys.modules.get("numba.core.config")
    if cfg is not None:
        cfg.ENABLE_CUDASIM = 1  # type: ignore[attr-defined]


def _warn_once(key: str, msg: str, *args: Any) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(msg, *args)


def select_backend() -> bool:
    """Choose numba's CUDA simulator or the GPU, once, before ``numba.cuda`` is imported; True = simulator.

    ``RINGKERNEL_SIMULATOR=1`` or a non-zero ``NUMBA_ENABLE_CUDASIM`` choose the simulator,
    ``RINGKERNEL_SIMULATOR=0`` the GPU; otherwise the GPU when ``libcuda`` reports a device
    (:func:`gpu_present`), else the simulator with one warning. Choosing the simulator sets
    ``NUMBA_ENABLE_CUDASIM=1``. Once ``numba.cuda`` is imported this only reports what numba
    chose. Idempotent and thread-safe; imports no numba.

    Raises
    ------
    ConfigurationError
        ``RINGKERNEL_SIMULATOR`` is set to something other than ``0`` or ``1``.
    """
    global _decision, _reported
    if _reported is not None:
        return _reported
    # RINGKERNEL_SIMULATOR alone, not settings(): an unrelated bad variable must not make
    # the first import of numba.cuda fail. Validated whatever happens next.
    forced = _simulator_choice(os.environ)
    numba_chose = _numba_choice()
    if numba_chose is not None:
        with _lock:
            if _reported is None:
                _reported = numba_chose
        if forced is not None and forced != numba_chose and _decision is None:
            _warn_once(
                "ignored", "ringkernel: RINGKERNEL_SIMULATOR=%d has no effect: numba.cuda was imported before "
                "ringkernel could choose, and numba chose the %s. Import ringkernel before numba.cuda.",
                int(forced), "simulator" if numba_chose else "GPU",
            )  # fmt: skip
        return numba_chose
    decision = _decision
    if decision is None:
        # Decided outside the lock: the probe may import (ctypes.util), and an import of
        # numba.cuda in another thread holds the import lock while it waits for this one.
        candidate = _decide(os.environ, lambda: (gpu_present(), _probe_detail))
        with _lock:
            if _decision is None:
                if candidate.simulator:
                    _enable_simulator()
                _decision = candidate
            decision = _decision
        if decision.reason == _NO_GPU:
            _warn_once("no-gpu", _NO_GPU_WARNING, decision.detail or "none reported")
        elif decision.detail:
            _warn_once(
                "override", "ringkernel: NUMBA_ENABLE_CUDASIM=%s overrides RINGKERNEL_SIMULATOR=0: kernels run on "
                "numba's CUDA simulator. Unset NUMBA_ENABLE_CUDASIM to use the GPU.",
                os.environ.get("NUMBA_ENABLE_CUDASIM", ""),
            )  # fmt: skip
    return decision.simulator


def require_backend() -> bool:
    """:func:`select_backend`, and a usable GPU when it chose the GPU; True = simulator.

    ringkernel calls it where it first touches the device (``GpuArchitecture.current()``,
    memory pools, stream managers, GPU timers), so a missing GPU is reported as a
    :class:`~ringkernel.errors.DeviceError` that says what to do, not as numba's
    ``CudaSupportError``.

    Raises
    ------
    DeviceError
        The GPU was chosen (``RINGKERNEL_SIMULATOR=0``, or ``numba.cuda`` was imported before
        ringkernel could choose) and neither ``libcuda`` nor numba finds a device.
    ConfigurationError
        ``RINGKERNEL_SIMULATOR`` has a value other than ``0`` or ``1``.
    """
    global _gpu_confirmed
    if select_backend():
        return True
    if _gpu_confirmed:
        return False
    if not (gpu_present() or _numba_sees_gpu()):
        raise _no_gpu_error()
    _gpu_confirmed = True
    return False


def _numba_sees_gpu() -> bool:
    """numba's own answer (its driver lookup may find a library ours does not, e.g. NUMBA_CUDA_DRIVER)."""
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - any failure here means: no usable GPU
        return False


def _no_gpu_error() -> DeviceError:
    why = _probe_detail or "numba finds no usable device"
    decision = _decision
    if decision is None:
        return DeviceError(
            "numba.cuda was imported before ringkernel could choose between the GPU and numba's CUDA "
            f"simulator, numba chose the GPU, and there is no usable CUDA GPU ({why})",
            hint="import ringkernel before numba.cuda (before `from numba import cuda`), or set "
            "RINGKERNEL_SIMULATOR=1 (or NUMBA_ENABLE_CUDASIM=1) in the environment to run on the simulator",
            details={"reason": "numba.cuda imported first", "probe": why},
        )
    return DeviceError(
        f"{decision.reason} requires a CUDA GPU, but there is no usable one ({why})",
        hint="check the driver with `nvidia-smi`; unset RINGKERNEL_SIMULATOR (automatic choice) or set "
        "RINGKERNEL_SIMULATOR=1 to run on numba's CUDA simulator",
        details={"reason": decision.reason, "probe": why},
    )


def simulator_enabled() -> bool:
    """True when numba's CUDA simulator is (or, once numba.cuda is imported, will be) in use.

    The same answer as :func:`select_backend` (which it calls, making the choice if it was not
    made yet); once numba.cuda is imported, numba's own configuration.
    """
    return select_backend()


#: Held by every simulated launch (numba's simulator replaces the ``cuda`` module in the kernel
#: module's globals with its own while a kernel runs, and keeps per-launch state in shared
#: objects) and by anything that reads a kernel function's globals meanwhile (the indexing
#: analysis): on the simulator only; reentrant.
SIMULATOR_LOCK = threading.RLock()


def simulator_exclusive() -> Any:
    """:data:`SIMULATOR_LOCK` on the simulator, else a no-op context."""
    import contextlib

    return SIMULATOR_LOCK if simulator_enabled() else contextlib.nullcontext()


def use_simulator_if_no_gpu() -> bool:
    """:func:`select_backend` without the no-GPU warning; True if the simulator is on.

    For callers that announce the simulator themselves (``ringkernel demo`` prints it).
    Must run before ``numba.cuda`` is imported to have an effect; afterwards it only reports.
    """
    _warned.add("no-gpu")  # set.add is atomic; the caller says it itself
    return select_backend()


def reset_backend_selection() -> None:
    """Tests only: forget the backend choice, what numba reported and which warnings were logged.

    Changes nothing in numba or the environment (a ``NUMBA_ENABLE_CUDASIM=1`` set by the choice
    stays): once numba.cuda is imported, the next :func:`select_backend` reports numba's
    choice again. Tests of the choice itself remove ``numba.cuda`` from ``sys.modules`` with
    ``monkeypatch`` and replace ``_enable_simulator``.
    """
    global _decision, _reported, _gpu_confirmed
    with _lock:
        _decision = None
        _reported = None
        _gpu_confirmed = False
        _warned.clear()


# -- the import hook -----------------------------------------------------------------------------


class _SelectBeforeNumbaCuda(importlib.abc.MetaPathFinder):
    """Runs :func:`select_backend` when ``numba.cuda`` is first imported, then steps aside.

    It finds nothing itself: returning None lets the next finders (numba-cuda's redirector
    among them) import numba.cuda, which then reads the chosen ``NUMBA_ENABLE_CUDASIM``.
    """

    def __init__(self) -> None:
        self._active = threading.local()

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: Any = None) -> None:
        if fullname != "numba.cuda" or getattr(self._active, "on", False):
            return None
        self._active.on = True  # numba-cuda's redirector asks every finder again
        try:
            select_backend()  # a ConfigurationError leaves the hook in place: the next import raises too
        finally:
            self._active.on = False
        # A new list, not .remove(): the import machinery is iterating over the old one,
        # and removing this entry would skip the finder after it.
        sys.meta_path = [f for f in sys.meta_path if f is not self]
        return None


_numba_cuda_lock = threading.RLock()
_numba_cuda_ready = False


def ensure_numba_cuda() -> None:
    """Import ``numba.cuda`` whole (once, under a lock) before a submodule of it is imported directly.

    ``from numba.cuda.simulator.cudadrv.devicearray import ...`` in one thread while another
    thread's ``from numba import cuda`` is still running numba.cuda's ``__init__`` imports the
    simulator's modules from two threads in opposite orders, and Python's import machinery
    raises ``_DeadlockError`` in one of them (16 threads making their first pool arrays at
    once: 1-3 of them failed in every run before this). ``import numba.cuda`` here waits for an
    import under way in another thread, so the direct import that follows finds every module
    complete. ringkernel calls this before each such import; an ``ImportError`` is left to
    that import to raise.
    """
    global _numba_cuda_ready
    if _numba_cuda_ready:
        return
    with _numba_cuda_lock:
        if _numba_cuda_ready:
            return
        for attempt in range(8):
            try:
                importlib.import_module("numba.cuda")
                break
            except ImportError:
                return
            except RuntimeError as exc:  # importlib's _DeadlockError: a user thread importing a
                # numba.cuda submodule directly at this moment (numba's modules in opposite
                # orders); the other import completes, so this one succeeds when tried again
                if type(exc).__name__ != "_DeadlockError" or attempt == 7:
                    raise
                time.sleep(0.001 * (attempt + 1))
        _numba_cuda_ready = True


_hook_lock = threading.Lock()


def install_import_hook() -> bool:
    """Make the first import of ``numba.cuda`` run :func:`select_backend` (``import ringkernel`` calls it).

    Does nothing when ``numba.cuda`` is already imported (numba has chosen) or the hook is
    installed. Returns True when the hook is (now) in place.
    """
    with _hook_lock:
        if "numba.cuda" in sys.modules:
            return False
        if not any(isinstance(f, _SelectBeforeNumbaCuda) for f in sys.meta_path):
            sys.meta_path.insert(0, _SelectBeforeNumbaCuda())
        return True
