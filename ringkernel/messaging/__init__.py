"""Lock-free messaging in device memory: ``LockFreeInbox``, ``PartitionedQueue`` and their device functions.

Importing this package imports numba (the device functions are defined at module level),
after choosing the GPU or numba's simulator (:func:`ringkernel.config.select_backend`).
See docs/messaging.md.
"""

from ..config import select_backend

select_backend()  # before the modules below import numba.cuda

from .device import (  # noqa: E402
    inbox_try_pop,
    inbox_try_pop_into,
    inbox_try_push,
    inbox_try_push_from,
    inbox_warp_pop_into,
    inbox_warp_push_from,
    partition_of,
    pq_pop_any_into,
    pq_push_from,
    pq_try_pop_into,
    pq_warp_pop_into,
    pq_warp_push_from,
)
from .inbox import LockFreeInbox  # noqa: E402
from .layout import MAX_MESSAGE_BYTES  # noqa: E402
from .partitioned import PartitionedQueue  # noqa: E402

__all__ = [
    "LockFreeInbox", "PartitionedQueue", "MAX_MESSAGE_BYTES",
    "inbox_try_push", "inbox_try_pop", "inbox_try_push_from", "inbox_try_pop_into",
    "inbox_warp_push_from", "inbox_warp_pop_into",
    "partition_of", "pq_push_from", "pq_try_pop_into", "pq_pop_any_into", "pq_warp_push_from", "pq_warp_pop_into",
]  # fmt: skip
