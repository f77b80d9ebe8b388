"""``LockFreeInbox``: a bounded MPMC queue in device memory, for kernels and (exclusively) the host.

Kernels push and pop with the device functions of :mod:`ringkernel.messaging.device`. The host
pushes and pops only while no kernel uses the queue ("exclusive host mode", docs/messaging.md):
it reads the header, copies the slots it touches in at most two contiguous ranges (the ring
may wrap) each way, and writes the header back; it checks the sequence numbers of those
slots and refuses (``RingKernelError``) if a kernel is still in the middle of an operation.
"""

from __future__ import annotations

import numbers
import threading
import weakref
from typing import Any, Iterator, TypeVar

import numpy as np

from .._layout import c_strides
from ..errors import ConfigurationError, MessageError, ResourceClosedError, RingKernelError
from .layout import AVAIL, FREE, HEAD, OVERFLOW, SEQ_DTYPE, TAIL, check_capacity, check_dtype, new_header

__all__ = ["LockFreeInbox"]


def _free_buffers(buffers: list[Any]) -> None:
    for b in buffers:
        b.close()
    buffers.clear()


class _DeviceStore:
    """The device arrays of one or more rings: ``header`` (rows, HEADER_WORDS), ``seqs`` (rows,
    capacity), ``slots`` (rows, capacity) of the message dtype; from a pool or from numba."""

    def __init__(self, rows: int, capacity: int, dtype: np.dtype, pool: Any) -> None:
        from numba import cuda

        header = np.stack([new_header(capacity, dtype.itemsize)] * rows)
        seqs = np.tile(np.arange(capacity, dtype=SEQ_DTYPE), (rows, 1))  # slot i: ready for position i
        slots = np.zeros((rows, capacity), dtype)
        self.buffers: list[Any] = []
        #: Host pushes and pops read the header, write slots and sequences, then write the header
        #: back: two host threads at once overwrote each other's header (messages whose push
        #: returned True were lost, and the queue refused every push after; an adversarial trial).
        self.host_lock = threading.Lock()
        if pool is None:
            self.header, self.seqs, self.slots = cuda.to_device(header), cuda.to_device(seqs), cuda.to_device(slots)
        else:
            # Each array over a pool DeviceArray of bytes that owns the block: the block returns
            # to the pool when the last array over it (the queue's, or a kernel argument from
            # device_args() the caller still holds) is dropped, so a kernel launched with old
            # device_args() after close() writes into memory still reserved, never into the
            # block's next owner (before the ninth session the blocks were freed at close).
            arrays = []
            for host in (header, seqs, slots):
                raw = pool.device_array(max(host.nbytes, 1), np.uint8)
                dev = pool.backend.numba_array(raw.ptr, host.shape, c_strides(host.shape, host.dtype.itemsize),
                                               host.dtype, raw)  # fmt: skip
                dev.copy_to_device(host)
                arrays.append(dev)
            self.header, self.seqs, self.slots = arrays


def _ranges(pos: int, count: int, capacity: int) -> Iterator[tuple[int, int, int]]:
    """(slot start, slot stop, offset into the batch) of ``count`` positions from ``pos``: one
    range, or two where the ring wraps."""
    start = pos % capacity
    first = min(count, capacity - start)
    if first:
        yield start, start + first, 0
    if count > first:
        yield 0, count - first, first


class _Ring:
    """Host operations on row ``row`` of a store (shared by LockFreeInbox and PartitionedQueue)."""

    def __init__(self, store: _DeviceStore, row: int, capacity: int, dtype: np.dtype, owner: str) -> None:
        self.lock = store.host_lock
        self.header = store.header[row]
        self.seqs = store.seqs[row]
        self.slots = store.slots[row]
        self.capacity, self.dtype, self.owner = capacity, dtype, owner

    def read_header(self, stream: Any = None) -> np.ndarray:
        h = self.header.copy_to_host(stream=stream)
        if stream is not None:
            stream.synchronize()
        return h

    def quiet_header(self, operation: str, stream: Any = None) -> np.ndarray:
        """The header, checked to be at rest: no claim or position in flight (else a RingKernelError)."""
        h = self.read_header(stream)
        used = int(h[HEAD] - h[TAIL])
        if int(h[AVAIL]) != used or int(h[FREE]) != self.capacity - used or not 0 <= used <= self.capacity:
            raise RingKernelError(
                f"{self.owner}.{operation}: the header is not at rest (head {int(h[HEAD])}, tail {int(h[TAIL])}, "
                f"avail {int(h[AVAIL])}, free {int(h[FREE])}): a kernel is using the queue, or its memory was "
                "overwritten",
                hint="host pushes and pops need the queue to themselves: synchronize the streams of the "
                "kernels that use it first (docs/messaging.md, 'Who may use a queue when')",
                details={"head": int(h[HEAD]), "tail": int(h[TAIL]), "avail": int(h[AVAIL]), "free": int(h[FREE])},
            )  # fmt: skip
        return h

    def _check_seqs(self, pos: int, count: int, offset: int, stream: Any, operation: str) -> None:
        for lo, hi, at in _ranges(pos, count, self.capacity):
            got = self.seqs[lo:hi].copy_to_host(stream=stream)
            if stream is not None:
                stream.synchronize()
            want = np.arange(pos + at, pos + at + (hi - lo), dtype=SEQ_DTYPE) + offset
            if not np.array_equal(got, want):
                bad = int(np.flatnonzero(got != want)[0])
                raise RingKernelError(
                    f"{self.owner}.{operation}: slot {lo + bad} has sequence {int(got[bad])}, expected "
                    f"{int(want[bad])}: a kernel is using the queue, or its memory was overwritten",
                    hint="host pushes and pops need the queue to themselves: synchronize the streams of the "
                    "kernels that use it first (docs/messaging.md, 'Who may use a queue when')",
                    details={"slot": lo + bad, "sequence": int(got[bad]), "expected": int(want[bad])},
                )

    def push_many(self, msgs: np.ndarray, stream: Any = None) -> int:
        _check_stream(stream, self.owner, "push")
        with self.lock:
            return self._push_many(msgs, stream)

    def pop_many(self, max_count: int, stream: Any = None) -> np.ndarray:
        _check_stream(stream, self.owner, "pop")
        with self.lock:
            return self._pop_many(max_count, stream)

    def _push_many(self, msgs: np.ndarray, stream: Any = None) -> int:
        h = self.quiet_header("push", stream)
        head, tail = int(h[HEAD]), int(h[TAIL])
        k = min(len(msgs), self.capacity - (head - tail))
        if k:
            self._check_seqs(head, k, 0, stream, "push")
            for lo, hi, at in _ranges(head, k, self.capacity):
                self.slots[lo:hi].copy_to_device(np.ascontiguousarray(msgs[at : at + hi - lo]), stream=stream)
                self.seqs[lo:hi].copy_to_device(np.arange(head + at + 1, head + at + 1 + hi - lo, dtype=SEQ_DTYPE),
                                                stream=stream)  # fmt: skip
        h[HEAD] = head + k
        h[AVAIL] += k
        h[FREE] -= k
        h[OVERFLOW] += len(msgs) - k
        self.header.copy_to_device(h, stream=stream)
        if stream is not None:
            stream.synchronize()  # the host arrays above must outlive the copies
        return k

    def _pop_many(self, max_count: int, stream: Any = None) -> np.ndarray:
        h = self.quiet_header("pop", stream)
        head, tail = int(h[HEAD]), int(h[TAIL])
        k = min(max_count, head - tail)
        out = np.empty(k, self.dtype)
        if k:
            self._check_seqs(tail, k, 1, stream, "pop")
            for lo, hi, at in _ranges(tail, k, self.capacity):
                self.slots[lo:hi].copy_to_host(out[at : at + hi - lo], stream=stream)
                self.seqs[lo:hi].copy_to_device(
                    np.arange(tail + at + self.capacity, tail + at + self.capacity + hi - lo, dtype=SEQ_DTYPE),
                    stream=stream,
                )
            h[TAIL] = tail + k
            h[AVAIL] -= k
            h[FREE] += k
            self.header.copy_to_device(h, stream=stream)
        if stream is not None:
            stream.synchronize()
        return out


def _check_stream(stream: Any, owner: str, operation: str) -> None:
    if stream is not None and not callable(getattr(stream, "synchronize", None)):
        raise ConfigurationError(
            f"{owner}.{operation}: stream must be a CUDA stream (numba's cuda.stream(), a StreamManager's "
            f"stream) or None, got {stream!r}",
            hint="pass stream=None for the default stream",
        )


def as_messages(msgs: Any, dtype: np.dtype, owner: str, operation: str, *, single: bool) -> np.ndarray:
    """``msgs`` as a 1-D contiguous array of ``dtype``, or a MessageError saying what to pass."""
    if msgs is None:
        raise MessageError(
            f"{owner}.{operation}: the message is None", hint=f"pass a NumPy record or array of dtype {dtype}"
        )
    if isinstance(msgs, np.generic) and msgs.dtype == dtype:  # a record, or a NumPy scalar of the dtype
        return np.array([msgs], dtype)
    if isinstance(msgs, tuple) and single:
        want = len(dtype.names) if dtype.names else 1
        if len(msgs) != want:
            raise MessageError(
                f"{owner}.{operation}: the tuple {msgs!r} has {len(msgs)} values; dtype {dtype} takes {want}",
                hint="give one value per field, in order" if dtype.names else "pass (value,) or a NumPy scalar",
            )
        if dtype.names is None and (msgs[0] is None or isinstance(msgs[0], (str, bytes, tuple, list, dict))
                                    or np.ndim(msgs[0]) != 0):  # fmt: skip
            raise MessageError(
                f"{owner}.{operation}: {msgs[0]!r} is not a number of dtype {dtype}",
                hint="pass (value,) with one number, or a NumPy scalar",
            )
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # (what the conversion did is checked below)
                out = np.array([msgs], dtype)
        except (TypeError, ValueError, OverflowError) as exc:
            raise MessageError(
                f"{owner}.{operation}: the tuple {msgs!r} does not fit dtype {dtype} ({exc})",
                hint="give one value per field, in order",
            ) from None
        _check_values_kept(out.reshape(-1)[:1], msgs, dtype, owner, operation)
        return out.reshape(-1)[:1] if dtype.names is None else out
    if not isinstance(msgs, np.ndarray):
        raise MessageError(
            f"{owner}.{operation}: expected a NumPy array of dtype {dtype}, got {type(msgs).__name__}",
            hint="build messages with np.zeros(n, dtype) (or a record: np.zeros((), dtype)[()]); "
            "device arrays: copy_to_host() first",
        )
    if msgs.dtype != dtype:
        raise MessageError(
            f"{owner}.{operation}: messages of dtype {msgs.dtype}, but this queue holds {dtype}",
            hint="convert with arr.astype(queue.dtype) if the fields match, or make a queue of that dtype",
            details={"got": str(msgs.dtype), "expected": str(dtype)},
        )
    if single and msgs.size != 1:
        raise MessageError(
            f"{owner}.{operation}: one message expected, got an array of shape {msgs.shape}",
            hint="use push_many for several messages",
        )
    if msgs.ndim > 1 or (not single and msgs.ndim != 1):
        raise MessageError(
            f"{owner}.{operation}: a 1-D array of messages expected, got shape {msgs.shape}", hint="pass arr.ravel()"
        )
    return np.ascontiguousarray(msgs.reshape(-1))


def _check_values_kept(out: np.ndarray, msgs: tuple[Any, ...], dtype: np.dtype, owner: str, operation: str) -> None:
    """Refuse a tuple whose values the dtype would change: a fraction or an out-of-range number
    in an integer field (``(5.9,)`` into int32 stored 5, from an adversarial trial), also inside
    a sub-array field (``(1, (2.7, 3))`` stored b = [2, 3]); a finite number that becomes inf in a
    float or complex field. A float's rounding is what a float field does."""
    import cmath

    names, kinds = dtype.names, dtype.fields
    fields = [(out[n][0], kinds[n][0], v) for n, v in zip(names, msgs)] if names and kinds else [(out[0], dtype, msgs[0])]
    for stored, fdt, given in fields:
        base = fdt.base
        if base.fields:
            continue  # (a nested record: NumPy's conversion took it field by field)
        try:
            g = np.broadcast_to(np.asarray(given, dtype=object), np.shape(stored)).ravel().tolist()
        except ValueError:
            continue  # (NumPy accepted a shape it can read: nothing to compare element by element)
        kept = np.asarray(stored).ravel().tolist()
        for gv, sv in zip(g, kept):
            if not isinstance(gv, numbers.Number):
                continue  # (what NumPy converted from anything else, it checked)
            if base.kind in "iub":  # (Decimal('5.9') and Fraction(11, 2) are numbers too: == says whether kept)
                exact = isinstance(gv, (bool, np.bool_)) or (not isinstance(gv, complex) and gv == sv)
                if not exact or (isinstance(gv, (float, np.floating)) and float(gv) != float(gv) // 1):
                    raise MessageError(f"{owner}.{operation}: {gv!r} does not fit a {base} field exactly",
                                       hint=f"give a value that {base} holds (an integer in its range)")  # fmt: skip
            elif base.kind in "fc" and cmath.isinf(complex(sv)) and not cmath.isinf(complex(gv)):  # type: ignore[call-overload]
                raise MessageError(f"{owner}.{operation}: {gv!r} overflows a {base} field",
                                   hint=f"give a value within {base}'s range")  # fmt: skip


def check_count(value: Any, owner: str, operation: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigurationError(
            f"{owner}.{operation}: a count must be a non-negative int, got {value!r}", hint="pass e.g. 1024"
        )
    return int(value)


class _DeviceQueue:
    """What both queues share: their device memory, released at :meth:`close` (or when the queue
    is collected), and with-blocks that close it."""

    _store: _DeviceStore | None

    def _own(self, store: _DeviceStore) -> None:
        self._store = store
        self._finalizer = weakref.finalize(self, _free_buffers, store.buffers)

    @property
    def closed(self) -> bool:
        return self._store is None

    def _closed_error(self, operation: str) -> ResourceClosedError:
        name = type(self).__name__
        return ResourceClosedError(name, operation=operation, hint=f"create a new {name}")

    def _drop(self) -> None:
        """Forget what refers to the released memory (the rings)."""

    def close(self) -> None:
        """Release the device memory (idempotent); the queue cannot be used afterwards. A pooled
        queue's blocks return to the pool once no array over them is left (``device_args()``
        the caller still holds keep theirs until dropped)."""
        self._store = None
        self._drop()
        self._finalizer()

    def __enter__(self: "_Q") -> "_Q":
        if self.closed:
            raise self._closed_error("__enter__")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_Q = TypeVar("_Q", bound=_DeviceQueue)


class LockFreeInbox(_DeviceQueue):
    """A bounded multi-producer multi-consumer queue of ``capacity`` messages of ``dtype`` in device memory.

    Parameters
    ----------
    capacity:
        Slots, a power of two (2 .. 2**30).
    dtype:
        The message dtype: numbers or a structured dtype of numbers, 1 to 256 bytes.
    pool:
        A :class:`~ringkernel.GpuMemoryPool` to allocate from; numba's allocator if ``None``.

    Kernels use it through ``inbox.device_args()`` (``header, seqs, slots``) and the device
    functions ``inbox_try_push``/``inbox_try_pop`` (:mod:`ringkernel.messaging.device`). The host
    methods require that no kernel uses the queue meanwhile (docs/messaging.md).
    """

    def __init__(self, capacity: int, dtype: Any, pool: Any = None) -> None:
        self._capacity = check_capacity(capacity)
        self._dtype = check_dtype(dtype)
        store = _DeviceStore(1, self._capacity, self._dtype, pool)
        self._ring: _Ring | None = _Ring(store, 0, self._capacity, self._dtype, "LockFreeInbox")
        self._own(store)

    # -- properties ---------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def _live(self, operation: str) -> _Ring:
        if self._ring is None:
            raise self._closed_error(operation)
        return self._ring

    @property
    def header(self) -> Any:
        """The header (int64 device array; word indices in :mod:`ringkernel.messaging.layout`)."""
        return self._live("header").header

    @property
    def seqs(self) -> Any:
        """The per-slot sequence numbers (int64 device array of ``capacity``)."""
        return self._live("seqs").seqs

    @property
    def slots(self) -> Any:
        """The message slots (device array of ``capacity`` messages of ``dtype``)."""
        return self._live("slots").slots

    def device_args(self) -> tuple[Any, Any, Any]:
        """``(header, seqs, slots)``: pass them to a kernel that calls the device functions."""
        r = self._live("device_args")
        return r.header, r.seqs, r.slots

    # -- host operations (exclusive: no kernel may use the queue meanwhile) --------------
    def try_push(self, msg: Any, *, stream: Any = None) -> bool:
        """Push one message (a record, a 1-element array or a tuple of field values); ``False``
        and ``overflow_count() + 1`` when full."""
        r = self._live("try_push")
        return r.push_many(as_messages(msg, self._dtype, "LockFreeInbox", "try_push", single=True), stream) == 1

    def push_many(self, msgs: np.ndarray, *, stream: Any = None) -> int:
        """Push a 1-D array of messages in order; returns how many fitted (the rest are counted as overflow)."""
        r = self._live("push_many")
        return r.push_many(as_messages(msgs, self._dtype, "LockFreeInbox", "push_many", single=False), stream)

    def try_pop(self, *, stream: Any = None) -> np.void | None:
        """The oldest message (a NumPy record), or ``None`` when empty."""
        out = self._live("try_pop").pop_many(1, stream)
        return out[0] if len(out) else None

    def pop_many(self, max_count: int, *, stream: Any = None) -> np.ndarray:
        """Up to ``max_count`` oldest messages, oldest first (an array of ``dtype``)."""
        r = self._live("pop_many")
        return r.pop_many(check_count(max_count, "LockFreeInbox", "pop_many"), stream)

    def __len__(self) -> int:
        h = self._live("len").read_header()
        return int(h[HEAD] - h[TAIL])

    def len(self) -> int:
        """Messages in the queue (the proposal's ``len()``; also ``len(inbox)``)."""
        return self.__len__()

    def is_empty(self) -> bool:
        return self.__len__() == 0

    def overflow_count(self) -> int:
        """Pushes refused because the queue was full, by the host and by kernels."""
        return int(self._live("overflow_count").read_header()[OVERFLOW])

    def _drop(self) -> None:
        self._ring = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"capacity={self._capacity}"
        return f"LockFreeInbox({state}, dtype={self._dtype})"

