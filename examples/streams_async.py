"""Two kernels on two streams, awaited together with asyncio; then a chunked copy/compute pipeline.

    python examples/streams_async.py
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np

# ringkernel before numba.cuda, so that it can choose numba's CUDA simulator when there is no GPU
from ringkernel.kernels import saxpy
from ringkernel.streams import StreamConfig, StreamId, StreamManager, run_pipeline
from numba import cuda


async def scaled(m: StreamManager, sid: StreamId, x: np.ndarray, alpha: float) -> np.ndarray:
    s = m.stream(sid)
    d = cuda.to_device(x, stream=s)
    out = cuda.device_array_like(d)
    saxpy(np.float32(alpha), d, d, out, stream=s)  # out = alpha * x + x
    await m.wait(sid)  # the event loop runs other tasks until the GPU is done
    return out.copy_to_host()


async def main_async(m: StreamManager, n: int) -> bool:
    rng = np.random.default_rng()
    x1, x2 = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    r1, r2 = await asyncio.gather(scaled(m, StreamId.compute(0), x1, 2.0), scaled(m, StreamId.compute(1), x2, -1.0))
    return bool(np.allclose(r1, 3 * x1, rtol=1e-6) and np.allclose(r2, 0 * x2, atol=1e-6))


def main() -> int:
    n = 2000
    with StreamManager(StreamConfig(num_compute_streams=2)) as m:
        ok = asyncio.run(main_async(m, n))
        print("asyncio.gather of two kernels correct:", ok)
        host_in = cuda.pinned_array(n, dtype=np.float32)
        host_in[:] = np.arange(n, dtype=np.float32)
        host_out = cuda.pinned_array(n, dtype=np.float32)
        rep = run_pipeline(host_in, host_out, lambda a, b, s: saxpy(np.float32(1.0), a, a, b, stream=s), chunks=4, manager=m)
        ok2 = bool(np.array_equal(host_out, 2 * host_in))
        print(f"pipeline correct: {ok2}; overlap efficiency {rep.overlap_efficiency:.2f} "
              f"(meaningful on a GPU only), {rep.speedup_vs_one_stream:.2f}x one stream")
    return 0 if ok and ok2 else 1


if __name__ == "__main__":
    sys.exit(main())
