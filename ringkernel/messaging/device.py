"""Device functions of the queues: bounded MPMC ring buffers with a sequence number per slot.

Usable in any ``@gpu_kernel`` or ``@cuda.jit`` kernel. A queue is passed as three arrays
(``LockFreeInbox.device_args()``): ``header`` (int64, :mod:`ringkernel.messaging.layout`),
``seqs`` (int64, one per slot) and ``slots`` (the message dtype). Messages are passed as an
array of the message dtype and an index (``..._from(…, msgs, i)``), or as a 1-element array
(``inbox_try_push(…, msg)``: ``msg[0]`` is sent; a ``cuda.local.array(1, dtype)`` works).

The algorithm is Vyukov's bounded MPMC queue: slot ``pos & mask`` holds ``seq == pos`` when
it is free for the producer of position ``pos``, ``seq == pos + 1`` when it holds that
producer's message, and the consumer hands it to the next lap with ``seq = pos + capacity``.
See docs/messaging.md for the ordering argument behind every fence.

Importing this module imports numba (after :func:`ringkernel.config.select_backend`).
"""

from __future__ import annotations

import numpy as np
from numba import config as _numba_config
from numba import cuda

from .layout import CAPACITY, HEAD, MASK, OVERFLOW, TAIL

__all__ = [
    "inbox_try_push", "inbox_try_pop", "inbox_try_push_from", "inbox_try_pop_into",
    "inbox_warp_push_from", "inbox_warp_pop_into",
    "partition_of", "pq_push_from", "pq_try_pop_into", "pq_pop_any_into", "pq_warp_push_from",
    "pq_warp_pop_into",
]  # fmt: skip


@cuda.jit(device=True)
def _load(arr, i):  # type: ignore[no-untyped-def]
    # Relaxed atomic read (an RMW adding 0): a strong operation that goes to L2, so a spin
    # sees other SMs' updates and the compiler cannot keep the value in a register.
    return cuda.atomic.add(arr, i, 0)


if _numba_config.ENABLE_CUDASIM:  # the simulator wraps arrays and cannot assign a record element

    def _unwrap(a):  # type: ignore[no-untyped-def]
        while not isinstance(a, np.ndarray):  # FakeWithinKernelCUDAArray -> FakeCUDAArray -> ndarray
            a = a._item if hasattr(a, "_item") else a._ary
        return a

    @cuda.jit(device=True)
    def _copy(dst, di, src, si):  # type: ignore[no-untyped-def]
        _unwrap(dst)[di] = _unwrap(src)[si]

else:

    @cuda.jit(device=True)
    def _copy(dst, di, src, si):  # type: ignore[no-untyped-def]
        dst[di] = src[si]  # a record copy: the message's bytes, in whatever widths the compiler picks


@cuda.jit(device=True)
def inbox_try_push_from(header, seqs, slots, msgs, i):  # type: ignore[no-untyped-def]
    """Push ``msgs[i]``; ``False`` (and ``overflow`` + 1) when the queue is full. Non-blocking."""
    mask = header[MASK]  # constant since creation, written before any launch: a plain load
    pos = _load(header, HEAD)
    while True:
        idx = pos & mask
        seq = _load(seqs, idx)
        if seq == pos:
            # Relaxed CAS: its atomicity alone makes position pos ours; the fence below orders.
            seen = cuda.atomic.cas(header, HEAD, pos, pos + 1)
            if seen == pos:
                break
            pos = seen
        elif seq < pos:
            # The slot still holds the message of the previous lap: full. Relaxed add: a
            # counter nobody synchronises on.
            cuda.atomic.add(header, OVERFLOW, 1)
            return False
        else:
            pos = _load(header, HEAD)  # another producer took pos; start again from head
    # Acquire (fence.sc.gpu after the strong read of seq == pos): the previous lap's consumer
    # read the slot before releasing it, so our payload writes cannot overtake its reads.
    cuda.threadfence()
    _copy(slots, idx, msgs, i)
    # Release: the payload writes are visible at gpu scope before the seq store below.
    cuda.threadfence()
    cuda.atomic.add(seqs, idx, 1)  # relaxed RMW, ordered by the fence: seq = pos + 1, "full"
    return True


@cuda.jit(device=True)
def inbox_try_pop_into(header, seqs, slots, outs, j):  # type: ignore[no-untyped-def]
    """Pop the oldest message into ``outs[j]``; ``False`` when the queue is empty. Non-blocking."""
    mask = header[MASK]  # constants: plain loads
    cap = header[CAPACITY]
    pos = _load(header, TAIL)
    while True:
        idx = pos & mask
        seq = _load(seqs, idx)
        if seq == pos + 1:
            # Relaxed CAS: atomicity makes the message ours; the fence below orders the reads.
            seen = cuda.atomic.cas(header, TAIL, pos, pos + 1)
            if seen == pos:
                break
            pos = seen
        elif seq < pos + 1:
            return False  # its producer has not published it (or never took the slot): empty
        else:
            pos = _load(header, TAIL)
    # Acquire (fence.sc.gpu after the strong read of seq == pos + 1): the producer's payload
    # writes happen before our reads; a torn message cannot be read.
    cuda.threadfence()
    _copy(outs, j, slots, idx)
    # Release: our payload reads complete before the slot is handed to the next lap's producer.
    cuda.threadfence()
    cuda.atomic.add(seqs, idx, cap - 1)  # relaxed RMW, ordered by the fence: seq = pos + capacity
    return True


@cuda.jit(device=True)
def inbox_try_push(header, seqs, slots, msg):  # type: ignore[no-untyped-def]
    """Push ``msg[0]`` (``msg``: a 1-element array of the message dtype)."""
    return inbox_try_push_from(header, seqs, slots, msg, 0)


@cuda.jit(device=True)
def inbox_try_pop(header, seqs, slots, out):  # type: ignore[no-untyped-def]
    """Pop into ``out[0]`` (``out``: a 1-element array of the message dtype)."""
    return inbox_try_pop_into(header, seqs, slots, out, 0)


@cuda.jit(device=True)
def _lowest_lane(ballot):  # type: ignore[no-untyped-def]
    low = ballot & ((~ballot) + 1)  # the lowest set bit
    return cuda.popc(low - 1)


@cuda.jit(device=True)
def inbox_warp_push_from(header, seqs, slots, msgs, i, want):  # type: ignore[no-untyped-def]
    """Warp-aggregated push: every active lane calls it, lanes with ``want`` push ``msgs[i]``.

    One leader reserves ``popc(ballot)`` positions with one CAS on ``head`` (as many as are
    free; the rest are refused and counted in ``overflow`` once). Each lane then waits for its
    slot's previous-lap consumer (who has already reserved it, so the wait is short) and
    publishes as :func:`inbox_try_push_from` does. GPU only: the simulator has no warp votes.
    """
    active = cuda.activemask()
    ballot = cuda.ballot_sync(active, want)
    if ballot == 0:
        return False
    lane = cuda.laneid
    leader = _lowest_lane(ballot)
    n = cuda.popc(ballot)
    rank = cuda.popc(ballot & ((1 << lane) - 1))
    cap = header[CAPACITY]
    mask = header[MASK]
    base = 0
    k = 0
    if lane == leader:
        while True:
            t = _load(header, TAIL)  # read before the CAS: t <= tail at the CAS, so free is a lower bound
            h = _load(header, HEAD)
            free = cap - (h - t)
            k = min(n, free) if free > 0 else 0
            if k == 0:
                break
            # Relaxed CAS: reserves positions h .. h+k-1 for this warp; the fences below order.
            if cuda.atomic.cas(header, HEAD, h, h + k) == h:
                base = h
                break
        if n - k > 0:
            cuda.atomic.add(header, OVERFLOW, n - k)  # relaxed: a statistic
    base = cuda.shfl_sync(active, base, leader)
    k = cuda.shfl_sync(active, k, leader)
    if not want or rank >= k:
        return False
    pos = base + rank
    idx = pos & mask
    while _load(seqs, idx) != pos:  # strong reads: wait for the previous lap's consumer's release
        pass
    cuda.threadfence()  # acquire: as in inbox_try_push_from
    _copy(slots, idx, msgs, i)
    cuda.threadfence()  # release: payload before seq
    cuda.atomic.add(seqs, idx, 1)  # relaxed RMW after the fence: seq = pos + 1
    return True


@cuda.jit(device=True)
def inbox_warp_pop_into(header, seqs, slots, outs, j, want):  # type: ignore[no-untyped-def]
    """Warp-aggregated pop: lanes with ``want`` pop into ``outs[j]``; one CAS on ``tail`` per
    warp reserves up to ``popc(ballot)`` published-or-reserved positions. GPU only."""
    active = cuda.activemask()
    ballot = cuda.ballot_sync(active, want)
    if ballot == 0:
        return False
    lane = cuda.laneid
    leader = _lowest_lane(ballot)
    n = cuda.popc(ballot)
    rank = cuda.popc(ballot & ((1 << lane) - 1))
    cap = header[CAPACITY]
    mask = header[MASK]
    base = 0
    k = 0
    if lane == leader:
        while True:
            t = _load(header, TAIL)
            h = _load(header, HEAD)  # read after t: h >= t, positions t .. h-1 are reserved by producers
            avail = h - t
            k = min(n, avail) if avail > 0 else 0
            if k == 0:
                break
            # Relaxed CAS: reserves positions t .. t+k-1 for this warp.
            if cuda.atomic.cas(header, TAIL, t, t + k) == t:
                base = t
                break
    base = cuda.shfl_sync(active, base, leader)
    k = cuda.shfl_sync(active, k, leader)
    if not want or rank >= k:
        return False
    pos = base + rank
    idx = pos & mask
    while _load(seqs, idx) != pos + 1:  # strong reads: wait for the producer (it has reserved pos)
        pass
    cuda.threadfence()  # acquire: as in inbox_try_pop_into
    _copy(outs, j, slots, idx)
    cuda.threadfence()  # release: reads before the hand-back
    cuda.atomic.add(seqs, idx, cap - 1)  # relaxed RMW after the fence: seq = pos + capacity
    return True


@cuda.jit(device=True)
def partition_of(hint, num_partitions):  # type: ignore[no-untyped-def]
    """The partition of ``hint``: the same number as :func:`ringkernel.messaging.layout.partition_of`."""
    h = np.int64(hint) & 0xFFFFFFFF
    # h * 2654435761 mod 2**32 in two halves of the constant (0x9E37, 0x79B1): no int64 overflow
    h = (h * 0x79B1 + (((h * 0x9E37) & 0xFFFF) << 16)) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return h % num_partitions


@cuda.jit(device=True)
def pq_push_from(headers, seqs, slots, hint, msgs, i):  # type: ignore[no-untyped-def]
    """Push ``msgs[i]`` to partition ``partition_of(hint)`` of a PartitionedQueue."""
    p = partition_of(hint, headers.shape[0])
    return inbox_try_push_from(headers[p], seqs[p], slots[p], msgs, i)


@cuda.jit(device=True)
def pq_try_pop_into(headers, seqs, slots, partition, outs, j):  # type: ignore[no-untyped-def]
    """Pop from one partition into ``outs[j]``."""
    return inbox_try_pop_into(headers[partition], seqs[partition], slots[partition], outs, j)


@cuda.jit(device=True)
def pq_pop_any_into(headers, seqs, slots, home, outs, j):  # type: ignore[no-untyped-def]
    """Pop from partition ``home``, else steal from the next ones in turn; returns the partition
    popped from, or -1 when every partition was found empty."""
    n = headers.shape[0]
    for k in range(n):
        p = (home + k) % n
        if inbox_try_pop_into(headers[p], seqs[p], slots[p], outs, j):
            return p
    return -1


@cuda.jit(device=True)
def pq_warp_push_from(headers, seqs, slots, partition, msgs, i, want):  # type: ignore[no-untyped-def]
    """Warp-aggregated push to one partition; ``partition`` must be the same on every active
    lane (e.g. ``warp_id % num_partitions``). GPU only."""
    return inbox_warp_push_from(headers[partition], seqs[partition], slots[partition], msgs, i, want)


@cuda.jit(device=True)
def pq_warp_pop_into(headers, seqs, slots, partition, outs, j, want):  # type: ignore[no-untyped-def]
    """Warp-aggregated pop from one partition (uniform across the warp). GPU only."""
    return inbox_warp_pop_into(headers[partition], seqs[partition], slots[partition], outs, j, want)
