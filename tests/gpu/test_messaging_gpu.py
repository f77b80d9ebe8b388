"""On a real GPU: 10^7 messages through the queues from many producer and consumer blocks at once.

Run on the GPU machine with ``RINGKERNEL_GPU_TESTS=1 python -m pytest -m gpu tests/gpu/test_messaging_gpu.py``;
also under ``compute-sanitizer --tool memcheck|racecheck|synccheck`` with ``RINGKERNEL_MSG_COUNT=100000``
and ``RINGKERNEL_SERIAL_KERNELS=1``: the sanitizer runs kernels one after another, so the
two-kernel test then launches its producers first into a queue that holds every message (the
single-kernel tests keep producers and consumers concurrent there too).
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
SERIAL = os.environ.get("RINGKERNEL_SERIAL_KERNELS") == "1"


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _message_helpers():  # type: ignore[no-untyped-def]
    """Device functions: write producer t's k-th message into scratch[t]; is out[t] torn?"""
    from numba import cuda

    @cuda.jit(device=True)
    def fill(scratch, t, k):  # type: ignore[no-untyped-def]
        scratch[t]["producer"] = t
        scratch[t]["seq"] = k
        for w in range(6):
            scratch[t]["pad"][w] = t ^ (k + w)
        scratch[t]["check"] = t * 1_000_003 + k * 7 + 1

    @cuda.jit(device=True)
    def torn(out, t):  # type: ignore[no-untyped-def]
        p = out[t]["producer"]
        s = out[t]["seq"]
        bad = out[t]["check"] != p * 1_000_003 + s * 7 + 1
        for w in range(6):
            bad = bad or out[t]["pad"][w] != (p ^ (s + w))
        return bad

    return fill, torn


def _kernels():  # type: ignore[no-untyped-def]
    from numba import cuda

    from ringkernel.messaging import inbox_try_pop_into, inbox_try_push_from, inbox_warp_pop_into, inbox_warp_push_from

    fill, torn = _message_helpers()

    def make(warp: bool):  # type: ignore[no-untyped-def]
        @cuda.jit
        def produce(header, seqs, slots, per, scratch, retries):  # type: ignore[no-untyped-def]
            t = cuda.grid(1)
            for k in range(per):
                fill(scratch, t, k)
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
                    if torn(out, t):
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
    with LockFreeInbox(_pow2_at_least(total) if SERIAL else 1 << 16, MSG) as inbox:
        s1, s2 = cuda.stream(), cuda.stream()
        scratch = cuda.device_array(PRODUCERS, MSG)
        out = cuda.device_array(CONSUMERS, MSG)
        taken = cuda.to_device(np.zeros(1, np.int64))
        errors = cuda.to_device(np.zeros(1, np.int64))
        retries = cuda.to_device(np.zeros(1, np.int64))
        # compile and load both kernels (zero work) before either waits for the other: a launch
        # that has to load a module while the other kernel spins deadlocked on the H200
        consume[1, 32, s2](*inbox.device_args(), 0, taken, out, errors)
        produce[1, 32, s1](*inbox.device_args(), 0, scratch, retries)
        cuda.synchronize()
        if SERIAL:  # kernels run one after another: producers first, into a queue holding all
            produce[PRODUCERS // BLOCK, BLOCK, s1](*inbox.device_args(), per, scratch, retries)
            s1.synchronize()
        # consumers first otherwise: they wait for producers launched after them (both resident)
        consume[CONSUMERS // BLOCK, BLOCK, s2](*inbox.device_args(), total, taken, out, errors)
        if not SERIAL:
            produce[PRODUCERS // BLOCK, BLOCK, s1](*inbox.device_args(), per, scratch, retries)
        cuda.synchronize()
        assert int(taken.copy_to_host()[0]) == total
        assert int(errors.copy_to_host()[0]) == 0  # nothing torn
        assert inbox.is_empty()
        # the ring (64 Ki slots, 8192 producers) fills now and then: each refused push, and each
        # refused lane of a warp push, is one overflow and one retry, so the two agree exactly
        assert inbox.overflow_count() == int(retries.copy_to_host()[0])


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


def _mixed_kernels():  # type: ignore[no-untyped-def]
    """One grid: even blocks produce, odd blocks consume (concurrent even under the sanitizer)."""
    from numba import cuda

    from ringkernel.messaging import (
        inbox_try_pop_into, inbox_try_push_from, inbox_warp_pop_into, inbox_warp_push_from, pq_pop_any_into,
        pq_push_from,
    )  # fmt: skip

    fill, torn = _message_helpers()

    def make(kind: str):  # type: ignore[no-untyped-def]
        @cuda.jit
        def mixed(header, seqs, slots, per, scratch, out, taken, seen, errors):  # type: ignore[no-untyped-def]
            b = cuda.blockIdx.x
            t = (b // 2) * cuda.blockDim.x + cuda.threadIdx.x  # producer (or consumer) number
            total = per * (cuda.gridDim.x // 2) * cuda.blockDim.x
            if b % 2 == 0:
                for k in range(per):
                    fill(scratch, t, k)
                    done = False
                    while not done:
                        if kind == "warp":
                            done = inbox_warp_push_from(header, seqs, slots, scratch, t, True)
                        elif kind == "thread":
                            done = inbox_try_push_from(header, seqs, slots, scratch, t)
                        else:  # partitioned: hint = producer, so one producer's messages keep order
                            done = pq_push_from(header, seqs, slots, t, scratch, t)
            else:
                keep = True
                while keep:
                    keep = cuda.atomic.add(taken, 0, 0) < total  # relaxed: a loop bound
                    if kind == "warp":
                        got = inbox_warp_pop_into(header, seqs, slots, out, t, keep)
                    elif kind == "thread":
                        got = keep and inbox_try_pop_into(header, seqs, slots, out, t)
                    else:  # home partition t % partitions, stealing from the others when empty
                        got = keep and pq_pop_any_into(header, seqs, slots, t % header.shape[0], out, t) >= 0
                    if got:
                        cuda.atomic.add(taken, 0, 1)  # relaxed count
                        p = out[t]["producer"]
                        s = out[t]["seq"]
                        if torn(out, t) or p < 0 or p >= seen.shape[0] or s < 0 or s >= per:
                            cuda.atomic.add(errors, 0, 1)  # relaxed
                        else:
                            cuda.atomic.add(seen, (p, s), 1)  # relaxed: each (producer, seq) once

        return mixed

    return {k: make(k) for k in ("thread", "warp", "partitioned")}


@pytest.mark.parametrize("kind", ["thread", "warp", "partitioned"])
def test_one_grid_of_producers_and_consumers_delivers_each_message_once(kind: str) -> None:
    """Producer and consumer blocks in one grid (all resident): every (producer, seq) popped
    exactly once, nothing torn; the partitioned queue's consumers steal across partitions."""
    from numba import cuda

    from ringkernel.messaging import LockFreeInbox, PartitionedQueue

    mixed = _mixed_kernels()[kind]
    producers = 64 * BLOCK  # 64 producer blocks + 64 consumer blocks
    per = max(1, min(TOTAL, 4_000_000) // producers)
    queue = PartitionedQueue(16, 1 << 12, MSG) if kind == "partitioned" else LockFreeInbox(1 << 14, MSG)
    with queue:
        scratch = cuda.device_array(producers, MSG)
        out = cuda.device_array(producers, MSG)
        taken = cuda.to_device(np.zeros(1, np.int64))
        errors = cuda.to_device(np.zeros(1, np.int64))
        seen = cuda.to_device(np.zeros((producers, per), np.int32))
        mixed[128, BLOCK](*queue.device_args(), per, scratch, out, taken, seen, errors)
        cuda.synchronize()
        assert int(errors.copy_to_host()[0]) == 0
        counts = seen.copy_to_host()
        assert int(taken.copy_to_host()[0]) == producers * per
        assert (counts == 1).all(), f"{int((counts == 0).sum())} lost, {int((counts > 1).sum())} duplicated"
        assert queue.is_empty()
