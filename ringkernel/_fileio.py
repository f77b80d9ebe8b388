"""Atomic file writes: a temp file in the target's directory, fsync, ``os.replace``."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

#: What ``tempfile.mkstemp`` creates: readable and writable by the owner only.
PRIVATE_MODE = 0o600

_umask_lock = threading.Lock()
_umask_fallback: int | None = None


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows.

    Linux reports it in ``/proc/self/status``; elsewhere it is read once with the
    ``os.umask`` set-and-restore dance, under a lock and with a restrictive temporary value
    (0o077), so a file another thread creates in that instant is private rather than
    world-writable, and then remembered (``os.umask`` is process-global, so reading it
    again would reopen that window on every call).
    """
    global _umask_fallback
    mask = _proc_umask()
    if mask is not None:
        return mask
    with _umask_lock:
        if _umask_fallback is None:
            old = os.umask(0o077)
            os.umask(old)
            _umask_fallback = old
        return _umask_fallback


def _proc_umask() -> int | None:
    """The umask from ``/proc/self/status`` (Linux 4.7 and later), or ``None``."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def shared_file_mode() -> int:
    """The mode ``open()`` would give a new file: ``0o666 & ~umask`` (0o644 under umask 0o022)."""
    return 0o666 & ~current_umask()


def atomic_write_bytes(
    path: Path, data: bytes, *, dir_mode: int = 0o777, mode: int = PRIVATE_MODE, prefix: str | None = None,
    suffix: str = ".tmp",
) -> Path:  # fmt: skip
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part.

    The directory is created (with ``dir_mode``) if needed; the temp file is removed on failure.
    The file gets permission bits ``mode``: private (0o600) by default, as the kernel cache
    wants; files meant for people to read and share (reports) pass ``shared_file_mode()``.
    The temp file is named ``prefix + <random> + suffix`` in the target's directory
    (default prefix: ``"." + path.name + "."``); a caller that cleans up the temp files of
    killed writers passes a prefix of its own, so it can recognise them and only them.
    Raises ``OSError`` (read-only or full file systems) for the caller to handle.
    """
    path.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}." if prefix is None else prefix, suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode != PRIVATE_MODE:
                # Before any data is written, so the content is never readable more widely
                # than intended; fchmod is not subject to the umask.
                if hasattr(os, "fchmod"):
                    os.fchmod(f.fileno(), mode)
                else:  # pragma: no cover - Windows before Python 3.13
                    os.chmod(tmp, mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
