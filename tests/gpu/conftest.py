"""Fixtures of the GPU tests."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh kernel cache directory for the process-wide compiler."""
    from ringkernel import config
    from ringkernel.compile import compiler

    d = tmp_path / "kcache"
    monkeypatch.setenv("RINGKERNEL_CACHE_DIR", str(d))
    config.reset()
    compiler.reset()
    yield d
    compiler.reset()
