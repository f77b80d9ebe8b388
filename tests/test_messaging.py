"""LockFreeInbox and PartitionedQueue on numba's simulator: host semantics against a Python model
(hypothesis), kernels pushing and popping from many threads and blocks, and bad input."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringkernel.errors import ConfigurationError, MessageError, ResourceClosedError, RingKernelError
from ringkernel.messaging import (
    LockFreeInbox,
    PartitionedQueue,
    inbox_try_pop_into,
    inbox_try_push_from,
    pq_pop_any_into,
    pq_push_from,
)
from ringkernel.messaging.layout import HEAD, OVERFLOW, TAIL, partition_of

MSG = np.dtype([("producer", np.int32), ("seq", np.int32), ("value", np.float64), ("check", np.int64)])

from numba import cuda  # noqa: E402  (after ringkernel chose the simulator)


def _messages(n: int, start: int = 0) -> np.ndarray:
    m = np.zeros(n, MSG)
    m["producer"] = 7
    m["seq"] = np.arange(start, start + n)
    m["value"] = m["seq"] * 0.5
    m["check"] = m["seq"] * 31 + 7
    return m


class Model:
    """A bounded FIFO with an overflow counter: what every host operation must agree with."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.items, self.overflow = capacity, deque(), 0

    def push_many(self, seqs: list[int]) -> int:
        k = min(len(seqs), self.capacity - len(self.items))
        self.items.extend(seqs[:k])
        self.overflow += len(seqs) - k
        return k

    def pop_many(self, n: int) -> list[int]:
        return [self.items.popleft() for _ in range(min(n, len(self.items)))]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 20)),
        st.tuples(st.just("pop"), st.integers(0, 20)),
        st.tuples(st.just("push1"), st.just(1)),
        st.tuples(st.just("pop1"), st.just(1)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log2cap=st.integers(1, 4), script=ops)
def test_host_operations_match_the_model(log2cap: int, script: list[tuple[str, int]]) -> None:
    cap = 1 << log2cap
    model, q, nxt = Model(cap), LockFreeInbox(cap, MSG), 0
    with q:
        for op, n in script:
            if op == "push":
                assert q.push_many(_messages(n, nxt)) == model.push_many(list(range(nxt, nxt + n)))
                nxt += n
            elif op == "push1":
                assert q.try_push(_messages(1, nxt)[0]) == (model.push_many([nxt]) == 1)
                nxt += 1
            elif op == "pop":
                got = q.pop_many(n)
                assert list(got["seq"]) == model.pop_many(n)
                assert np.array_equal(got["check"], got["seq"].astype(np.int64) * 31 + 7)
            else:
                m = q.try_pop()
                want = model.pop_many(1)
                assert (m is None) == (not want) and (m is None or m["seq"] == want[0])
            assert len(q) == len(model.items) and q.is_empty() == (not model.items)
            assert q.overflow_count() == model.overflow


def test_wrap_around_over_many_laps(rng: np.random.Generator) -> None:
    q, model, nxt = LockFreeInbox(8, MSG), Model(8), 0
    for _ in range(200):  # about 100 laps of the ring
        n = int(rng.integers(0, 9))
        assert q.push_many(_messages(n, nxt)) == model.push_many(list(range(nxt, nxt + n)))
        nxt += n
        k = int(rng.integers(0, 9))
        assert list(q.pop_many(k)["seq"]) == model.pop_many(k)
    h = q.header.copy_to_host()
    assert h[HEAD] > 8 * 50 and h[HEAD] - h[TAIL] == len(model.items) and h[OVERFLOW] == model.overflow
    q.close()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 16), hints=st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=30))
def test_partitioned_push_follows_the_hash(n: int, hints: list[int]) -> None:
    q = PartitionedQueue(n, 64, MSG)
    models = [Model(64) for _ in range(n)]
    for i, hint in enumerate(hints):
        p = partition_of(hint, n)
        assert 0 <= p < n and q.partition_of(hint) == p
        assert q.push(hint, _messages(1, i)[0]) == (models[p].push_many([i]) == 1)
    assert q.lengths() == [len(m.items) for m in models] and q.total_messages() == len(hints)
    for p in range(n):
        assert list(q.pop_many(p, 100)["seq"]) == models[p].pop_many(100)
        assert q.pop(p) is None
    q.close()


def test_partition_hash_spreads_keys() -> None:
    counts = np.bincount([partition_of(k, 8) for k in range(8000)], minlength=8)
    assert counts.min() > 800  # 1000 each on average


# -- kernels on the simulator ---------------------------------------------------------------


@cuda.jit
def _produce(header, seqs, slots, msgs, ok):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < msgs.shape[0]:
        ok[i] = 1 if inbox_try_push_from(header, seqs, slots, msgs, i) else 0


@cuda.jit
def _consume(header, seqs, slots, outs, ok):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < outs.shape[0]:
        ok[i] = 1 if inbox_try_pop_into(header, seqs, slots, outs, i) else 0


@cuda.jit
def _produce_seq(header, seqs, slots, msgs, per, ok):  # type: ignore[no-untyped-def]
    # thread t pushes its messages t*per .. t*per+per-1 in order (one producer each)
    t = cuda.grid(1)
    for k in range(per):
        j = t * per + k
        if j < msgs.shape[0]:
            ok[j] = 1 if inbox_try_push_from(header, seqs, slots, msgs, j) else 0


def _producer_messages(producers: int, per: int) -> np.ndarray:
    m = np.zeros(producers * per, MSG)
    m["producer"] = np.repeat(np.arange(producers), per)
    m["seq"] = np.tile(np.arange(per), producers)
    m["value"] = np.arange(producers * per) * 0.25
    m["check"] = m["producer"].astype(np.int64) * 1_000_003 + m["seq"] * 7 + 1
    return m


def test_kernels_deliver_each_message_once_in_producer_order() -> None:
    producers, per = 64, 6  # 2 blocks of 32 threads, each thread one producer
    msgs = _producer_messages(producers, per)
    q = LockFreeInbox(512, MSG)
    ok = cuda.to_device(np.zeros(len(msgs), np.int32))
    _produce_seq[2, 32](*q.device_args(), cuda.to_device(msgs), per, ok)
    assert ok.copy_to_host().all() and len(q) == len(msgs)
    outs = cuda.to_device(np.zeros(len(msgs) + 40, MSG))
    got_ok = cuda.to_device(np.zeros(len(msgs) + 40, np.int32))
    _consume[4, 106](*q.device_args(), outs, got_ok)
    flags = got_ok.copy_to_host().astype(bool)
    got = outs.copy_to_host()[flags]
    assert flags.sum() == len(msgs) and q.is_empty()
    assert np.array_equal(np.sort(got, order=["producer", "seq"]), msgs)  # exactly once, nothing torn
    assert np.array_equal(got["check"], got["producer"].astype(np.int64) * 1_000_003 + got["seq"] * 7 + 1)
    # FIFO per producer: consumers took positions in order of the tail, and each consumer thread
    # records into its own index; read the slots' positions back from the order of the queue
    q2 = LockFreeInbox(512, MSG)
    _produce_seq[2, 32](*q2.device_args(), cuda.to_device(msgs), per, ok)
    order = q2.pop_many(len(msgs))
    for p in range(producers):
        assert list(order["seq"][order["producer"] == p]) == list(range(per))


def test_kernel_overflow_is_counted_exactly(rng: np.random.Generator) -> None:
    cap, n = 64, 150
    msgs = _producer_messages(n, 1)
    q = LockFreeInbox(cap, MSG)
    pre = int(rng.integers(0, cap))
    assert q.push_many(_messages(pre)) == pre
    ok = cuda.to_device(np.zeros(n, np.int32))
    _produce[3, 50](*q.device_args(), cuda.to_device(msgs), ok)
    pushed = int(ok.copy_to_host().sum())
    assert pushed == cap - pre and q.overflow_count() == n - pushed and len(q) == cap
    got = q.pop_many(cap)
    assert list(got["seq"][:pre]) == list(range(pre))


@cuda.jit
def _pq_produce(headers, seqs, slots, msgs, ok):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < msgs.shape[0]:
        ok[i] = 1 if pq_push_from(headers, seqs, slots, msgs[i]["producer"], msgs, i) else 0


@cuda.jit
def _pq_consume_any(headers, seqs, slots, home, outs, where):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < outs.shape[0]:
        where[i] = pq_pop_any_into(headers, seqs, slots, home, outs, i)


def test_partitioned_kernels_hash_and_steal() -> None:
    n_part, n = 4, 120
    msgs = _producer_messages(n, 1)
    q = PartitionedQueue(n_part, 64, MSG)
    ok = cuda.to_device(np.zeros(n, np.int32))
    _pq_produce[4, 30](*q.device_args(), cuda.to_device(msgs), ok)
    assert ok.copy_to_host().all()
    want = np.bincount([partition_of(p, n_part) for p in range(n)], minlength=n_part)
    assert q.lengths() == list(want)  # the device hash agrees with the host's
    outs = cuda.to_device(np.zeros(n + 8, MSG))
    where = cuda.to_device(np.zeros(n + 8, np.int64))
    _pq_consume_any[2, 64](*q.device_args(), 1, outs, where)  # every consumer's home is partition 1
    w = where.copy_to_host()
    got = outs.copy_to_host()[w >= 0]
    assert (w >= 0).sum() == n and (w[: want[1]] == 1).all() and set(w[w >= 0]) == set(range(n_part))
    assert sorted(got["producer"]) == list(range(n)) and q.total_messages() == 0


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("cap", [0, 3, 100, 2**31, 1.5, "8", True])
def test_capacity_must_be_a_power_of_two(cap: object) -> None:
    with pytest.raises(ConfigurationError, match="capacity"):
        LockFreeInbox(cap, MSG)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "dtype, what",
    [
        (np.dtype([("a", np.uint8, (257,))]), "256"),
        (np.dtype([("a", object)]), "objects"),
        (object, "objects"),
        (None, "None"),
        ("U8", "not supported"),
        (np.dtype((np.float32, (4,))), "sub-array"),
    ],
)
def test_bad_dtypes_say_what_to_use(dtype: object, what: str) -> None:
    with pytest.raises(ConfigurationError, match=what) as e:
        LockFreeInbox(8, dtype)
    assert e.value.hint


def test_bad_messages_say_what_to_pass() -> None:
    q = LockFreeInbox(8, MSG)
    with pytest.raises(MessageError, match="None"):
        q.try_push(None)
    with pytest.raises(MessageError, match="dtype"):
        q.push_many(np.zeros(3, np.float64))
    with pytest.raises(MessageError, match="one message"):
        q.try_push(_messages(2))
    with pytest.raises(MessageError, match="1-D"):
        q.push_many(_messages(4).reshape(2, 2))
    with pytest.raises(MessageError, match="list"):
        q.push_many([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        q.pop_many(-1)
    assert isinstance(MessageError("x"), TypeError) and len(q) == 0
    p = PartitionedQueue(2, 8, MSG)
    with pytest.raises(ConfigurationError, match="partition"):
        p.pop(2)
    with pytest.raises(ConfigurationError):
        PartitionedQueue(0, 8, MSG)


def test_use_after_close_raises() -> None:
    q = LockFreeInbox(8, MSG)
    q.close()
    q.close()  # idempotent
    for call in (lambda: q.try_push(_messages(1)[0]), q.try_pop, lambda: len(q), q.device_args, q.overflow_count):
        with pytest.raises(ResourceClosedError):
            call()
    p = PartitionedQueue(2, 8, MSG)
    p.close()
    with pytest.raises(ResourceClosedError):
        p.total_messages()


def test_host_refuses_a_queue_in_the_middle_of_an_operation() -> None:
    q = LockFreeInbox(8, MSG)
    q.push_many(_messages(3))
    seqs = q.seqs.copy_to_host()
    seqs[1] = 0  # as if a consumer had reserved slot 1 and not yet handed it back
    q.seqs.copy_to_device(seqs)
    with pytest.raises(RingKernelError, match="kernel is using the queue"):
        q.pop_many(3)


@pytest.mark.parametrize("word, delta", [("FREE", -1), ("AVAIL", -1), ("AVAIL", 1), ("HEAD", 9)])
def test_host_refuses_a_header_with_a_claim_in_flight(word: str, delta: int) -> None:
    """A producer that has claimed a free slot but not yet its position (or a consumer a message),
    or a header overwritten: the host's push and pop refuse instead of corrupting the ring."""
    from ringkernel.messaging import layout

    q = LockFreeInbox(8, MSG)
    q.push_many(_messages(3))
    h = q.header.copy_to_host()
    h[getattr(layout, word)] += delta
    q.header.copy_to_device(h)
    for call in (lambda: q.pop_many(1), lambda: q.push_many(_messages(1))):
        with pytest.raises(RingKernelError, match="not at rest.*kernel is using the queue") as info:
            call()
        assert "synchronize the streams" in str(info.value)


def test_pool_allocation() -> None:
    from ringkernel import GpuMemoryPool

    pool = GpuMemoryPool()
    with LockFreeInbox(16, MSG, pool=pool) as q:
        assert q.push_many(_messages(20)) == 16 and list(q.pop_many(4)["seq"]) == [0, 1, 2, 3]
    pool.close()


@pytest.mark.parametrize("partitioned", [False, True])
def test_device_args_held_after_close_keep_their_pooled_memory(partitioned: bool) -> None:
    """A pooled queue's blocks went back to the pool at close() while a caller still held
    device_args(): a kernel launched with them wrote into the blocks' next owner. The blocks
    now stay reserved until the last array over them is dropped, and return then."""
    import gc

    from ringkernel import GpuMemoryPool

    pool = GpuMemoryPool()
    q = PartitionedQueue(4, 16, MSG, pool=pool) if partitioned else LockFreeInbox(16, MSG, pool=pool)
    if partitioned:
        q.push_many(0, _messages(5))
    else:
        q.push_many(_messages(5))
    args = q.device_args()
    held = pool.diagnostics().live_bytes
    before = [a.copy_to_host() for a in args]
    q.close()
    with pytest.raises(ResourceClosedError):
        q.device_args()
    assert pool.diagnostics().live_bytes == held  # still reserved: args hold them
    others = [pool.allocate(a.nbytes) for a in before for _ in range(3)]
    for b in others:  # whatever the pool hands out now, written all over
        b.as_array(b.capacity, np.uint8).copy_to_device(np.full(b.capacity, 0xFF, np.uint8))
    for a, was in zip(args, before):  # the held arrays are not among them
        np.testing.assert_array_equal(a.copy_to_host(), was)
    for b in others:
        b.free()
    del args, a
    gc.collect()
    assert pool.diagnostics().live_bytes == 0  # returned once dropped
    pool.close()


def test_pushed_tuples_keep_their_values_and_numpy_scalars_are_messages() -> None:
    """(5.9,) into an int32 queue stored 5, np.int32(5) was refused as 'not an array' (an
    adversarial trial): fractions, out-of-range ints and overflowing floats are refused now."""
    import numpy as np

    from ringkernel.errors import MessageError
    from ringkernel.messaging import LockFreeInbox

    with LockFreeInbox(8, np.int32) as q:
        assert q.try_push((5,)) and q.try_push(np.int32(6)) and q.try_push((True,))
        for bad in ((5.9,), (2**40,)):
            with pytest.raises(MessageError, match="fit"):
                q.try_push(bad)
        np.testing.assert_array_equal(q.pop_many(8), [5, 6, 1])
    rec = np.dtype([("src", np.int32), ("val", np.float32)])
    with LockFreeInbox(8, rec) as r:
        assert r.try_push((1, 2.5))
        with pytest.raises(MessageError, match="int32 field exactly"):
            r.try_push((1.5, 2.0))
        with pytest.raises(MessageError, match="overflows"):
            r.try_push((3, 1e60))
        got = r.pop_many(8)
        assert got.shape == (1,) and got["src"][0] == 1 and got["val"][0] == 2.5
