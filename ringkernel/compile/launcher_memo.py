"""Launch records (``ArgInfo``), the identity cache of arrays, and launch memo entries that die with their arrays."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

__all__ = ["ArgInfo", "IDENTITY_CACHE", "register_memo", "clear_memo"]


class ArgInfo(NamedTuple):
    """What one argument contributes to a launch (a NamedTuple: cheap to build per launch)."""

    type_key: Any  # hashable: picks the compiled signature
    size: int  # elements (0 for scalars)
    values: tuple  # values for the parameter slots (arrays); the scalar itself otherwise
    is_array: bool
    ref: Any = None  # weakref to the array (cached entries only)
    sync_stream: int | None = None  # producer stream to synchronise with (CAI 'stream')


_CACHE: dict[int, ArgInfo] = {}
#: id -> ArgInfo of the live identity-cached arrays (an entry leaves when its array dies).
IDENTITY_CACHE = _CACHE
# Launch memos keyed by the ids of numba arrays (see GpuKernel): id -> [(memo, key), ...].
# When an array dies its weakref callback drops every memo entry naming it, before CPython
# can hand its id to a new object, so a memo hit by id always means the same live arrays.
_DEPENDENTS: dict[int, dict[tuple[int, tuple], tuple[dict, tuple[int, ...]]]] = {}

# Ids of the arrays that took part in a launch (see launcher.first_launch); an identity-cached array's
# id leaves with the array.
_SEEN: set[int] = set()


def _array_died(k: int, _ref: Any = None) -> None:
    """Forget array ``k`` and the memo entries that use it (also a weakref callback); the
    other arrays of those entries forget them too, so nothing accumulates."""
    _CACHE.pop(k, None)
    _SEEN.discard(k)
    for (mid, key), (memo, others) in _DEPENDENTS.pop(k, {}).items():
        memo.pop(key, None)
        for o in others:
            if o != k:
                deps = _DEPENDENTS.get(o)
                if deps is not None:
                    deps.pop((mid, key), None)


def clear_memo(memo: dict) -> None:
    """Empty a memo (its size limit, a hook, close()) and forget its entries' registrations:
    a memo's keys are the ids of the arrays registered for them."""
    mid = id(memo)
    for key in list(memo):
        for i in key:
            deps = _DEPENDENTS.get(i)
            if deps is not None:
                deps.pop((mid, key), None)
                if not deps:
                    del _DEPENDENTS[i]
    memo.clear()


def register_memo(memo: dict, key: tuple, args: Sequence[Any]) -> None:
    """Record that ``memo[key]`` must go when any of ``args`` (cached numba arrays) dies.
    Registering the same entry again (a memo cleared at its size limit and refilled) does
    not add to what is kept."""
    ids = tuple(id(a) for a in args)
    for i in ids:
        _DEPENDENTS.setdefault(i, {})[(id(memo), key)] = (memo, ids)
