"""DriverBackend on a thread with no current CUDA context: allocation, free and copies make the
pool's context current and retry once; any other driver error is raised as it is. (The driver
is replaced by fakes: CI has none; tests/gpu/test_hybrid_gpu.py does this on the H200 from 8
threads.)"""

from __future__ import annotations

import numpy as np
import pytest

from ringkernel import driver
from ringkernel.errors import DriverError
from ringkernel.memory.backend import DriverBackend


class _Ctx:
    def __init__(self) -> None:
        self.pushes = 0

    def push(self) -> None:
        self.pushes += 1


def _backend() -> tuple[DriverBackend, _Ctx]:
    b = object.__new__(DriverBackend)  # no driver library here: skip __init__'s checks
    ctx = _Ctx()
    b._ctx = ctx
    return b, ctx


def _failing_once(result: int, value: object = None):  # type: ignore[no-untyped-def]
    calls = []

    def fn(*args: object) -> object:
        calls.append(args)
        if len(calls) == 1:
            raise DriverError("fake", operation="fake", result=result)
        return value

    return fn, calls


@pytest.mark.parametrize("op", ["alloc", "free", "copy_to_host"])
def test_a_thread_without_a_context_gets_the_pools(op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    b, ctx = _backend()
    fn, calls = _failing_once(driver.CUDA_ERROR_INVALID_CONTEXT, 0x1000)
    if op == "alloc":
        monkeypatch.setattr(driver, "mem_alloc", fn)
        assert b.alloc(256) == 0x1000
    elif op == "free":
        monkeypatch.setattr(driver, "mem_free", fn)
        b.free(0x1000)
    else:
        monkeypatch.setattr(driver, "memcpy_dtoh", fn)
        monkeypatch.setattr(driver, "stream_handle", lambda s: 0)
        b.copy_to_host(np.empty(4, np.float32), 0x1000, 16)
    assert ctx.pushes == 1 and len(calls) == 2


def test_other_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    b, ctx = _backend()
    fn, calls = _failing_once(driver.CUDA_ERROR_ILLEGAL_ADDRESS if hasattr(driver, "CUDA_ERROR_ILLEGAL_ADDRESS") else 700)
    monkeypatch.setattr(driver, "mem_free", fn)
    with pytest.raises(DriverError):
        b.free(0x1000)
    assert ctx.pushes == 0 and len(calls) == 1


def test_in_numba_context_retries_once_after_making_numbas_context_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared retry of the launch path and hybrid's synchronisation: numba's context made
    current once, the call repeated once; other errors and a second failure raised as they are."""
    from numba import cuda

    made = []
    monkeypatch.setattr(cuda, "current_context", lambda: made.append(1))
    fn, calls = _failing_once(driver.CUDA_ERROR_INVALID_CONTEXT, 7)
    assert driver.in_numba_context(fn, 1, 2) == 7
    assert calls == [(1, 2), (1, 2)] and made == [1]

    other, calls = _failing_once(driver.CUDA_ERROR_INVALID_VALUE)
    with pytest.raises(DriverError) as info:
        driver.in_numba_context(other)
    assert info.value.result == driver.CUDA_ERROR_INVALID_VALUE and len(calls) == 1

    def always(*args: object) -> None:
        raise DriverError("fake", operation="fake", result=driver.CUDA_ERROR_INVALID_CONTEXT)

    with pytest.raises(DriverError):
        driver.in_numba_context(always)
