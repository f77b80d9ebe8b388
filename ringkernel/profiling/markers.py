"""NVTX: ringkernel's one ``nvtx`` domain (``"ringkernel"``), its categories, and range and mark calls.

Ranges use NVTX *start/end* ranges (``domain.start_range`` / ``domain.end_range``), not
push/pop: push/pop ranges form one stack per OS thread, which asyncio tasks interleaving on
one thread would corrupt. Without a tool attached (Nsight Systems, ``nsys``) ``nvtx`` hands
out a do-nothing domain, so these calls cost little.
"""

from __future__ import annotations

import threading
from typing import Any

from .categories import ProfileCategory

__all__ = ["domain", "start", "end", "mark", "reset", "DOMAIN_NAME"]

DOMAIN_NAME = "ringkernel"

#: The ``nvtx`` domain in use (``None`` until first needed). Tests replace it with a recorder.
_domain: Any = None
_lock = threading.Lock()
_categories: dict[str, Any] = {}
#: Event attributes per (message, category): built once, reused by every range of that name.
_attributes: dict[tuple[str, str], Any] = {}
_MAX_CACHED = 4096


def domain() -> Any:
    """``nvtx.get_domain("ringkernel")`` (a no-op domain when no tool is attached)."""
    global _domain
    d = _domain
    if d is None:
        with _lock:
            if _domain is None:
                import nvtx

                _domain = nvtx.get_domain(DOMAIN_NAME)
            d = _domain
    return d


def _category_id(d: Any, category: ProfileCategory) -> Any:
    cid = _categories.get(category.name)
    if cid is None:
        cid = _categories[category.name] = d.get_category_id(category.name)
    return cid


def _attrs(d: Any, message: str, category: ProfileCategory, payload: Any = None) -> Any:
    if payload is not None:
        return d.get_event_attributes(message=message, color=category.argb, category=_category_id(d, category),
                                      payload=payload)  # fmt: skip
    key = (message, category.name)
    a = _attributes.get(key)
    if a is None:
        a = d.get_event_attributes(message=message, color=category.argb, category=_category_id(d, category))
        if len(_attributes) < _MAX_CACHED:  # names made per call (f"step {i}") must not grow it forever
            _attributes[key] = a
    return a


def start(message: str, category: ProfileCategory, payload: Any = None) -> Any:
    """Start an NVTX range; returns its id for :func:`end`."""
    d = domain()
    return d.start_range(_attrs(d, message, category, payload))


def end(range_id: Any) -> None:
    domain().end_range(range_id)


def mark(message: str, category: ProfileCategory, payload: Any = None) -> None:
    d = domain()
    d.mark(_attrs(d, message, category, payload))


def reset() -> None:
    """Forget the domain and the cached categories and attributes (for tests)."""
    global _domain
    with _lock:
        _domain = None
        _categories.clear()
        _attributes.clear()
