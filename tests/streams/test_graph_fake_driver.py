"""Graph capture's driver call sequence, against a fake driver (the GPU test checks the real thing)."""

from __future__ import annotations

import ctypes

import pytest

from ringkernel import ConfigurationError, DeviceError
from ringkernel import driver as L
from ringkernel.streams.graph import CapturedGraph


class FakeLib:
    def __init__(self, fail: str = "") -> None:
        self.calls: list[str] = []
        self.fail = fail

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        def call(*args):  # type: ignore[no-untyped-def]
            self.calls.append(name)
            if name == "cuStreamEndCapture":
                ctypes.cast(args[1], ctypes.POINTER(ctypes.c_void_p))[0] = 0x6A
            if name == "cuGraphInstantiateWithFlags":
                ctypes.cast(args[0], ctypes.POINTER(ctypes.c_void_p))[0] = 0xE0
            return 999 if name == self.fail else 0

        return call


def test_capture_instantiate_replay_destroy(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = FakeLib()
    monkeypatch.setattr(L, "_lib", lib)
    g = CapturedGraph(object(), 0x51)
    with pytest.raises(ConfigurationError, match="nothing captured"):
        g.replay()
    with g:
        pass
    g.replay()
    g.replay()
    g.close()
    g.close()
    assert lib.calls == ["cuStreamBeginCapture_v2", "cuStreamEndCapture", "cuGraphInstantiateWithFlags",
                         "cuGraphLaunch", "cuGraphLaunch", "cuGraphExecDestroy", "cuGraphDestroy"]  # fmt: skip
    assert g.replays == 2


def test_failures_are_reported_and_clean_up(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = FakeLib(fail="cuStreamEndCapture")
    monkeypatch.setattr(L, "_lib", lib)
    monkeypatch.setattr(L, "error_name", lambda rc: f"CUresult {rc}")
    monkeypatch.setattr(L, "_error_string", lambda rc: "")
    with pytest.raises(DeviceError, match="cuStreamEndCapture failed: CUresult 999"):
        with CapturedGraph(object(), 0x51):
            pass
    lib2 = FakeLib()
    monkeypatch.setattr(L, "_lib", lib2)
    with pytest.raises(ZeroDivisionError):
        with CapturedGraph(object(), 0x51):
            1 / 0  # noqa: B018
    assert lib2.calls[-1] == "cuGraphDestroy"  # a capture broken by an error is discarded
    with pytest.raises(ConfigurationError, match="default stream"):
        CapturedGraph(object(), 0)
