"""``ringkernel`` command line: ``demo`` (vector add, checked and timed) and ``info`` (device facts)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any, Sequence

__all__ = ["main"]


def _versions() -> dict[str, str]:
    from importlib import metadata

    from . import __version__

    out = {"python": platform.python_version(), "ringkernel": __version__}
    for pkg in ("numba", "numba-cuda", "numpy", "scipy", "nvtx", "platformdirs", "cuda-bindings", "cupy-cuda13x", "cupy-cuda12x"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _driver_version() -> str | None:
    try:
        from numba import cuda

        major, minor = cuda.cudadrv.driver.driver.get_version()
        return f"{major}.{minor}"
    except Exception:
        return None


def cmd_info(args: argparse.Namespace) -> int:
    from .config import use_simulator_if_no_gpu

    simulated = use_simulator_if_no_gpu()
    from .device import GpuArchitecture

    arch = GpuArchitecture.current()
    facts: dict[str, Any] = {
        "backend": "numba CUDA simulator (no GPU found)" if simulated else "CUDA GPU",
        "device": arch.name,
        "compute_capability": f"{arch.compute_capability[0]}.{arch.compute_capability[1]}",
        "sm_count": arch.sm_count,
        "l2_cache_bytes": arch.l2_cache_bytes,
        "max_threads_per_sm": arch.max_threads_per_sm,
        "max_threads_per_block": arch.max_threads_per_block,
        "max_blocks_per_sm": arch.max_blocks_per_sm,
        "max_shared_memory_per_block": arch.max_shared_memory_per_block,
        "shared_memory_per_sm": arch.shared_memory_per_sm,
        "registers_per_sm": arch.registers_per_sm,
        "warp_size": arch.warp_size,
    }
    if not simulated:
        drv = _driver_version()
        if drv:
            facts["cuda_driver"] = drv
    facts["versions"] = _versions()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        if key == "versions":
            print(f"{'versions':<{width}}  " + ", ".join(f"{k} {v}" for k, v in value.items()))
        else:
            print(f"{key:<{width}}  {value}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .config import use_simulator_if_no_gpu

    simulated = use_simulator_if_no_gpu()
    import numpy as np
    from numba import cuda

    from .device import GpuArchitecture
    from .kernels import vector_add, vector_add_reference

    arch = GpuArchitecture.current()
    n = args.elements if args.elements is not None else (4096 if simulated else 1 << 26)
    if n <= 0:
        print(f"error: --elements must be positive, got {n}", file=sys.stderr)
        return 2
    print(f"ringkernel demo: vector add of {n:,} float32 on {arch.name}"
          + (" (no GPU found: running on numba's CUDA simulator, which is slow)" if simulated else ""))
    rng = np.random.default_rng(args.seed)
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    d_a, d_b = cuda.to_device(a), cuda.to_device(b)
    d_c = cuda.device_array_like(d_a)

    t0 = time.perf_counter()
    vector_add(d_a, d_b, d_c)  # first launch compiles
    cuda.synchronize()
    first_ms = (time.perf_counter() - t0) * 1e3
    decision = vector_add.last_config
    assert decision is not None
    print("configuration:\n  " + decision.explain().replace("\n", "\n  "))

    reps = args.repeat if args.repeat else (3 if simulated else 50)
    times = []
    for _ in range(reps):
        if simulated:
            t = time.perf_counter()
            vector_add(d_a, d_b, d_c)
            cuda.synchronize()
            times.append((time.perf_counter() - t) * 1e3)
        else:
            start, end = cuda.event(), cuda.event()
            start.record()
            vector_add(d_a, d_b, d_c)
            end.record()
            end.synchronize()
            times.append(cuda.event_elapsed_time(start, end))
    med = float(np.median(times))
    got = d_c.copy_to_host()
    ok = bool(np.array_equal(got, vector_add_reference(a, b)))
    moved = 3 * n * 4
    print(f"first launch (compile + run): {first_ms:.1f} ms")
    print(f"median of {reps} launches: {med:.3f} ms ({'host clock' if simulated else 'CUDA events'}), "
          f"{moved / (med * 1e-3) / 1e9:.3g} GB/s counting {moved:,} bytes read+written")
    print(f"result matches NumPy: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringkernel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="vector add on the GPU (or the simulator), checked against NumPy and timed")
    demo.add_argument("--elements", type=int, default=None, help="vector length (default 2^26 on a GPU, 4096 on the simulator)")
    demo.add_argument("--repeat", type=int, default=None, help="timed launches (default 50 on a GPU, 3 on the simulator)")
    demo.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
    demo.set_defaults(func=cmd_demo)
    info = sub.add_parser("info", help="device facts and versions")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import RingKernelError

    try:
        return int(args.func(args))
    except RingKernelError as exc:
        print(f"ringkernel {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
