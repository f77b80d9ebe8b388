"""Atomic file writes: a temp file in the target's directory, fsync, ``os.replace``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes, *, dir_mode: int = 0o777) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part.

    The directory is created (with ``dir_mode``) if needed; the temp file is removed on failure.
    Raises ``OSError`` (read-only or full file systems) for the caller to handle.
    """
    path.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
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
