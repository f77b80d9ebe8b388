"""The current ``GpuContext``, on the lowest layer so that kernels can find it without
importing ``ringkernel.context`` (which sits above them).

``CURRENT`` holds the context entered with ``with ctx:`` or used by ``ctx.launch`` in this
thread or asyncio task (``None``: the process-wide defaults). ``active`` counts contexts
entered anywhere in the process: launch paths test it (one attribute read) before paying
for the ``ContextVar`` lookup.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

CURRENT: ContextVar[Any] = ContextVar("ringkernel_current_context", default=None)
active = 0


def current() -> Any:
    """The current context object, or ``None``."""
    return CURRENT.get() if active else None
