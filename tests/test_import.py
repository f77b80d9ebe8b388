"""`import ringkernel` imports no numba, initialises no CUDA and writes nothing to disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent(
    """
    import json, os, sys
    events = []

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(mode, str) and any(c in mode for c in "wax+"):
                events.append(["open-write", str(path)])
            elif isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                events.append(["open-write", str(path)])
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "shutil.rmtree", "os.truncate"):
            events.append([event, str(args[0])])
        elif event == "ctypes.dlopen" and args[0] is not None:
            # ctypes' own import opens the running process (None); a driver would be named.
            events.append([event, str(args[0])])

    sys.addaudithook(hook)
    import ringkernel
    from ringkernel import GpuArchitecture, KernelModeSelector, WorkloadProfile, gpu_kernel

    @gpu_kernel
    def k(a):
        pass

    KernelModeSelector(GpuArchitecture.preset("H200")).plan(WorkloadProfile(1000))
    print(json.dumps({
        "events": events,
        "numba_imported": any(m == "numba" or m.startswith("numba.") for m in sys.modules),
        "cuda_bindings_imported": any(m.startswith("cuda.") for m in sys.modules),
        "hook_first": type(sys.meta_path[0]).__name__,
    }))
    """
)


def test_import_is_side_effect_free(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env.pop("RINGKERNEL_SIMULATOR", None)
    env.update(
        PYTHONDONTWRITEBYTECODE="1",
        HOME=str(tmp_path / "home"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        RINGKERNEL_CACHE_DIR=str(tmp_path / "rk"),
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["events"] == [], f"import ringkernel touched the disk or loaded a driver: {report['events']}"
    assert not report["numba_imported"], "import ringkernel must not import numba (it would fix simulator-vs-GPU early)"
    assert not report["cuda_bindings_imported"]
    assert report["hook_first"] == "_SelectBeforeNumbaCuda", "the backend is chosen at the first numba.cuda import"
    assert list(tmp_path.iterdir()) == [], "nothing may be created"


def test_lazy_device_helpers_resolve() -> None:
    import ringkernel

    assert callable(ringkernel.thread_idx_x)
    assert "global_thread_id" in dir(ringkernel)
    assert set(ringkernel.__all__) >= {"gpu_kernel", "KernelModeSelector", "GpuArchitecture", "grid_stride"}
    try:
        ringkernel.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("unknown attribute must raise AttributeError")


def test_every_public_name_of_a_subpackage_is_re_exported() -> None:
    """STYLE.md: public means listed in ``__all__`` and re-exported from ``ringkernel``."""
    import importlib

    import ringkernel

    for sub in ("benchmark", "compile", "memory", "streams"):
        mod = importlib.import_module(f"ringkernel.{sub}")
        for name in mod.__all__:
            assert name in ringkernel.__all__, f"ringkernel.{sub}.{name} is not in ringkernel.__all__"
            assert getattr(ringkernel, name) is getattr(mod, name), name
    for name in ringkernel.__all__:
        assert hasattr(ringkernel, name), name
    assert callable(ringkernel.use_pool) and callable(ringkernel.plugin_pool)
