"""Every memory test runs twice: with ``GpuMemoryPool.allocate``/``deallocate`` as the Python
methods and as the compiled module's (ringkernel/_native.c ``PoolMethod``, where it builds),
which must behave identically."""

from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(autouse=True, params=["python", "native"])
def pool_methods(request: pytest.FixtureRequest) -> Iterator[str]:
    from ringkernel import native
    from ringkernel.memory import pool

    if request.param == "native":
        if native.load() is None:
            pytest.skip(f"the compiled module is not available here: {native.status().detail}")
        assert pool.install_native_methods()
    else:
        pool.uninstall_native_methods()
    try:
        yield request.param
    finally:
        pool.uninstall_native_methods()
