"""Defects an adversarial trial found in the message queues (tenth session), each pinned down."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ringkernel.errors import ConfigurationError, MessageError, ResourceClosedError
from ringkernel.messaging import LockFreeInbox, PartitionedQueue, pq_try_pop_into

from numba import cuda  # noqa: E402  (after ringkernel chose the simulator)


def test_concurrent_host_pushes_lose_nothing() -> None:
    """Eight threads pushing at once: every push that returned True is popped, once; the queue
    still takes pushes afterwards (the header was overwritten between threads before)."""
    q = LockFreeInbox(4096, np.int64)
    accepted: list[list[int]] = [[] for _ in range(8)]
    errors: list[BaseException] = []

    def push(t: int) -> None:
        try:
            for k in range(200):
                v = t * 1000 + k
                if q.try_push(np.int64(v)):
                    accepted[t].append(v)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = sorted(int(x) for x in q.pop_many(5000))
    assert got == sorted(v for a in accepted for v in a) and len(got) == 1600
    assert q.try_push(np.int64(7)) and int(q.try_pop()) == 7
    q.close()


@pytest.mark.parametrize("msg", [(5, 6), (), ((5.9,),), ("x",), (None,)])
def test_tuples_that_do_not_fit_a_plain_dtype_are_refused(msg: tuple) -> None:
    q = LockFreeInbox(8, np.int32)
    with pytest.raises(MessageError):
        q.try_push(msg)
    assert len(q) == 0
    assert q.try_push((5,)) and int(q.try_pop()) == 5
    q.close()


def test_values_a_field_would_change_are_refused() -> None:
    dt = np.dtype([("a", "i4"), ("b", "i4", (2,)), ("z", "c8")])
    q = LockFreeInbox(8, dt)
    for bad in ((1, (2.7, 3), 0j), (1, (2, 3), 1e60 + 0j), (1, (2, 2**40), 0j), (1.5, (2, 3), 0j), ()):
        with pytest.raises(MessageError):
            q.try_push(bad)
    assert q.try_push((1, (2.0, 3), 1 + 2j))
    m = q.try_pop()
    assert int(m["a"]) == 1 and list(m["b"]) == [2, 3] and m["z"] == 1 + 2j
    q.close()


@pytest.mark.parametrize("dt", [[("a", ">i4")] if np.little_endian else [("a", "<i4")], [("a", "S4")], [("a", "M8[s]")],
                                [("o", [("a", "i4"), ("b", ">f8" if np.little_endian else "<f8")])]])  # fmt: skip
def test_structured_dtypes_kernels_cannot_take_are_refused(dt: list) -> None:
    with pytest.raises(ConfigurationError, match="field"):
        LockFreeInbox(8, np.dtype(dt))


def test_a_partition_out_of_range_pops_nothing_on_the_device() -> None:
    q = PartitionedQueue(3, 4, np.int32)
    for p in range(3):
        q.push_many(p, np.array([10 + p], np.int32))
    headers, seqs, slots = q.device_args()
    outs = cuda.device_array(4, np.int32)
    got = cuda.device_array(4, np.int32)

    @cuda.jit
    def pop(headers, seqs, slots, outs, got):  # type: ignore[no-untyped-def]
        for k, p in enumerate((-1, 3, 1, -3)):
            got[k] = 1 if pq_try_pop_into(headers, seqs, slots, p, outs, k) else 0

    pop[1, 1](headers, seqs, slots, outs, got)
    assert list(got.copy_to_host()) == [0, 0, 1, 0] and int(outs.copy_to_host()[2]) == 11
    assert q.lengths() == [1, 0, 1]
    q.close()


def test_bad_streams_closed_queues_and_with_blocks() -> None:
    q = LockFreeInbox(8, np.int32)
    for bad in ("x", 5, object()):
        with pytest.raises(ConfigurationError, match="stream"):
            q.try_push((1,), stream=bad)
        with pytest.raises(ConfigurationError, match="stream"):
            q.try_pop(stream=bad)
    assert len(q) == 0
    q.close()
    with pytest.raises(ResourceClosedError):
        with q:
            pass
    pq = PartitionedQueue(2, 4, np.int32)
    pq.close()
    with pytest.raises(ResourceClosedError):
        pq.push("not a hint", (1,))  # closed comes first


def test_any_number_numpy_converts_is_taken_exactly_or_refused() -> None:
    """(A review of the fixes above: a 0-d array or a Decimal of a plain dtype worked before and
    must still work; a Decimal or Fraction fraction must be refused like a float one.)"""
    from decimal import Decimal
    from fractions import Fraction

    q = LockFreeInbox(8, np.int32)
    for ok in ((np.array(5),), (Decimal("5"),), (np.int64(5),), (5.0,)):
        assert q.try_push(ok)
    assert [int(x) for x in q.pop_many(8)] == [5, 5, 5, 5]
    for bad in ((Decimal("5.9"),), (Fraction(11, 2),), (np.array([5]),), ("5",)):
        with pytest.raises(MessageError):
            q.try_push(bad)
    rq = LockFreeInbox(8, np.dtype([("a", "i4"), ("b", "f4")]))
    for bad in ((Decimal("5.9"), 1.0), (Fraction(11, 2), 1.0)):
        with pytest.raises(MessageError):
            rq.try_push(bad)
    assert rq.try_push((Decimal("5"), 1.0)) and len(rq) == 1
    q.close()
    rq.close()
