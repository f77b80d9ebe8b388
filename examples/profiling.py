"""Profile a small two-stream workload: NVTX ranges, GPU-timed kernels, a summary and a Perfetto trace.

    python examples/profiling.py [trace.json] [--cupti]

``--cupti`` captures launches from CUPTI's records instead of the launch hook
(``LaunchCapture.CUPTI``: about 1 us a launch instead of several; needs ``cupti-python``
and a GPU; element counts are unknown there, so the summary shows no GB/s for kernels
annotated per element).

Open the trace (default ``profile_trace.json`` in the current directory) in
https://ui.perfetto.dev or chrome://tracing. Under Nsight Systems (``nsys profile python
examples/profiling.py``) the ranges also appear in the ``ringkernel`` NVTX domain.
"""

from __future__ import annotations

import sys

import numpy as np

# ringkernel before numba.cuda, so that it can choose numba's CUDA simulator when there is no GPU
from ringkernel import GpuProfiler, ProfileCategory, config
from ringkernel.kernels import saxpy, vector_add
from ringkernel.profiling import LaunchCapture, TransferDirection
from numba import cuda


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--cupti"]
    path = args[0] if args else "profile_trace.json"
    simulated = config.simulator_enabled()
    capture = LaunchCapture.CUPTI if "--cupti" in sys.argv[1:] else LaunchCapture.HOOK
    n = 1024 if simulated else 1 << 24
    steps = 2 if simulated else 20
    rng = np.random.default_rng()
    x, y = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)

    profiler = GpuProfiler("example", launches=capture)
    streams = [cuda.stream(), cuda.stream()]
    profiler.name_stream(streams[0], "compute A")
    profiler.name_stream(streams[1], "compute B")
    prefetch = ProfileCategory.custom("prefetch", color=0x1ABC9C)

    @profiler.profiled(category=ProfileCategory.IO)
    def upload(host: np.ndarray) -> object:
        with profiler.annotate_transfer(TransferDirection.HOST_TO_DEVICE, host.nbytes):
            return cuda.to_device(host)

    with profiler:  # every @gpu_kernel launch in here is captured and GPU-timed
        d_x, d_y = upload(x), upload(y)
        outs = [cuda.device_array_like(d_x) for _ in streams]
        profiler.annotate_kernel("vector_add", bytes_per_element=12).end()  # 2 reads + 1 write of float32
        profiler.annotate_kernel("saxpy", bytes_per_element=12).end()
        for step in range(steps):
            with profiler.range(f"step {step}", ProfileCategory.ALGORITHM):
                vector_add(d_x, d_y, outs[0], stream=streams[0])
                saxpy(np.float32(2.0), d_x, d_y, outs[1], stream=streams[1])
                profiler.mark("queued", prefetch)
            with profiler.range("sync", ProfileCategory.SYNC):
                for s in streams:
                    s.synchronize()
    ok = bool(np.allclose(outs[0].copy_to_host(), x + y) and np.allclose(outs[1].copy_to_host(), 2 * x + y, rtol=1e-5))
    summary = profiler.summary()
    print(summary)
    profiler.export_chrome_tracing(path)
    profiler.close()
    print(f"\nresults match NumPy: {ok}; trace written to {path} ({summary.timing_source})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
