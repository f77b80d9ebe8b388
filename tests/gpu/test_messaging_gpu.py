"""On a real GPU: 10^7 messages through the queues from many producer and consumer blocks at once.

Run on the GPU machine with ``RINGKERNEL_GPU_TESTS=1 python -m pytest -m gpu tests/gpu/test_messaging_gpu.py``;
also under ``compute-sanitizer --tool memcheck|racecheck|synccheck`` with ``RINGKERNEL_MSG_COUNT=100000``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

MSG = np.dtype([("producer", np.int32), ("seq", np.int32), ("pad", np.int64, (6,)), ("check", np.int64)])
assert MSG.itemsize == 64
TOTAL = int(os.environ.get("RINGKERNEL_MSG_COUNT", 10_000_000))
PRODUCERS, CONSUMERS, BLOCK = 8192, 8192, 128  # 64 producer blocks, 64 consumer blocks


def _kernels():  # type: ignore[no-untyped-def]
    from numba import cuda

    from ringkernel.messaging import inbox_try_pop_into, inbox_try_push_from, inbox_warp_pop_into, inbox_warp_push_from

    def make(warp: bool):  # type: ignore[no-untyped-def]
        @cuda.jit
        def produce(header, seqs, slots, per, scratch, retries):  # type: ignore[no-untyped-def]
            t = cuda.grid(1)
            for k in range(per):
                scratch[t]["producer"] = t
                scratch[t]["seq"] = k
                for w in range(6):
                    scratch[t]["pad"][w] = t ^ (k + w)
                scratch[t]["check"] = t * 1_000_003 + k * 7 + 1
                done = False
                while not done:
                    if warp:
                        done = inbox_warp_push_from(header, seqs, slots, scratch, t, True)
                    else:
                        done = inbox_try_push_from(header, seqs, slots, scratch, t)
                    if not done:
                        cuda.atomic.add(retries, 0, 1)  # relaxed: a statistic

        @cuda.jit
        def consume(header, seqs, slots, total, taken, out, errors):  # type: ignore[no-untyped-def]
            t = cuda.grid(1)
            keep = True
            while keep:
                # relaxed read of the count: only a loop bound
                keep = cuda.atomic.add(taken, 0, 0) < total
                if warp:
                    got = inbox_warp_pop_into(header, seqs, slots, out, t, keep)
                else:
                    got = keep and inbox_try_pop_into(header, seqs, slots, out, t)
                if got:
                    cuda.atomic.add(taken, 0, 1)  # relaxed count
                    p = out[t]["producer"]
                    s = out[t]["seq"]
                    torn = out[t]["check"] != p * 1_000_003 + s * 7 + 1
                    for w in range(6):
                        torn = torn or out[t]["pad"][w] != (p ^ (s + w))
                    if torn:
                        cuda.atomic.add(errors, 0, 1)  # relaxed

        return produce, consume

    return make(False), make(True)


@pytest.mark.parametrize("warp", [False, True])
def test_ten_million_messages_exactly_once(warp: bool) -> None:
    from numba import cuda

    from ringkernel.messaging import LockFreeInbox

    thread_k, warp_k = _kernels()
    produce, consume = warp_k if warp else thread_k
    per = TOTAL // PRODUCERS
    total = per * PRODUCERS
    with LockFreeInbox(1 << 16, MSG) as inbox:
        s1, s2 = cuda.stream(), cuda.stream()
        scratch = cuda.device_array(PRODUCERS, MSG)
        out = cuda.device_array(CONSUMERS, MSG)
        taken = cuda.to_device(np.zeros(1, np.int64))
        errors = cuda.to_device(np.zeros(1, np.int64))
        retries = cuda.to_device(np.zeros(1, np.int64))
        consume[CONSUMERS // BLOCK, BLOCK, s2](*inbox.device_args(), total, taken, out, errors)
        produce[PRODUCERS // BLOCK, BLOCK, s1](*inbox.device_args(), per, scratch, retries)
        cuda.synchronize()
        assert int(taken.copy_to_host()[0]) == total
        assert int(errors.copy_to_host()[0]) == 0  # nothing torn
        assert inbox.is_empty()
        # each refused push is one overflow (thread form; the warp form counts refused lanes)
        assert inbox.overflow_count() >= int(retries.copy_to_host()[0]) or warp


@pytest.mark.parametrize("warp", [False, True])
def test_fifo_per_producer_and_overflow_exact(warp: bool) -> None:
    """Producers only (no concurrent consumer): one inbox's order is each producer's order, and
    the overflow equals the refused pushes exactly."""
    from numba import cuda

    from ringkernel.messaging import LockFreeInbox

    thread_k, warp_k = _kernels()
    cap = 1 << 20
    per = cap // PRODUCERS
    with LockFreeInbox(cap, MSG) as inbox:
        (produce, _) = warp_k if warp else thread_k
        scratch = cuda.device_array(PRODUCERS, MSG)
        retries = cuda.to_device(np.zeros(1, np.int64))
        produce[PRODUCERS // BLOCK, BLOCK](*inbox.device_args(), per, scratch, retries)
        cuda.synchronize()
        got = inbox.pop_many(cap)
        assert len(got) == cap and int(retries.copy_to_host()[0]) == 0 and inbox.overflow_count() == 0
        order = np.argsort(got["producer"], kind="stable")
        seqs = got["seq"][order].reshape(PRODUCERS, per)
        assert (np.diff(seqs, axis=1) == 1).all()  # FIFO per producer, each exactly once
