"""The code fingerprint sees every input that changes the compiled code (runs in CI; no GPU needed).

Each test builds two kernels that differ in one input only, from source text run in fresh
namespaces, and checks that their fingerprints (and cache keys) differ, and that equal
inputs give equal fingerprints, also in another process.
"""

from __future__ import annotations

import enum
import logging
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from ringkernel.compile import CachingCompiler, PtxCache, code_fingerprint
from ringkernel.compile.fingerprint import code_fingerprint_report

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = "import math\nimport numpy as np\nfrom numba import cuda\n"


def build(src: str, name: str = "kernel", **env: Any) -> Callable[..., Any]:
    """Run ``src`` (after the prelude) in a fresh namespace holding ``env``; return ``name``."""
    ns: dict[str, Any] = {"__name__": "fp_test_source", **env}
    exec(compile(PRELUDE + textwrap.dedent(src), "<fingerprint test>", "exec"), ns)  # noqa: S102
    return ns[name]  # type: ignore[no-any-return]


def fp(src: str, **env: Any) -> str:
    return code_fingerprint(build(src, **env))


def assert_sees(src: str, a: dict[str, str], b: dict[str, str]) -> None:
    """``src`` formatted with ``a`` and with ``b``: different keys; with ``a`` twice: the same key."""
    fa = fp(src.format(**a))
    assert fa != fp(src.format(**b))
    assert fp(src.format(**a)) == fa


# -- default values ------------------------------------------------------------------------
DEVICE_DEFAULT = """
@cuda.jit(device=True)
def helper(x, s={s}):
    return x * s

def kernel(a):
    i = cuda.grid(1)
    if i < a.size:
        a[i] = helper(a[i])
"""


def test_default_value_of_a_device_function() -> None:
    assert_sees(DEVICE_DEFAULT, {"s": "2.0"}, {"s": "7.0"})


def test_keyword_only_default_of_a_device_function() -> None:
    src = """
    @cuda.jit(device=True)
    def helper(x, *, s={s}):
        return x * s

    def kernel(a):
        a[0] = helper(a[0])
    """
    assert_sees(src, {"s": "2"}, {"s": "3"})


def test_default_values_of_the_kernel_itself() -> None:
    src = """
    def kernel(a, s={s}, *, t={t}):
        a[0] = s + t
    """
    assert_sees(src, {"s": "1.5", "t": "0"}, {"s": "2.5", "t": "0"})
    assert_sees(src, {"s": "1.5", "t": "0"}, {"s": "1.5", "t": "1"})


# -- closure cells -------------------------------------------------------------------------
CLOSURES = """
def make_helper(table):
    @cuda.jit(device=True)
    def helper(x):
        return x * table[0, 0]
    return helper

def make_kernel(kernel_table, helper_table):
    helper = make_helper(helper_table)
    def kernel(a):
        a[0] = helper(a[0]) + kernel_table[1, 1]
    return kernel

kernel = make_kernel(KT, HT)
"""


def test_closure_cell_scalar_of_a_nested_device_function() -> None:
    src = """
    def make_helper(scale):
        @cuda.jit(device=True)
        def helper(x):
            return x * scale
        return helper

    helper = make_helper({scale})

    def kernel(a):
        a[0] = helper(a[0])
    """
    assert_sees(src, {"scale": "2.0"}, {"scale": "2.5"})


def test_closure_cell_array_of_the_kernel_and_of_a_device_function() -> None:
    t = np.arange(4.0).reshape(2, 2)
    changed = t.copy()
    changed[1, 1] += 1
    base = fp(CLOSURES, KT=t, HT=t)
    assert fp(CLOSURES, KT=t.copy(), HT=t.copy()) == base
    assert fp(CLOSURES, KT=changed, HT=t) != base  # the kernel's own cell
    assert fp(CLOSURES, KT=t, HT=changed) != base  # only the device function's cell


def test_closure_cell_tuple_of_arrays() -> None:
    src = """
    def make(tables):
        def kernel(a):
            a[0] = tables[1][0]
        return kernel

    kernel = make(TABLES)
    """
    a, b = np.zeros(3), np.ones(3)
    changed = b.copy()
    changed[2] = 5
    base = fp(src, TABLES=(a, b))
    assert fp(src, TABLES=(a.copy(), b.copy())) == base
    assert fp(src, TABLES=(a, changed)) != base


# -- global NumPy arrays and scalars -------------------------------------------------------
GLOBAL_TABLE = """
def kernel(a):
    a[0] = TABLE[0]
"""


def test_global_array_with_one_element_changed_beyond_what_repr_prints() -> None:
    t = np.linspace(0.0, 1.0, 2000)
    changed = t.copy()
    changed[1000] += 1.0
    assert repr(t) == repr(changed)  # what the fingerprint used to hash: NumPy abbreviates
    assert fp(GLOBAL_TABLE, TABLE=t) != fp(GLOBAL_TABLE, TABLE=changed)
    assert fp(GLOBAL_TABLE, TABLE=t) == fp(GLOBAL_TABLE, TABLE=t.copy())


def test_global_float64_values_differing_in_the_tenth_digit() -> None:
    x, y = 1.234567891, 1.234567892
    assert repr(np.array([x, 0.5])) == repr(np.array([y, 0.5]))  # NumPy rounds to 8 digits
    assert fp(GLOBAL_TABLE, TABLE=np.array([x, 0.5])) != fp(GLOBAL_TABLE, TABLE=np.array([y, 0.5]))
    src = "def kernel(a):\n    a[0] = V\n"
    for make in (float, np.float64):
        assert fp(src, V=make(x)) != fp(src, V=make(y))
        assert fp(src, V=make(x)) == fp(src, V=make(x))
    assert fp(src, V=0.0) != fp(src, V=-0.0)


def test_global_array_dtype_changed_with_the_same_bytes() -> None:
    ints = np.arange(8, dtype=np.int64)
    floats = ints.view(np.float64)
    assert ints.tobytes() == floats.tobytes()
    assert fp(GLOBAL_TABLE, TABLE=ints) != fp(GLOBAL_TABLE, TABLE=floats)
    assert fp(GLOBAL_TABLE, TABLE=ints.astype(">i8")) != fp(GLOBAL_TABLE, TABLE=ints.astype("<i8"))  # byte order
    two = np.zeros(2, dtype=[("x", "<f4"), ("y", "<f4")])
    renamed = two.view([("x", "<f4"), ("z", "<f4")])
    assert fp(GLOBAL_TABLE, TABLE=two) != fp(GLOBAL_TABLE, TABLE=renamed)  # structured: the field names


def test_global_array_shape_and_order_changed_with_the_same_bytes() -> None:
    flat = np.arange(6.0)
    assert fp(GLOBAL_TABLE, TABLE=flat) != fp(GLOBAL_TABLE, TABLE=flat.reshape(2, 3))
    c = np.arange(6.0).reshape(2, 3)
    f = np.asfortranarray(c)
    assert fp(GLOBAL_TABLE, TABLE=c) != fp(GLOBAL_TABLE, TABLE=f)  # same elements, another layout
    strided = np.arange(12.0)[::2]
    changed = np.arange(12.0)
    changed[1] = 99.0  # between the elements of the view: not part of it
    assert fp(GLOBAL_TABLE, TABLE=strided) == fp(GLOBAL_TABLE, TABLE=changed[::2])
    changed[2] = 99.0
    assert fp(GLOBAL_TABLE, TABLE=strided) != fp(GLOBAL_TABLE, TABLE=changed[::2])


def test_global_numpy_scalar() -> None:
    src = "def kernel(a):\n    a[0] = S\n"
    assert fp(src, S=np.float32(1.5)) != fp(src, S=np.float32(2.5))
    assert fp(src, S=np.float32(1.0)) != fp(src, S=np.float64(1.0))  # same value, another dtype
    assert fp(src, S=np.int32(7)) == fp(src, S=np.int32(7))


def test_large_arrays_are_hashed_in_place() -> None:
    big = np.random.default_rng(0).standard_normal(1 << 20)  # 8 MiB
    for table in (big, np.asfortranarray(big.reshape(1024, 1024))):
        kernel = build(GLOBAL_TABLE, TABLE=table)
        tracemalloc.start()
        try:
            code_fingerprint(kernel)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < table.nbytes // 8, f"fingerprinting copied the array: peak {peak} bytes"


# -- other values --------------------------------------------------------------------------
def test_containers_enums_and_numba_types() -> None:
    from numba import float32, float64

    src = "def kernel(a):\n    a[0] = V\n"
    assert fp(src, V={"k": (1, np.ones(2))}) != fp(src, V={"k": (1, np.zeros(2))})
    assert fp(src, V=[1, 2]) != fp(src, V=(1, 2))
    assert fp(src, V=float32) != fp(src, V=float64)

    class Mode(enum.IntEnum):
        A = 1

    class Mode2(enum.IntEnum):  # same name, another value
        A = 2

    Mode2.__qualname__ = Mode.__qualname__
    assert fp(src, V=Mode) != fp(src, V=Mode2)
    assert fp(src, V=Mode.A) != fp(src, V=Mode2.A)


def test_self_referential_values_and_recursive_device_functions_terminate() -> None:
    loop: list[Any] = [1.0]
    loop.append(loop)
    src = "def kernel(a):\n    a[0] = V[0]\n"
    assert fp(src, V=loop) == fp(src, V=loop)
    rec = """
    @cuda.jit(device=True)
    def fact(n):
        return 1 if n <= 1 else n * fact(n - {step})

    def kernel(a):
        a[0] = fact(5)
    """
    assert_sees(rec, {"step": "1"}, {"step": "2"})


class _Dispatcher:
    """What the fingerprint reads from a numba ``CUDADispatcher`` (the simulator has no options)."""

    def __init__(self, func: Callable[..., Any], fastmath: bool, sigs: tuple[str, ...] = ()) -> None:
        self.py_func = func
        self.targetoptions = {"device": True, "fastmath": fastmath, "inline": "never", "link": ()}
        self._can_compile = not sigs
        self.nopython_signatures = list(sigs)


def test_device_function_options_and_declared_signatures() -> None:
    src = "def kernel(a):\n    a[0] = helper(a[0])\n"

    def body(x):  # type: ignore[no-untyped-def]
        return x * 2

    assert fp(src, helper=_Dispatcher(body, False)) == fp(src, helper=_Dispatcher(body, False))
    assert fp(src, helper=_Dispatcher(body, False)) != fp(src, helper=_Dispatcher(body, True))
    f32 = fp(src, helper=_Dispatcher(body, False, ("(float32,) -> float32",)))
    assert f32 != fp(src, helper=_Dispatcher(body, False, ("(float64,) -> float64",)))


# -- what does not change the key ----------------------------------------------------------
def test_editing_a_comment_keeps_the_key() -> None:
    src = """
    @cuda.jit(device=True)
    def helper(x, s=2.0):
        return x * s  # {comment}

    def kernel(a):
        # {comment}
        a[0] = helper(a[0])
    """
    assert fp(src.format(comment="first")) == fp(src.format(comment="an edited, longer comment"))


MODULE = '''
import enum
import math
from collections import namedtuple

import numpy as np
from numba import cuda, float32
from numpy import sum as npsum

TABLE = np.linspace(0.0, 1.0, 2000)
FTABLE = np.asfortranarray(np.arange(12.0).reshape(3, 4))
SCALE = np.float32(1.25)
EPS = 1.234567891e-7
NAMES = {"alpha", "beta", "gamma", "delta"}  # iteration order depends on PYTHONHASHSEED
Pair = namedtuple("Pair", "x y")
PAIR = Pair(1, 2.5)
OPTS = {"k": (1, 2.0, np.arange(3))}


class Mode(enum.IntEnum):
    FAST = 1
    EXACT = 2


def make_helper(table):
    @cuda.jit(device=True)
    def helper(x, s=2.0, *, t=PAIR):
        return x * s * table[0] + t.y
    return helper


helper = make_helper((TABLE, FTABLE))


def kernel(a, mode=Mode.FAST):
    i = cuda.grid(1)
    if i < a.size and "alpha" in NAMES and i in {1, 2, 3}:
        a[i] = helper(a[i]) * SCALE + EPS + TABLE[i] + math.sqrt(2.0) + OPTS["k"][1] + mode
        a[i] += npsum(FTABLE) + float32(1)
'''


def _load_module(path: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("fp_stable_mod", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_identical_inputs_give_the_same_key_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "fp_stable_mod.py"
    path.write_text(MODULE)
    mod = _load_module(path)
    here, opaque = code_fingerprint_report(mod.kernel)
    assert opaque == ()  # everything in MODULE is understood
    probe = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('fp_stable_mod', sys.argv[1])\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "from ringkernel.compile import code_fingerprint\n"
        "print(code_fingerprint(mod.kernel))\n"
    )
    for seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)  # simulator or GPU, as this process (conftest)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        out = subprocess.run(
            [sys.executable, "-c", probe, str(path)], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == here, f"PYTHONHASHSEED={seed}"
    path.write_text(MODULE.replace("EPS = 1.234567891e-7", "EPS = 1.234567892e-7"))
    assert code_fingerprint(_load_module(path).kernel) != here


# -- opaque values: reported, and warned about once ----------------------------------------
OPAQUE = """
import logging

class Config:
    scale = 2

CFG = Config()
log = logging.getLogger("fp")  # a global named like the attribute `a.log` below

@cuda.jit(device=True)
def helper(x, c=CFG):
    return x

def kernel(a):
    a[0] = helper(a[0]) + CFG.scale + a.log
"""


def test_opaque_values_are_reported_by_name() -> None:
    digest, opaque = code_fingerprint_report(build(OPAQUE))
    assert digest == code_fingerprint(build(OPAQUE))
    assert opaque == ("kernel.CFG (fp_test_source.Config)", "helper(c=) (fp_test_source.Config)")
    _, none = code_fingerprint_report(build(DEVICE_DEFAULT.format(s=1.0)))
    assert none == ()


def test_cache_key_follows_the_inputs_and_warns_once_about_opaque_values(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    compiler = CachingCompiler(PtxCache.with_dir(tmp_path), compute_cap="sm_90")
    argtypes, options = ("array(float64, 1d, C)",), {"fastmath": False}

    def key(kernel: Callable[..., Any]) -> str:
        return compiler.cache_key(kernel, argtypes, options)

    t = np.linspace(0.0, 1.0, 2000)
    changed = t.copy()
    changed[1000] += 1e-9
    assert key(build(GLOBAL_TABLE, TABLE=t)) == key(build(GLOBAL_TABLE, TABLE=t.copy()))
    assert key(build(GLOBAL_TABLE, TABLE=t)) != key(build(GLOBAL_TABLE, TABLE=changed))
    assert key(build(DEVICE_DEFAULT.format(s=2.0))) != key(build(DEVICE_DEFAULT.format(s=7.0)))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    kernel = build(OPAQUE)
    with caplog.at_level(logging.WARNING, logger="ringkernel.compile.compiler"):
        key(kernel)
        key(kernel)
        compiler.cache_key(kernel, ("array(float32, 1d, C)",), options)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "kernel.CFG (fp_test_source.Config)" in warnings[0] and "ringkernel cache clear" in warnings[0]
