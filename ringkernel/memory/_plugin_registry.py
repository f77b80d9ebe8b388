"""The process-wide state of numba's allocator plugin: its pool, the config for it, a lock.

Shared by ``plugin_state`` (``use_pool``, ``plugin_pool``; no numba import) and
``numba_plugin`` (what numba loads), in a module of its own so neither imports the other
at both ends (``use_pool`` needs the plugin class, the plugin needs this state).
"""

from __future__ import annotations

import threading

from .pool import GpuMemoryPool, PoolConfig

pool: GpuMemoryPool | None = None  # created by the plugin when numba initialises a context
config: PoolConfig | None = None  # set by use_pool()
lock = threading.Lock()
