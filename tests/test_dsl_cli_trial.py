"""Defects an adversarial trial found in @gpu_kernel's options, kernel_from_source and the
command line (tenth session), each pinned down."""

from __future__ import annotations

import numpy as np
import pytest

from ringkernel import gpu_kernel, kernel_from_source
from ringkernel.cli import main
from ringkernel.errors import ConfigurationError


from numba import cuda  # noqa: E402  (after ringkernel chose the simulator)


def _add(a, b, out):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i] + b[i]


@pytest.mark.parametrize("value", ["False", "yes", 1, 0, None])
def test_grid_stride_must_be_a_bool(value: object) -> None:
    """grid_stride="False" was True: a kernel without the loop got a capped grid and left 2952
    of 5000 outputs unwritten."""
    with pytest.raises(ConfigurationError, match="grid_stride"):
        gpu_kernel(grid_stride=value)(_add)  # type: ignore[arg-type]
    gpu_kernel(grid_stride=np.bool_(False))(_add)


def test_same_size_and_block_forms() -> None:
    k = gpu_kernel(same_size="out")(_add)  # one name, not the letters o, u, t
    assert k._same_size == (2,)
    assert gpu_kernel(same_size=None)(_add)._same_size == ()
    with pytest.raises(ConfigurationError, match="same_size"):
        gpu_kernel(same_size=5)(_add)  # type: ignore[arg-type]
    k2 = gpu_kernel(block=np.int32(64))(_add)  # accepted when decorating: launched too
    a = cuda.to_device(np.arange(100, dtype=np.float32))
    out = cuda.device_array(100, np.float32)
    k2(a, a, out)
    assert np.array_equal(out.copy_to_host(), 2 * np.arange(100, dtype=np.float32))
    assert k2.last_config is not None and k2.last_config.block[0] == 64


def test_kernel_from_source_errors_say_what_happened() -> None:
    k = kernel_from_source("def grid_stride(a):\n    a[0] = 1\n")  # named like a helper: still found
    assert k.name == "grid_stride"
    k = kernel_from_source("from os.path import join\ndef k(a):\n    a[0] = 1\n")  # imports are not kernels
    assert k.name == "k"
    with pytest.raises(ConfigurationError, match="UTF-8"):
        kernel_from_source(b"def k(a):\n    a[0] = '\xff'\n")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="must be a str"):
        kernel_from_source(42)  # type: ignore[arg-type]
    for src, err in (("import no_such_module_xyz\ndef k(a):\n    pass\n", "ModuleNotFoundError"),
                     ("1 / 0\ndef k(a):\n    pass\n", "ZeroDivisionError"),
                     ("raise SystemExit(3)\n", "SystemExit")):  # fmt: skip
        with pytest.raises(ConfigurationError, match=err):
            kernel_from_source(src)


def test_cli_exit_statuses(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--elements", "99999999999999999999"])
    assert exc.value.code == 2 and "at most" in capsys.readouterr().err
    assert main(["profile", str(tmp_path / "missing.py")]) == 2
