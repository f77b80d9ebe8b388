"""The compiled launch path: ``_native.c`` built on first use with the system C compiler.

The hot path of a launch (GpuKernel's call, a layout or memo entry's checks, packing and
``cuLaunchKernel``) and of the memory pool's allocate/free is C when this module can build
and load ``_native.c`` (issue 12: a
Python frame and ctypes' call cost ~3 us a launch, more than CuPy's whole launch). As Triton
builds its launcher, the source is compiled once with the compiler Python was built with
(``sysconfig``'s ``CC``) against Python's headers and cached on disk, keyed by the source,
the Python build and the compiler; a later process loads the cached library (~1 ms).

Loading a shared library runs its code, so the cache is trusted only as the kernel cache's
private mode trusts a directory: ``<cache dir>/native`` and the library must be owned by
the current user, be writable by no one else, and not be symbolic links; when they are not,
the library is built afresh in a private temporary directory for this process.

``RINGKERNEL_NATIVE=0`` turns the compiled path off (the pure-Python path gives the same
results, a few microseconds slower a launch); ``=1`` makes a failure to build an error
instead of a fallback; unset, a missing compiler or header falls back to Python, and
``status()`` (shown by ``ringkernel info``) says which path is in use and why.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from .errors import ConfigurationError

__all__ = ["load", "status", "SOURCE", "NativeStatus"]

SOURCE = Path(__file__).with_name("_native.c")
_MODULE_NAME = "_rk_native"
_lock = threading.Lock()
_module: ModuleType | None = None
_why: str | None = None  # why the compiled path is not in use (None: not tried yet, or loaded)
_tried = False
#: False: launch entries are made in Python even where the module is loaded (tests compare both).
ENTRIES = True
#: False: ``GpuKernel.__call__`` stays Python (kernel/core.py install_native_call).
CALL = True
#: False: ``GpuMemoryPool.allocate``/``deallocate`` stay Python (memory/pool.py install_native_methods).
POOL = True
#: False: launch reports stay Python (kernel/hooks.py use_native; a profiler's ``Recorder``).
HOOKS = True


class NativeStatus(NamedTuple):
    """Whether the compiled launch path is loaded, and the library's path or why not."""

    in_use: bool
    detail: str


def _mode() -> bool | None:
    from .config import settings

    return settings().native


def _compiler() -> list[str] | None:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    argv = shlex.split(cc)
    if not argv or shutil.which(argv[0]) is None:
        for alt in ("cc", "gcc", "clang"):
            if shutil.which(alt):
                return [alt]
        return None
    return argv


def _key(cc: list[str], source: bytes) -> str:
    h = hashlib.sha256(source)
    for part in (sys.version, sysconfig.get_config_var("EXT_SUFFIX") or "", sysconfig.get_config_var("SOABI") or "",
                 " ".join(cc), sys.platform):  # fmt: skip
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:24]


def _private(path: Path, *, directory: bool) -> str | None:
    """Why ``path`` must not be trusted (None: it is ours, a plain file/dir, writable by us only)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot read {path}: {exc}"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if directory != stat.S_ISDIR(st.st_mode) or (not directory and not stat.S_ISREG(st.st_mode)):
        return f"{path} is not a {'directory' if directory else 'regular file'}"
    if hasattr(os, "geteuid"):
        if st.st_uid != os.geteuid():
            return f"{path} is owned by uid {st.st_uid}, not by you"
        if stat.S_IMODE(st.st_mode) & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _build(cc: list[str], src: Path, out: Path) -> None:
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        raise RuntimeError(f"Python's headers are missing ({include}/Python.h): install python3-dev")
    _sweep(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    cmd = [*cc, "-O2", "-shared", "-fPIC", "-I", include, str(src), "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{(done.stderr or done.stdout)[-2000:]}")
        os.chmod(tmp, 0o700)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sweep(out: Path, older_than_s: float = 600.0) -> None:
    """Remove temporary files of builds killed half-way (older than ten minutes: a build
    takes about a second, so none of them is still being written)."""
    import time

    try:
        for f in out.parent.glob(f".{_MODULE_NAME}-*.tmp"):
            try:
                if time.time() - f.lstat().st_mtime > older_than_s:
                    f.unlink()
            except OSError:
                pass
    except OSError:
        pass


def _import(path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(_MODULE_NAME, str(path))
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, str(path), loader=loader)
    if spec is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def _load_uncached() -> ModuleType:
    from .config import cache_root

    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (cc, gcc or clang, or $CC)")
    source = SOURCE.read_bytes()
    name = f"{_MODULE_NAME}-{_key(cc, source)}{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"
    directory = cache_root() / "native"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        problem = _private(directory, directory=True)
    except OSError as exc:
        problem = f"cannot create {directory}: {exc}"
    if problem is None:
        lib = directory / name
        if not os.path.lexists(lib):
            _build(cc, SOURCE, lib)
        problem = _private(lib, directory=False)
        if problem is None:
            try:
                return _import(lib)
            except ImportError:  # a damaged file (a full disk, a crash of an older writer): build it again
                os.unlink(lib)
                _build(cc, SOURCE, lib)
                return _import(lib)
    # an untrusted cache: build afresh in a private directory of this process
    tmpdir = Path(tempfile.mkdtemp(prefix="ringkernel-native-"))
    lib = tmpdir / name
    _build(cc, SOURCE, lib)
    return _import(lib)


def load() -> ModuleType | None:
    """The compiled module (built and cached on first use), or None where it cannot be used
    (``status()`` says why). ``RINGKERNEL_NATIVE=1`` raises :class:`ConfigurationError` instead."""
    global _module, _why, _tried
    if _tried:
        return _module
    with _lock:
        if _tried:
            return _module
        mode = _mode()
        if mode is False:
            _why = "turned off (RINGKERNEL_NATIVE=0)"
        else:
            try:
                mod = _load_uncached()
                from . import _current

                mod.configure(_current)
                _module = mod
            except Exception as exc:  # noqa: BLE001 - reported by status(); RINGKERNEL_NATIVE=1 raises it
                _why = f"{type(exc).__name__}: {exc}"
                if mode is True:
                    _tried = True
                    raise ConfigurationError(
                        f"the compiled launch path could not be built: {_why}",
                        hint="install a C compiler and Python's headers (python3-dev), or unset RINGKERNEL_NATIVE "
                        "to fall back to the pure-Python launch path",
                    ) from exc
        _tried = True
        return _module


def loaded() -> ModuleType | None:
    """The compiled module if it is loaded already (never builds it)."""
    return _module


def status() -> NativeStatus:
    """Whether launches use the compiled path, and the library's path or why not."""
    mod = load()
    if mod is not None:
        return NativeStatus(True, str(getattr(mod, "__file__", "loaded")))
    return NativeStatus(False, _why or "not loaded")


def entry_type() -> Any:
    """``LaunchEntry`` of the compiled module, or None."""
    mod = load()
    return None if mod is None or not ENTRIES else mod.LaunchEntry
