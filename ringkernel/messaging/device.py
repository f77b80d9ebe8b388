"""Device functions of the queues: bounded MPMC ring buffers with a sequence number per slot.

Usable in any ``@gpu_kernel`` or ``@cuda.jit`` kernel. A queue is passed as three arrays
(``LockFreeInbox.device_args()``): ``header`` (int64, :mod:`ringkernel.messaging.layout`),
``seqs`` (int64, one per slot) and ``slots`` (the message dtype). Messages are passed as an
array of the message dtype and an index (``..._from(…, msgs, i)``), or as a 1-element array
(``inbox_try_push(…, msg)``: ``msg[0]`` is sent; a ``cuda.local.array(1, dtype)`` works).

The algorithm is the Broker Queue's (Kerbl et al., 2018) with Vyukov's per-slot sequence
numbers: a producer claims one of ``free`` (a consumer one of ``avail``) with a fetch-and-sub,
then takes a position with a fetch-and-add on ``head`` (``tail``): no CAS loop, so the cost of
an operation does not grow with contention, and a warp's leader claims for all its lanes with
one atomic each. Slot ``pos & mask`` holds ``seq == pos`` when it is free for the producer of
position ``pos``, ``seq == pos + 1`` when it holds that producer's message, and the consumer
hands it to the next lap with ``seq = pos + capacity``. See docs/messaging.md for the ordering
argument behind every fence and the progress argument behind every wait.

Importing this module imports numba (after :func:`ringkernel.config.select_backend`).
"""

from __future__ import annotations

import numpy as np
from numba import config as _numba_config
from numba import cuda

from .layout import AVAIL, CAPACITY, FREE, HEAD, MASK, OVERFLOW, TAIL

__all__ = [
    "inbox_try_push", "inbox_try_pop", "inbox_try_push_from", "inbox_try_pop_into",
    "inbox_warp_push_from", "inbox_warp_pop_into",
    "partition_of", "pq_push_from", "pq_try_pop_into", "pq_pop_any_into", "pq_warp_push_from",
    "pq_warp_pop_into",
]  # fmt: skip


if _numba_config.ENABLE_CUDASIM:  # the simulator wraps arrays and cannot assign a record element

    @cuda.jit(device=True)
    def _load(arr, i):  # type: ignore[no-untyped-def]
        return cuda.atomic.add(arr, i, 0)  # the simulator has no ld.relaxed: an RMW adding 0

    @cuda.jit(device=True)
    def _fence():  # type: ignore[no-untyped-def]
        cuda.threadfence()

    def _unwrap(a):  # type: ignore[no-untyped-def]
        while not isinstance(a, np.ndarray):  # FakeWithinKernelCUDAArray -> FakeCUDAArray -> ndarray
            a = a._item if hasattr(a, "_item") else a._ary
        return a

    @cuda.jit(device=True)
    def _copy(dst, di, src, si):  # type: ignore[no-untyped-def]
        _unwrap(dst)[di] = _unwrap(src)[si]

else:
    from llvmlite import ir as _ir
    from numba import types as _types
    from numba.cuda import cgutils as _cgutils
    from numba.cuda.extending import intrinsic as _intrinsic

    def _element_pointer(context, builder, aryty, ary, ity, idx):  # type: ignore[no-untyped-def]
        arr = context.make_array(aryty)(context, builder, ary)
        i = context.cast(builder, idx, ity, _types.intp)
        return _cgutils.get_item_pointer(context, builder, aryty, arr, [i], wraparound=False)

    @_intrinsic
    def _load(typingctx, arr, i):  # type: ignore[no-untyped-def]
        """``arr[i]`` (int64) by ``ld.relaxed.gpu``: a strong read at gpu scope, served by L2.

        Strong, so a spin sees other SMs' writes and it forms an acquire pattern with the fence
        after it; an ``asm volatile`` (side effect), so the compiler neither hoists it out of a
        loop nor merges two reads. Unlike the RMW ``atomic.add(arr, i, 0)`` it replaces, it does
        not occupy L2's atomic unit, so spinning threads do not slow the claims they wait for.
        """
        if not (isinstance(arr, _types.Array) and arr.ndim == 1 and arr.dtype == _types.int64
                and isinstance(i, _types.Integer)):  # fmt: skip
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            ptr = _element_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            fnty = _ir.FunctionType(_ir.IntType(64), [ptr.type])
            asm = _ir.InlineAsm(fnty, "ld.relaxed.gpu.s64 $0, [$1];", "=l,l,~{memory}", side_effect=True)
            return builder.call(asm, [ptr])

        return _types.int64(arr, i), codegen

    @_intrinsic
    def _fence(typingctx):  # type: ignore[no-untyped-def]
        """``fence.acq_rel.gpu``: what a release pattern (fence, then a strong write) and an
        acquire pattern (a strong read, then fence) need in PTX's memory model; lighter than the
        ``fence.sc.gpu`` of ``cuda.threadfence()``, which also orders fences among themselves."""

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            asm = _ir.InlineAsm(_ir.FunctionType(_ir.VoidType(), []), "fence.acq_rel.gpu;", "~{memory}", side_effect=True)
            builder.call(asm, [])
            return context.get_dummy_value()

        return _types.void(), codegen

    def _chunk_bytes(itemsize: int) -> int:
        """The widest access (16, 8, 4, 2 or 1 bytes) that divides a message."""
        return next(c for c in (16, 8, 4, 2, 1) if itemsize % c == 0)

    @_intrinsic
    def _copy(typingctx, dst, di, src, si):  # type: ignore[no-untyped-def]
        """``dst[di] = src[si]`` for one message, in the widest aligned accesses that fit.

        numba copies a record with ``llvm.memcpy`` and no alignment, which the GPU backend turns
        into one byte load and one byte store per byte: 128 memory instructions for a 64-byte
        message, which capped every queue near 5 x 10^8 messages/s on the H200. Here a 64-byte
        message moves in four 16-byte loads and stores. Both addresses are checked at run time:
        where either is not aligned to the chunk (an odd view, a local array), bytes are copied.
        """
        ok = (
            isinstance(dst, _types.Array) and isinstance(src, _types.Array) and dst.dtype == src.dtype
            and dst.ndim == 1 and src.ndim == 1 and isinstance(di, _types.Integer) and isinstance(si, _types.Integer)
        )  # fmt: skip
        if not ok:
            return None
        itemsize = dst.dtype.size if isinstance(dst.dtype, _types.Record) else dst.dtype.bitwidth // 8
        chunk = _chunk_bytes(itemsize)

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            i64 = _ir.IntType(64)
            dst_ptr = _element_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            src_ptr = _element_pointer(context, builder, sig.args[2], args[2], sig.args[3], args[3])
            d8, s8 = (builder.bitcast(p, _ir.IntType(8).as_pointer()) for p in (dst_ptr, src_ptr))
            both = builder.or_(builder.ptrtoint(d8, i64), builder.ptrtoint(s8, i64))
            aligned = builder.icmp_unsigned("==", builder.and_(both, _ir.Constant(i64, chunk - 1)), _ir.Constant(i64, 0))
            wide = _ir.VectorType(_ir.IntType(64), 2) if chunk == 16 else _ir.IntType(8 * chunk)
            with builder.if_else(aligned) as (then, otherwise):
                for width, ty, al in ((then, wide, chunk), (otherwise, _ir.IntType(8), 1)):
                    with width:
                        dw = builder.bitcast(d8, ty.as_pointer())
                        sw = builder.bitcast(s8, ty.as_pointer())
                        for k in range(itemsize // al):
                            off = _ir.Constant(i64, k)
                            v = builder.load(builder.gep(sw, [off]), align=al)
                            builder.store(v, builder.gep(dw, [off]), align=al)
            return context.get_dummy_value()

        return _types.void(dst, di, src, si), codegen


@cuda.jit(device=True)
def _claim(header, counter, n):  # type: ignore[no-untyped-def]
    """Take up to ``n`` of ``header[counter]`` (``FREE`` slots or ``AVAIL`` messages); returns how many."""
    # Relaxed fetch-and-sub: only its atomicity matters (no two claims take the same unit); what
    # could not be taken goes back with a relaxed add. Meanwhile the counter reads low, never
    # high, so another claimer may see "full"/"empty" a moment early but never takes a unit that
    # does not exist.
    # A strong read first: when nothing can be claimed, leave the counter alone. Without it,
    # thousands of threads polling an empty queue kept `avail` below zero with their pending
    # give-backs, so the messages that did arrive could never be claimed (a livelock seen on
    # the H200 with 8192 consumers and 1016 messages left).
    if _load(header, counter) <= 0:
        return 0
    old = cuda.atomic.sub(header, counter, n)
    k = min(n, old) if old > 0 else 0
    if k < n:
        cuda.atomic.add(header, counter, n - k)
    return k


@cuda.jit(device=True)
def _put(seqs, slots, mask, pos, msgs, i):  # type: ignore[no-untyped-def]
    """Write ``msgs[i]`` into position ``pos`` (ours by a fetch-and-add on ``head``) and publish it."""
    idx = pos & mask
    # Strong reads (relaxed atomics at gpu scope): wait until the previous lap's consumer hands
    # the slot back (seq == pos). It already holds its claim, so the wait is short.
    while _load(seqs, idx) != pos:
        pass
    # Acquire (fence.acq_rel.gpu after the strong read of seq == pos): that consumer read the slot
    # before releasing it, so our payload writes cannot overtake its reads.
    _fence()
    _copy(slots, idx, msgs, i)
    # Release: the payload writes are visible at gpu scope before the seq update below.
    _fence()
    cuda.atomic.add(seqs, idx, 1)  # relaxed RMW, ordered by the fence: seq = pos + 1, "full"


@cuda.jit(device=True)
def _take(seqs, slots, mask, cap, pos, outs, j):  # type: ignore[no-untyped-def]
    """Read position ``pos`` (ours by a fetch-and-add on ``tail``) into ``outs[j]`` and hand it back."""
    idx = pos & mask
    # Strong reads: wait for the producer of pos to publish (seq == pos + 1). It already holds
    # its claim and its position, so the wait is short.
    while _load(seqs, idx) != pos + 1:
        pass
    # Acquire (fence.acq_rel.gpu after the strong read of seq == pos + 1): the producer's payload
    # writes happen before our reads; a torn message cannot be read.
    _fence()
    _copy(outs, j, slots, idx)
    # Release: our payload reads complete before the slot goes to the next lap's producer.
    _fence()
    cuda.atomic.add(seqs, idx, cap - 1)  # relaxed RMW, ordered by the fence: seq = pos + capacity


@cuda.jit(device=True)
def inbox_try_push_from(header, seqs, slots, msgs, i):  # type: ignore[no-untyped-def]
    """Push ``msgs[i]``; ``False`` (and ``overflow`` + 1) when the queue is full.

    Never waits for a full queue; once it has a free slot it waits only for that slot's
    previous-lap consumer, which is already reading it."""
    if _claim(header, FREE, 1) == 0:
        cuda.atomic.add(header, OVERFLOW, 1)  # relaxed: a counter nobody synchronises on
        return False
    # Relaxed fetch-and-add: a unique position; the fences in _put order the slot's contents.
    pos = cuda.atomic.add(header, HEAD, 1)
    _put(seqs, slots, header[MASK], pos, msgs, i)  # MASK: a constant written before any launch
    # Relaxed add after publishing: one more message for consumers to claim (they still wait
    # for seq, so this counter needs no ordering; after the publish it rarely makes them wait).
    cuda.atomic.add(header, AVAIL, 1)
    return True


@cuda.jit(device=True)
def inbox_try_pop_into(header, seqs, slots, outs, j):  # type: ignore[no-untyped-def]
    """Pop the oldest message into ``outs[j]``; ``False`` when the queue is empty.

    Never waits for an empty queue; once it has claimed a message it waits only for that
    message's producer, which is already writing it."""
    if _claim(header, AVAIL, 1) == 0:
        return False
    pos = cuda.atomic.add(header, TAIL, 1)  # relaxed fetch-and-add: a unique position
    _take(seqs, slots, header[MASK], header[CAPACITY], pos, outs, j)  # constants: plain loads
    cuda.atomic.add(header, FREE, 1)  # relaxed: one more slot for producers to claim
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
def _warp_claim(header, counter, position, want):  # type: ignore[no-untyped-def]
    """One warp's claim: (mine, position, active, leader, taken). The lowest lane with ``want``
    claims ``popc(ballot)`` of ``counter`` and, for the ``taken`` it got, as many positions
    with one fetch-and-add on ``position``; lane of rank r gets ``base + r`` if r < taken."""
    active = cuda.activemask()
    ballot = cuda.ballot_sync(active, want)
    lane = cuda.laneid
    n = np.int64(cuda.popc(ballot))
    leader = _lowest_lane(ballot if ballot != 0 else active)  # any valid lane when none wants
    rank = cuda.popc(ballot & ((1 << lane) - 1))
    base = np.int64(0)
    k = np.int64(0)
    if n > 0 and lane == leader:
        k = _claim(header, counter, n)
        if k > 0:
            base = cuda.atomic.add(header, position, k)  # relaxed fetch-and-add: positions base .. base+k-1
    base = cuda.shfl_sync(active, base, leader)
    k = cuda.shfl_sync(active, k, leader)
    return want and rank < k, base + rank, active, leader, k, n


@cuda.jit(device=True)
def inbox_warp_push_from(header, seqs, slots, msgs, i, want):  # type: ignore[no-untyped-def]
    """Warp-aggregated push: every active lane calls it, lanes with ``want`` push ``msgs[i]``.

    The leader claims ``popc(ballot)`` free slots (as many as there are; the rest are refused
    and counted in ``overflow``) and the positions for them with one fetch-and-add each, so a
    warp pays two contended atomics for up to 32 messages. Each lane then publishes as
    :func:`inbox_try_push_from` does; after a ``syncwarp`` the leader announces them all in
    ``avail`` with one add. GPU only: the simulator has no warp votes.
    """
    mine, pos, active, leader, k, n = _warp_claim(header, FREE, HEAD, want)
    if mine:
        _put(seqs, slots, header[MASK], pos, msgs, i)
    cuda.syncwarp(active)  # every lane of the warp has published before the leader announces them
    if cuda.laneid == leader:
        if n > k:
            cuda.atomic.add(header, OVERFLOW, n - k)  # relaxed: a statistic
        if k > 0:
            cuda.atomic.add(header, AVAIL, k)  # relaxed: as in inbox_try_push_from
    return mine


@cuda.jit(device=True)
def inbox_warp_pop_into(header, seqs, slots, outs, j, want):  # type: ignore[no-untyped-def]
    """Warp-aggregated pop: lanes with ``want`` pop into ``outs[j]``; the leader claims up to
    ``popc(ballot)`` messages of ``avail`` and their positions with one fetch-and-add each;
    after the lanes hand their slots back, one add returns them to ``free``. GPU only."""
    mine, pos, active, leader, k, n = _warp_claim(header, AVAIL, TAIL, want)
    if mine:
        _take(seqs, slots, header[MASK], header[CAPACITY], pos, outs, j)
    cuda.syncwarp(active)  # every lane has handed its slot back before the leader frees them
    if cuda.laneid == leader and k > 0:
        cuda.atomic.add(header, FREE, k)  # relaxed: as in inbox_try_pop_into
    return mine


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
    """Pop from one partition into ``outs[j]``; ``False`` for an empty partition and for a
    partition index outside ``0 .. partitions-1`` (indexing would wrap a negative one round to
    the last partition, and read past the end on a GPU; from an adversarial trial)."""
    if partition < 0 or partition >= headers.shape[0]:
        return False
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
