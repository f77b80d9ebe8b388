"""Test set-up: numba's CUDA simulator unless RINGKERNEL_GPU_TESTS=1; fresh random data."""

from __future__ import annotations

import os
import secrets
from typing import Iterator

# Must happen before anything imports numba: numba picks simulator or GPU at import time.
if os.environ.get("RINGKERNEL_GPU_TESTS") != "1":
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not SIMULATOR:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: run with RINGKERNEL_GPU_TESTS=1 on the GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    """A generator with a fresh seed, printed so a failure can be replayed."""
    seed = secrets.randbits(32)
    print(f"random seed: {seed}")
    return np.random.default_rng(seed)


@pytest.fixture(autouse=True)
def _fresh_settings() -> None:
    from ringkernel import config

    config.reset()
    yield
    config.reset()


@pytest.fixture(params=["python", "native"])
def launch_reports(request: pytest.FixtureRequest) -> Iterator[str]:
    """Launch reports through the Python ``notify`` and profiler hook, or the compiled module's
    ``Notifier`` and ``Recorder`` (ringkernel/_native.c, where it builds): profiling tests run
    with both (``pytestmark = pytest.mark.usefixtures("launch_reports")``)."""
    from ringkernel import native
    from ringkernel.kernel import hooks

    if request.param == "native":
        mod = native.load()
        if mod is None:
            pytest.skip(f"the compiled module is not available here: {native.status().detail}")
        native.HOOKS = True
        hooks.use_native(mod)
    else:
        native.HOOKS = False
        hooks.use_python()
    try:
        yield request.param
    finally:
        native.HOOKS = True
        hooks.use_python()


@pytest.fixture
def mod() -> object:
    """The compiled module (ringkernel/_native.c, built with the local compiler), or the test is skipped."""
    from ringkernel import native

    m = native.load()
    if m is None:
        pytest.skip(f"the compiled module is not available here: {native.status().detail}")
    return m
