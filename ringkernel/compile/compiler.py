"""``CachingCompiler``: compile a kernel for a signature through numba, cache first.

On a hit the cubin is loaded straight into the current CUDA context: numba's typing,
lowering, NVVM and the linker are all skipped. On a miss numba compiles the kernel, and
the PTX, the linked cubin and the entry point's name are stored.

The cache key (:meth:`CachingCompiler.cache_key`) is the SHA-256 of: ``CACHE_VERSION``;
the ringkernel, numba-cuda and Python (major.minor) versions; the compute capability the
code is built for (``sm_90``, or ``sm_90a`` with an arch suffix); the argument types; the
compile options (fastmath, lineinfo, debug, max_registers); and the kernel's
:func:`~ringkernel.compile.fingerprint.code_fingerprint`, which covers its code, default
values, globals and closure cells, and those of every device function it calls. A kernel
that reads a value the fingerprint can hash only by type (an object of an arbitrary class)
gets one warning (docs/cache.md, "Known blind spots").
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import ConfigurationError, KernelCompileError
from .cache import CACHE_VERSION, CacheEntry, PtxCache
from .fingerprint import code_fingerprint_report
from .. import driver
from .launcher import KernelLauncher

__all__ = ["CachingCompiler", "CompiledKernel", "default_compiler"]

log = logging.getLogger(__name__)


#: Entry symbol -> kernel name of every kernel loaded in this process (a profiler reading CUPTI's
#: records, which name kernels by symbol, shows the Python name).
ENTRY_NAMES: dict[str, str] = {}


@dataclass
class CompiledKernel:
    """A kernel loaded for one signature: launcher, resources, and where it came from."""

    name: str
    entry_name: str
    argtypes: tuple[Any, ...]
    key: str
    compute_cap: str
    from_cache: bool
    registers_per_thread: int
    shared_mem_per_block: int
    max_threads_per_block: int
    launcher: KernelLauncher
    ptx: str = field(repr=False, default="")
    load_ms: float = 0.0
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: The kernel's :class:`~ringkernel.kernel.indexing.KernelIndexing` as JSON, stored with the
    #: entry so that a cache hit does not rerun the analysis (``None``: not recorded).
    indexing: str | None = None
    _module: Any = field(repr=False, default=None)
    _finalizer: Any = field(repr=False, default=None)
    #: Set when a ``GpuKernel`` keeps this kernel (its launch memo may hold the function):
    #: then the kernel's ``close()`` releases it, and this object's ``close()`` refuses.
    owned: bool = field(repr=False, default=False)

    @property
    def closed(self) -> bool:
        return self.launcher.closed

    def close(self) -> None:
        """Unload the module (idempotent); the launcher refuses launches afterwards."""
        if self.owned:
            raise ConfigurationError(
                f"kernel '{self.name}' is held by its GpuKernel, whose launches may still use it",
                hint="close the GpuKernel (kernel.close()) to release what it loaded",
            )
        self.launcher.closed = True
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> "CompiledKernel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _versions_for_key() -> dict[str, str]:
    import numba_cuda

    from .. import __version__

    return {
        "ringkernel": __version__,
        "numba_cuda": getattr(numba_cuda, "__version__", "unknown"),
        "python": f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}",
    }


class CachingCompiler:
    """Compiles kernels through numba with a :class:`PtxCache` in front.

    Parameters
    ----------
    cache:
        The cache (default: ``PtxCache()`` at the default directory).
    compute_cap:
        Target such as ``"sm_90"``; default: the current device's.
    """

    def __init__(self, cache: PtxCache | None = None, *, compute_cap: str | None = None) -> None:
        t = time.perf_counter()
        self.cache = cache if cache is not None else PtxCache()
        if compute_cap is not None:
            _parse_cc(compute_cap)
        self._cc = compute_cap
        self._lock = threading.Lock()
        self._versions: dict[str, str] = _versions_for_key()
        self._fingerprints: dict[tuple[int, bool], tuple[Any, str]] = {}
        #: Milliseconds this compiler spent on its once-per-process set-up (``__init__`` and
        #: :meth:`prepare`), reported apart from the per-kernel cache hit (``load_ms``).
        self.setup_ms = (time.perf_counter() - t) * 1e3

    def prepare(self) -> None:
        """Do the once-per-process GPU set-up now: the device's compute capability and the
        driver library's handle. Otherwise the first kernel lookup does it. Needs a GPU."""
        t = time.perf_counter()
        _ = self.compute_cap
        driver.lib()
        self.setup_ms += (time.perf_counter() - t) * 1e3

    @property
    def compute_cap(self) -> str:
        if self._cc is None:
            from numba import cuda

            major, minor = cuda.get_current_device().compute_capability
            self._cc = f"sm_{major}{minor}"
        return self._cc

    def fingerprint(self, py_func: Callable[..., Any], lines: bool = False) -> str:
        """``py_func``'s code fingerprint, computed once per function (values changed later
        in the process are not seen); warns once if it reads values hashed by type only.
        ``lines``: where the code is counts too (code compiled with line information)."""
        hit = self._fingerprints.get((id(py_func), lines))
        if hit is not None and hit[0] is py_func:
            return hit[1]
        fp, opaque = code_fingerprint_report(py_func, lines=lines)
        if opaque:
            log.warning(
                "ringkernel cache: kernel %s reads %s, which the cache key can only hash by type: "
                "changing their contents does not change the key, and a later process may load code "
                "compiled with the old values. Pass such values as kernel arguments or module-level "
                "constants (numbers, tuples, NumPy arrays), or run `ringkernel cache clear` after changing them",
                getattr(py_func, "__qualname__", py_func), ", ".join(opaque),
            )  # fmt: skip
        self._fingerprints[(id(py_func), lines)] = (py_func, fp)
        return fp

    def cache_key(self, py_func: Callable[..., Any], argtypes: Sequence[Any], options: dict[str, Any]) -> str:
        """The SHA-256 key of ``py_func`` compiled for ``argtypes`` with ``options`` (see module doc)."""
        v = self._versions
        doc = "\n".join((
            f"cache_version={CACHE_VERSION}",
            f"ringkernel={v['ringkernel']} numba_cuda={v['numba_cuda']} python={v['python']}",
            f"cc={self.compute_cap}",
            "argtypes=" + ",".join(str(t) for t in argtypes),
            "options=" + repr(sorted(options.items())),
            "code=" + self.fingerprint(py_func, lines=bool(options.get("lineinfo") or options.get("debug"))),
        ))  # fmt: skip
        return PtxCache.hash_source(doc)

    def compile(self, kernel: Any, signature: Sequence[Any] | str) -> CompiledKernel:
        """Load ``kernel`` for ``signature``, from the cache when it is there.

        ``kernel`` is a ``GpuKernel`` (or anything with its ``py_func``, ``dispatcher``,
        ``compile_options`` and ``name``) or a plain kernel function; for the source text of
        one, build it first with :func:`ringkernel.kernel_from_source`. ``signature`` is a
        tuple of numba types or a signature string (``"void(float32[:], float32[:])"``).
        """
        if isinstance(kernel, str):
            raise ConfigurationError(
                "CachingCompiler.compile takes a kernel, not source text",
                hint="build it first: ringkernel.kernel_from_source(source)",
            )
        if all(hasattr(kernel, a) for a in ("py_func", "dispatcher", "compile_options", "name")):
            py_func, dispatcher, options, name = kernel.py_func, kernel.dispatcher, kernel.compile_options, kernel.name
        elif callable(kernel) and hasattr(kernel, "__code__"):
            from numba import cuda

            py_func, dispatcher, name = kernel, cuda.jit(kernel), kernel.__name__
            options = {"fastmath": False, "lineinfo": False, "debug": False}
        else:
            raise ConfigurationError(
                f"CachingCompiler.compile takes a GpuKernel or a kernel function, got {type(kernel).__name__}"
            )
        if isinstance(signature, str):
            from numba.core import sigutils

            signature, _ = sigutils.normalize_signature(signature)
        return self.load_or_compile(py_func, tuple(signature), options, dispatcher, name)

    def load_or_compile(
        self,
        py_func: Callable[..., Any],
        argtypes: tuple[Any, ...],
        options: dict[str, Any],
        dispatcher: Any,
        name: str,
        *,
        analyze: Callable[[Any], str] | None = None,
    ) -> CompiledKernel:
        """The compiled kernel from the cache, or compiled by numba and stored. ``analyze``
        (``py_func -> str``) makes a record stored in the entry's metadata as ``indexing``
        when the kernel is compiled (the kernel package's launch analysis)."""
        t0 = time.perf_counter()
        cc = self.compute_cap
        key = self.cache_key(py_func, argtypes, options)
        t1 = time.perf_counter()
        entry = self.cache.get_entry(key, cc)
        t2 = time.perf_counter()
        timings = {"key_ms": (t1 - t0) * 1e3, "read_ms": (t2 - t1) * 1e3}
        if entry is not None and entry.cubin and entry.meta.get("entry_name"):
            try:
                return self._load(entry, argtypes, name, from_cache=True, t0=t0, timings=timings)
            except Exception as exc:  # a valid file the driver still refuses: recompile
                log.warning("ringkernel cache: entry for %s could not be loaded (%s); recompiling", name, exc)
        with self._lock:
            entry = self._compile(py_func, argtypes, dispatcher, name, key, cc, analyze)
        timings["compile_ms"] = (time.perf_counter() - t2) * 1e3
        return self._load(entry, argtypes, name, from_cache=False, t0=t0, timings=timings)

    def _compile(
        self, py_func: Any, argtypes: tuple[Any, ...], dispatcher: Any, name: str, key: str, cc: str,
        analyze: Callable[[Any], str] | None = None,
    ) -> CacheEntry:  # fmt: skip
        try:
            compiled = dispatcher.compile(argtypes)
        except Exception as exc:
            raise KernelCompileError(
                f"numba could not compile it for ({', '.join(str(t) for t in argtypes)}): "
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                kernel_name=name,
                hint="the body must be numba.cuda kernel code; the full numba message is chained below",
            ) from exc
        lib = compiled._codelibrary
        image = lib.get_cubin(cc=_parse_cc(cc))
        ptx = lib.get_asm_str(cc=_parse_cc(cc))
        code, code_type = _image_bytes(image)
        meta = {"entry_name": lib._entry_name, "name": name, "argtypes": [str(t) for t in argtypes],
                "cooperative": bool(getattr(compiled, "cooperative", False)), "code_type": code_type}  # fmt: skip
        try:
            if analyze is not None:
                meta["indexing"] = analyze(py_func)
        except Exception as exc:  # noqa: BLE001 - the launcher analyses again (and reports) when it needs to
            log.debug("kernel %s: indexing analysis failed at compile time: %s", name, exc)
        entry = CacheEntry(key, cc, ptx, code, meta)
        if not meta["cooperative"]:
            self.cache.put_entry(entry)
        return entry

    def _load(
        self, entry: CacheEntry, argtypes: tuple[Any, ...], name: str, *, from_cache: bool, t0: float,
        timings: dict[str, float],
    ) -> CompiledKernel:  # fmt: skip
        import weakref

        from numba import cuda

        from ..driver import load_function, unload_module

        t = time.perf_counter()
        cuda.current_context()  # make numba's context current on this thread
        if entry.meta.get("code_type", "cubin") not in ("cubin", "fatbin"):
            raise ValueError(f"cannot load cached code of type {entry.meta.get('code_type')!r}")
        fn = load_function(entry.cubin, str(entry.meta["entry_name"]))
        timings["module_ms"] = (time.perf_counter() - t) * 1e3
        symbol = str(entry.meta["entry_name"])
        known = ENTRY_NAMES.get(symbol)
        if known is None or name not in known.split(" / "):  # one cached entry may serve kernels of several names
            ENTRY_NAMES[symbol] = name if known is None else f"{known} / {name}"
        ck = CompiledKernel(
            name=name,
            entry_name=str(entry.meta["entry_name"]),
            argtypes=argtypes,
            key=entry.key,
            compute_cap=entry.compute_cap,
            from_cache=from_cache,
            registers_per_thread=fn.registers_per_thread,
            shared_mem_per_block=fn.shared_mem_per_block,
            max_threads_per_block=fn.max_threads_per_block,
            launcher=KernelLauncher(fn.function, argtypes, name),
            ptx=entry.ptx,
            indexing=ix if isinstance(ix := entry.meta.get("indexing"), str) else None,
            load_ms=(time.perf_counter() - t0) * 1e3,
            timings_ms=timings,
            _module=fn.module,
        )
        # Unload when the compiled kernel is dropped, not at exit (the context goes first then).
        fin = weakref.finalize(ck, unload_module, fn.module)
        fin.atexit = False
        ck._finalizer = fin
        return ck


def _image_bytes(image: Any) -> tuple[bytes, str]:
    """The bytes of what numba linked: raw bytes (older numba) or a cuda.core ``ObjectCode``."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image), "cubin"
    code = image.code
    if not isinstance(code, (bytes, bytearray, memoryview)):  # a path to the object on disk
        with open(code, "rb") as f:
            code = f.read()
    return bytes(code), str(getattr(image, "code_type", "cubin"))


def _parse_cc(cc: str) -> tuple[int, int]:
    """``"sm_90"`` / ``"sm_90a"`` -> ``(9, 0)``."""
    import re

    m = re.fullmatch(r"sm_(\d+)(\d)a?", cc)
    if m is None:
        raise ConfigurationError(f"compute capability {cc!r} is not of the form sm_XY or sm_XYa")
    return int(m.group(1)), int(m.group(2))


_default: CachingCompiler | None = None
_default_lock = threading.Lock()


def default_compiler() -> CachingCompiler:
    """The process-wide compiler ``@gpu_kernel`` uses (cache at the default directory).

    Created on the first launch of any kernel, with the process's one-time set-up (cache
    directory, versions, the device's compute capability, the driver library's handle:
    ``setup_ms``), so that each kernel's first lookup does only that kernel's work.
    """
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                compiler = CachingCompiler()
                from ..config import simulator_enabled

                if not simulator_enabled():
                    compiler.prepare()
                _default = compiler
    return _default


def reset() -> None:
    """Forget the process-wide compiler (tests; after changing RINGKERNEL_CACHE_DIR)."""
    global _default
    _default = None
