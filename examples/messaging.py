"""A producer kernel and a consumer kernel exchanging messages through a LockFreeInbox on two streams.

On a GPU the two kernels run concurrently (10^7 messages through a 64 Ki-slot ring by default);
on numba's simulator kernels run one after another, so the ring holds every message and the
count is small:

    python examples/messaging.py [N]
"""

from __future__ import annotations

import sys

import numpy as np

# ringkernel before numba.cuda, so that it can choose numba's CUDA simulator when there is no GPU
from ringkernel import LockFreeInbox, config
from ringkernel.messaging import inbox_try_pop_into, inbox_try_push_from
from numba import cuda

MSG = np.dtype([("producer", np.int32), ("seq", np.int32), ("value", np.float64), ("check", np.int64)])


@cuda.jit
def produce(header, seqs, slots, per_thread, scratch):  # type: ignore[no-untyped-def]
    t = cuda.grid(1)
    for k in range(per_thread):
        scratch[t]["producer"] = t
        scratch[t]["seq"] = k
        scratch[t]["value"] = k * 0.5
        scratch[t]["check"] = t * 1_000_003 + k
        while not inbox_try_push_from(header, seqs, slots, scratch, t):
            pass  # full: the consumer kernel is draining it (overflow counts each retry)


@cuda.jit
def consume(header, seqs, slots, total, taken, out, sums):  # type: ignore[no-untyped-def]
    t = cuda.grid(1)
    while cuda.atomic.add(taken, 1, 0) < total:  # relaxed read of the popped count: a loop bound only
        if inbox_try_pop_into(header, seqs, slots, out, t):
            cuda.atomic.add(taken, 1, 1)  # relaxed: a count, no data flows through it
            ok = out[t]["check"] == out[t]["producer"] * 1_000_003 + out[t]["seq"]
            cuda.atomic.add(sums, 0, out[t]["check"] if ok else 0)  # relaxed: a checksum


def main(n: int) -> int:
    gpu = not config.simulator_enabled()
    producers = 256 * 64 if gpu else 64
    n = n if gpu else min(n, 256)  # the simulator runs Python threads: keep it small there
    per = max(1, n // producers)
    total = per * producers
    with LockFreeInbox(1 << 16 if gpu else 1 << (total - 1).bit_length(), MSG) as inbox:
        s1, s2 = cuda.stream(), cuda.stream()
        taken = cuda.to_device(np.zeros(2, np.int64))
        sums = cuda.to_device(np.zeros(1, np.int64))
        consumers = 256 * 64 if gpu else 64
        out = cuda.device_array(consumers, MSG)
        scratch = cuda.device_array(producers, MSG)
        blocks = 64 if gpu else 2
        # Compile and load both kernels first (zero work): launching a kernel that is not yet
        # loaded while the other spins waiting for it can deadlock (docs/messaging.md, Progress).
        produce[1, 32, s1](*inbox.device_args(), 0, scratch)
        consume[1, 32, s2](*inbox.device_args(), 0, taken, out, sums)
        cuda.synchronize()
        produce[blocks, producers // blocks, s1](*inbox.device_args(), per, scratch)
        consume[blocks, consumers // blocks, s2](*inbox.device_args(), total, taken, out, sums)
        cuda.synchronize()
        p = np.repeat(np.arange(producers, dtype=np.int64), per)
        want = int((p * 1_000_003 + np.tile(np.arange(per), producers)).sum())
        got = int(sums.copy_to_host()[0])
        print(f"{total} messages, checksum {'ok' if got == want else 'WRONG'}, left {len(inbox)}")
        return 0 if got == want and inbox.is_empty() else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000))
