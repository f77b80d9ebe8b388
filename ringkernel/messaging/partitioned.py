"""``PartitionedQueue``: several ``LockFreeInbox`` rings side by side, to spread contention.

Producers pick a partition by a hash of a hint (:func:`~ringkernel.messaging.layout.partition_of`);
consumers pop from their own partition and, on the device, steal from the others when it is
empty (``pq_pop_any_into``). Host operations are exclusive, as for ``LockFreeInbox``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigurationError
from .inbox import _DeviceQueue, _DeviceStore, _Ring, as_messages, check_count
from .layout import HEAD, OVERFLOW, TAIL, check_capacity, check_dtype, partition_of

__all__ = ["PartitionedQueue"]

MAX_PARTITIONS = 1024


class PartitionedQueue(_DeviceQueue):
    """``num_partitions`` bounded MPMC rings of ``capacity_per_partition`` messages of ``dtype``.

    Kernels get ``(headers, seqs, slots)`` from :meth:`device_args` (2-D: one row per partition)
    and use ``pq_push_from``, ``pq_try_pop_into``, ``pq_pop_any_into`` and the warp forms of
    :mod:`ringkernel.messaging.device`. Each partition is FIFO; the queue as a whole is not.
    """

    def __init__(self, num_partitions: int, capacity_per_partition: int, dtype: Any, pool: Any = None) -> None:
        if isinstance(num_partitions, bool) or not isinstance(num_partitions, (int, np.integer)) or not (
            1 <= num_partitions <= MAX_PARTITIONS
        ):
            raise ConfigurationError(
                f"num_partitions must be an int from 1 to {MAX_PARTITIONS}, got {num_partitions!r}",
                hint="4 to 64 partitions are typical (about one per SM group of producers)",
            )
        self._n = int(num_partitions)
        self._capacity = check_capacity(capacity_per_partition, what="capacity_per_partition")
        self._dtype = check_dtype(dtype)
        store = _DeviceStore(self._n, self._capacity, self._dtype, pool)
        self._rings: list[_Ring] | None = [
            _Ring(store, p, self._capacity, self._dtype, "PartitionedQueue") for p in range(self._n)
        ]
        self._own(store)

    @property
    def num_partitions(self) -> int:
        return self._n

    @property
    def capacity_per_partition(self) -> int:
        return self._capacity

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def _live(self, operation: str) -> tuple[_DeviceStore, list[_Ring]]:
        if self._rings is None or self._store is None:
            raise self._closed_error(operation)
        return self._store, self._rings

    def _partition(self, partition: Any, operation: str) -> _Ring:
        _, rings = self._live(operation)
        if isinstance(partition, bool) or not isinstance(partition, (int, np.integer)) or not (
            0 <= partition < self._n
        ):
            raise ConfigurationError(
                f"PartitionedQueue.{operation}: partition {partition!r} is not in 0 .. {self._n - 1}",
                hint="push by hint (push(hint, msg)); pop by partition index",
            )
        return rings[int(partition)]

    def partition_of(self, partition_hint: int) -> int:
        """The partition ``push(partition_hint, ...)`` uses (the device's ``partition_of`` agrees)."""
        return partition_of(partition_hint, self._n)

    def device_args(self) -> tuple[Any, Any, Any]:
        """``(headers, seqs, slots)``: 2-D device arrays, one row per partition."""
        store, _ = self._live("device_args")
        return store.header, store.seqs, store.slots

    def push(self, partition_hint: int, msg: Any, *, stream: Any = None) -> bool:
        """Push one message to the partition of ``partition_hint``; ``False`` when that partition is full."""
        self._live("push")  # (a closed queue says so before anything else is checked)
        if isinstance(partition_hint, bool) or not isinstance(partition_hint, (int, np.integer)):
            raise ConfigurationError(
                f"PartitionedQueue.push: partition_hint must be an int, got {partition_hint!r}",
                hint="use a stable integer key, e.g. the destination's id",
            )
        ring = self._partition(partition_of(partition_hint, self._n), "push")
        return ring.push_many(as_messages(msg, self._dtype, "PartitionedQueue", "push", single=True), stream) == 1

    def push_many(self, partition: int, msgs: np.ndarray, *, stream: Any = None) -> int:
        """Push an array of messages to one partition (by index); returns how many fitted."""
        ring = self._partition(partition, "push_many")
        return ring.push_many(as_messages(msgs, self._dtype, "PartitionedQueue", "push_many", single=False), stream)

    def pop(self, partition: int, *, stream: Any = None) -> np.void | None:
        """The oldest message of one partition, or ``None`` when it is empty."""
        out = self._partition(partition, "pop").pop_many(1, stream)
        return out[0] if len(out) else None

    def pop_many(self, partition: int, max_count: int, *, stream: Any = None) -> np.ndarray:
        """Up to ``max_count`` oldest messages of one partition."""
        ring = self._partition(partition, "pop_many")
        return ring.pop_many(check_count(max_count, "PartitionedQueue", "pop_many"), stream)

    def _headers(self, operation: str) -> np.ndarray:
        store, _ = self._live(operation)
        return np.asarray(store.header.copy_to_host())

    def lengths(self) -> list[int]:
        """Messages in each partition."""
        h = self._headers("lengths")
        return [int(x) for x in h[:, HEAD] - h[:, TAIL]]

    def total_messages(self) -> int:
        """Messages in all partitions together."""
        return sum(self.lengths())

    def is_empty(self) -> bool:
        return self.total_messages() == 0

    def overflow_count(self) -> int:
        """Refused pushes, all partitions together."""
        return int(self._headers("overflow_count")[:, OVERFLOW].sum())

    def _drop(self) -> None:
        self._rings = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._n} x {self._capacity}"
        return f"PartitionedQueue({state}, dtype={self._dtype})"
