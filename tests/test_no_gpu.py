"""A GPU is optional everywhere: without one (and without NUMBA_ENABLE_CUDASIM) ringkernel picks the simulator.

The test suite itself runs with ``NUMBA_ENABLE_CUDASIM=1`` (tests/conftest.py), so the
automatic choice is tested here in subprocesses whose environment has neither
``NUMBA_ENABLE_CUDASIM`` nor ``RINGKERNEL_SIMULATOR``; they are skipped on a machine with a
GPU, where the automatic choice is the GPU. The decision logic itself is tested in-process
with the probe and numba's module replaced.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from ringkernel import config
from ringkernel.errors import ConfigurationError, DeviceError

ROOT = Path(__file__).resolve().parents[1]
#: A phrase of the no-GPU warning (ringkernel.config._NO_GPU_WARNING).
WARNING = "kernels run on numba's CUDA simulator"


def _no_gpu() -> bool:
    return not config.gpu_present()


needs_no_gpu = pytest.mark.skipif(
    not _no_gpu(), reason="a CUDA GPU is present: the automatic choice is the GPU there"
)


def _run(tmp_path: Path, args: list[str], timeout: int = 120, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for name in ("NUMBA_ENABLE_CUDASIM", "RINGKERNEL_GPU_TESTS", "RINGKERNEL_SIMULATOR"):
        env.pop(name, None)
    env["RINGKERNEL_CACHE_DIR"] = str(tmp_path / "rk-cache")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path
    )


def _script(tmp_path: Path, code: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return _run(tmp_path, ["-c", textwrap.dedent(code)], **extra_env)


# A script's report of the ringkernel error it expected: exit 3 and one JSON line.
ERROR_REPORT = """
import json, sys
def report(exc):
    print(json.dumps({"type": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__], "msg": str(exc)}))
    sys.exit(3)
"""


def _error(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert out.returncode == 3, f"expected a reported error (exit 3), got {out.returncode}\n{out.stdout}\n{out.stderr}"
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- (a) the README's snippet ---------------------------------------------------------------------


def readme_snippet() -> str:
    """The README's python block, with the size its comment gives for the simulator."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) == 1, "the README has one python snippet"
    code = blocks[0]
    assert "n = 1 << 24" in code and "1 << 12" in code, "the snippet's size line changed: update this test"
    return code.replace("n = 1 << 24", "n = 1 << 12", 1)


@needs_no_gpu
def test_readme_snippet_runs_on_the_simulator_with_one_warning(tmp_path: Path) -> None:
    out = _script(tmp_path, readme_snippet() + "\nimport numpy as _np\nassert _np.allclose(c.copy_to_host(), a.copy_to_host() + b.copy_to_host())\n")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "numba CUDA simulator" in out.stdout  # explain() names the device
    assert out.stderr.count(WARNING) == 1, out.stderr
    assert "RINGKERNEL_SIMULATOR=1" in out.stderr and "RINGKERNEL_SIMULATOR=0" in out.stderr


# -- (b) every example -------------------------------------------------------------------------------

EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))


def test_every_example_is_listed() -> None:
    assert {"vector_add.py", "memory_pool.py", "streams_async.py", "kernel_cache.py", "benchmark_suite.py"} <= set(EXAMPLES)


@needs_no_gpu
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_without_gpu(tmp_path: Path, name: str) -> None:
    # Each example picks simulator-sized work by itself (tests/test_cli.py runs them the same way).
    args = [str(ROOT / "examples" / name)]
    if name == "benchmark_suite.py":
        args.append(str(tmp_path / "bench"))
    out = _run(tmp_path, args, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "CudaSupportError" not in out.stderr
    assert out.stderr.count(WARNING) <= 1, out.stderr


# -- (c) the library's own entry points ----------------------------------------------------------


@needs_no_gpu
def test_pool_kernels_and_a_launch_without_gpu(tmp_path: Path) -> None:
    out = _script(
        tmp_path,
        """
        import numpy as np
        from ringkernel import GpuMemoryPool, GpuArchitecture, StreamManager
        pool = GpuMemoryPool()
        import ringkernel.kernels as K
        rng = np.random.default_rng()
        x, y = rng.standard_normal(1000).astype(np.float32), rng.standard_normal(1000).astype(np.float32)
        dx, dy, dout = (pool.device_array(1000, np.float32) for _ in range(3))
        dx.copy_to_device(x); dy.copy_to_device(y)
        K.saxpy(np.float32(2.0), dx, dy, dout)
        assert np.allclose(dout.copy_to_host(), K.saxpy_reference(2.0, x, y), rtol=1e-6)
        assert np.isclose(K.sum_reduce(dx), K.sum_reduce_reference(x))
        with StreamManager() as m:
            assert m.simulated
        assert GpuArchitecture.current().simulated
        print("ok", pool.backend.name)
        """,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == ["ok", "cuda-simulator"], out.stdout
    assert out.stderr.count(WARNING) == 1, out.stderr


@needs_no_gpu
def test_numba_imported_before_ringkernel_but_not_numba_cuda(tmp_path: Path) -> None:
    """`import numba` first has numba.config read NUMBA_ENABLE_CUDASIM=0: the choice must reach it too."""
    out = _script(
        tmp_path,
        """
        import numba
        from numba import njit
        import numpy as np
        from ringkernel.kernels import vector_add
        from numba import cuda
        assert numba.config.ENABLE_CUDASIM == 1
        a = cuda.to_device(np.arange(100, dtype=np.float32))
        c = cuda.device_array_like(a)
        vector_add(a, a, c)
        assert np.array_equal(c.copy_to_host(), 2 * np.arange(100, dtype=np.float32))
        print("ok")
        """,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr.count(WARNING) == 1, out.stderr


# -- (d) RINGKERNEL_SIMULATOR ------------------------------------------------------------------------

SMALL_LAUNCH = """
import numpy as np
import ringkernel
from ringkernel.kernels import vector_add
from numba import cuda
a = cuda.to_device(np.ones(64, dtype=np.float32))
c = cuda.device_array_like(a)
vector_add(a, a, c)
assert (c.copy_to_host() == 2).all()
print("simulator" if ringkernel.config.simulator_enabled() else "gpu")
"""


def test_simulator_forced_gives_no_warning(tmp_path: Path) -> None:
    out = _script(tmp_path, SMALL_LAUNCH, RINGKERNEL_SIMULATOR="1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "simulator"
    assert WARNING not in out.stderr, out.stderr


@needs_no_gpu
def test_gpu_forced_without_gpu_is_a_clear_error(tmp_path: Path) -> None:
    out = _script(
        tmp_path,
        ERROR_REPORT
        + """
import ringkernel.kernels   # defining kernels needs no device
from ringkernel import GpuMemoryPool, RingKernelError
try:
    GpuMemoryPool()
except RingKernelError as exc:
    report(exc)
""",
        RINGKERNEL_SIMULATOR="0",
    )
    err = _error(out)
    assert err["type"] == "DeviceError", err
    assert "RINGKERNEL_SIMULATOR=0" in err["msg"] and "no usable" in err["msg"]
    assert "RINGKERNEL_SIMULATOR=1" in err["msg"], "the hint says how to use the simulator"
    assert "CudaSupportError" not in out.stderr and WARNING not in out.stderr


@needs_no_gpu
def test_gpu_forced_without_gpu_architecture_query(tmp_path: Path) -> None:
    out = _script(
        tmp_path,
        ERROR_REPORT
        + """
from ringkernel import GpuArchitecture, DeviceError
try:
    GpuArchitecture.current()
except DeviceError as exc:
    report(exc)
""",
        RINGKERNEL_SIMULATOR="0",
    )
    assert "RINGKERNEL_SIMULATOR=0" in _error(out)["msg"]


def test_bogus_value_is_a_configuration_error(tmp_path: Path) -> None:
    out = _script(
        tmp_path,
        ERROR_REPORT
        + """
import ringkernel   # importing does not read it
from ringkernel import ConfigurationError
try:
    from numba import cuda   # the first import of numba.cuda makes the choice
except ConfigurationError as exc:
    report(exc)
""",
        RINGKERNEL_SIMULATOR="bogus",
    )
    err = _error(out)
    assert err["type"] == "ConfigurationError" and "ValueError" in err["mro"]
    assert "'bogus'" in err["msg"] and "1" in err["msg"] and "0" in err["msg"] and "unset" in err["msg"]


# -- (e) numba.cuda imported before ringkernel ----------------------------------------------------------


@needs_no_gpu
def test_numba_cuda_imported_first_without_gpu_names_the_fix(tmp_path: Path) -> None:
    out = _script(
        tmp_path,
        ERROR_REPORT
        + """
from numba import cuda
import ringkernel
from ringkernel import GpuMemoryPool, GpuArchitecture, DeviceError
msgs = []
for first_use in (GpuMemoryPool, GpuArchitecture.current):
    try:
        first_use()
    except DeviceError as exc:
        msgs.append(str(exc))
assert len(msgs) == 2 and msgs[0] == msgs[1], msgs
report(DeviceError(msgs[0]))
""",
    )
    err = _error(out)
    assert "numba.cuda was imported before ringkernel" in err["msg"], err
    assert "import ringkernel before numba.cuda" in err["msg"]
    assert "RINGKERNEL_SIMULATOR=1" in err["msg"] and "NUMBA_ENABLE_CUDASIM=1" in err["msg"]
    assert "CudaSupportError" not in out.stderr


def test_numba_cuda_imported_first_with_the_simulator_variable_works(tmp_path: Path) -> None:
    code = "from numba import cuda\n" + SMALL_LAUNCH
    out = _script(tmp_path, code, NUMBA_ENABLE_CUDASIM="1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "simulator" and WARNING not in out.stderr


# -- the decision, in-process ---------------------------------------------------------------------------


class _Probe:
    def __init__(self, present: bool) -> None:
        self.present = present
        self.calls = 0

    def __call__(self) -> tuple[bool, str]:
        self.calls += 1
        return self.present, "" if self.present else "stub: no driver"


@pytest.mark.parametrize(
    "env, present, simulator, probed",
    [
        ({"RINGKERNEL_SIMULATOR": "1"}, True, True, False),
        ({"RINGKERNEL_SIMULATOR": "0"}, False, False, False),
        ({"NUMBA_ENABLE_CUDASIM": "1"}, True, True, False),
        ({"NUMBA_ENABLE_CUDASIM": "1", "RINGKERNEL_SIMULATOR": "0"}, True, True, False),
        ({"NUMBA_ENABLE_CUDASIM": "0"}, True, False, True),
        ({"NUMBA_ENABLE_CUDASIM": "yes"}, False, True, True),  # numba reads an unparsable value as 0
        ({}, True, False, True),
        ({}, False, True, True),
        ({"RINGKERNEL_SIMULATOR": ""}, False, True, True),  # empty: unset
        ({"RINGKERNEL_SIMULATOR": " 1 "}, False, True, False),
    ],
)
def test_decide(env: dict[str, str], present: bool, simulator: bool, probed: bool) -> None:
    probe = _Probe(present)
    assert config._decide(env, probe).simulator is simulator
    assert probe.calls == int(probed), "the driver is asked only when nothing forces the choice"


@pytest.mark.parametrize("value", ["true", "yes", "2", "on", "sim"])
def test_decide_rejects_other_values(value: str) -> None:
    with pytest.raises(ConfigurationError, match="RINGKERNEL_SIMULATOR") as exc:
        config._decide({"RINGKERNEL_SIMULATOR": value}, _Probe(True))
    assert "set it to 1" in str(exc.value) and "0 (require a CUDA GPU)" in str(exc.value)
    with pytest.raises(ConfigurationError):
        config.Settings.from_environ({"RINGKERNEL_SIMULATOR": value})


def test_settings_carry_the_choice() -> None:
    assert config.Settings.from_environ({"RINGKERNEL_SIMULATOR": "1"}).simulator is True
    assert config.Settings.from_environ({"RINGKERNEL_SIMULATOR": "0"}).simulator is False
    assert config.Settings.from_environ({}).simulator is None


@pytest.fixture
def before_numba_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """select_backend as it runs before numba.cuda is imported, with its effects recorded, not applied."""
    state: dict[str, Any] = {"enabled": 0, "probe": _Probe(False)}

    def enable() -> None:
        state["enabled"] += 1

    def gpu_present() -> bool:
        present, config._probe_detail = state["probe"]()
        return present

    monkeypatch.delitem(sys.modules, "numba.cuda", raising=False)  # restored afterwards; nothing may import it meanwhile
    monkeypatch.setattr(config, "_enable_simulator", enable)
    monkeypatch.setattr(config, "gpu_present", gpu_present)
    monkeypatch.setattr(config, "_numba_sees_gpu", lambda: False)
    monkeypatch.setattr(config, "_probe_detail", "")  # restored: the fake probe writes it
    for name in ("NUMBA_ENABLE_CUDASIM", "RINGKERNEL_SIMULATOR"):
        monkeypatch.delenv(name, raising=False)
    config.reset_backend_selection()
    yield state
    config.reset_backend_selection()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("ringkernel")]


def test_select_backend_without_gpu_warns_once(before_numba_cuda: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    assert config.select_backend() is True
    assert config.select_backend() is True and config.simulator_enabled() is True
    assert before_numba_cuda["enabled"] == 1 and before_numba_cuda["probe"].calls == 1
    (msg,) = _warnings(caplog)
    assert WARNING in msg and "stub: no driver" in msg and "RINGKERNEL_SIMULATOR=1" in msg and "RINGKERNEL_SIMULATOR=0" in msg
    assert config.require_backend() is True


def test_select_backend_with_gpu_is_silent(before_numba_cuda: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    before_numba_cuda["probe"] = _Probe(True)
    assert config.select_backend() is False
    assert before_numba_cuda["enabled"] == 0 and _warnings(caplog) == []


def test_select_backend_is_thread_safe(before_numba_cuda: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        results.append(config.select_backend())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 16
    assert before_numba_cuda["enabled"] == 1 and len(_warnings(caplog)) == 1


def test_forced_simulator_is_silent(
    before_numba_cuda: dict[str, Any], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RINGKERNEL_SIMULATOR", "1")
    assert config.select_backend() is True
    assert before_numba_cuda["probe"].calls == 0 and before_numba_cuda["enabled"] == 1 and _warnings(caplog) == []


def test_forced_gpu_without_one_fails_at_first_use(
    before_numba_cuda: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RINGKERNEL_SIMULATOR", "0")
    assert config.select_backend() is False  # choosing is not using: no error yet
    with pytest.raises(DeviceError, match="RINGKERNEL_SIMULATOR=0 requires a CUDA GPU") as exc:
        config.require_backend()
    assert exc.value.details["reason"] == "RINGKERNEL_SIMULATOR=0" and "RINGKERNEL_SIMULATOR=1" in str(exc.value)


def test_numba_variable_wins_over_forced_gpu_with_a_warning(
    before_numba_cuda: dict[str, Any], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RINGKERNEL_SIMULATOR", "0")
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    assert config.select_backend() is True
    (msg,) = _warnings(caplog)
    assert "overrides RINGKERNEL_SIMULATOR=0" in msg


def test_use_simulator_if_no_gpu_is_quiet(before_numba_cuda: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    assert config.use_simulator_if_no_gpu() is True
    assert before_numba_cuda["enabled"] == 1 and _warnings(caplog) == []


def test_after_numba_cuda_it_reports_numbas_choice() -> None:
    """In this process numba.cuda is imported (the simulator, or the GPU with RINGKERNEL_GPU_TESTS=1)."""
    import numba.cuda.core.config as cuda_config

    config.reset_backend_selection()
    try:
        assert config.select_backend() is bool(cuda_config.ENABLE_CUDASIM)
        assert config.simulator_enabled() is config.select_backend()
        assert config.install_import_hook() is False, "no hook once numba has chosen"
    finally:
        config.reset_backend_selection()


def test_reset_keeps_the_choice() -> None:
    before = config.select_backend()
    config.reset()
    assert config.select_backend() is before


def test_import_hook_selects_once_and_steps_aside(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = config._SelectBeforeNumbaCuda()
    calls: list[str] = []

    def select() -> bool:
        calls.append("select")
        assert hook.find_spec("numba.cuda") is None  # re-entrance (numba-cuda's redirector asks again)
        return True

    monkeypatch.setattr(sys, "meta_path", [hook, *sys.meta_path])
    monkeypatch.setattr(config, "select_backend", select)
    assert hook.find_spec("numpy") is None and calls == []
    assert hook.find_spec("numba.cuda.cudadrv") is None and calls == []
    assert hook.find_spec("numba.cuda") is None
    assert calls == ["select"]
    assert hook not in sys.meta_path


def test_import_hook_keeps_its_place_when_the_variable_is_bogus(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = config._SelectBeforeNumbaCuda()
    monkeypatch.setattr(sys, "meta_path", [hook, *sys.meta_path])
    monkeypatch.delitem(sys.modules, "numba.cuda", raising=False)
    monkeypatch.setenv("RINGKERNEL_SIMULATOR", "maybe")
    config.reset_backend_selection()
    try:
        with pytest.raises(ConfigurationError):
            hook.find_spec("numba.cuda")
        assert hook in sys.meta_path, "the next import of numba.cuda must raise again"
    finally:
        config.reset_backend_selection()
