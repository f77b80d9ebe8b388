"""The one launch seam: every launch of a ``GpuKernel`` is reported to the registered hooks.

::

    def log(event: LaunchEvent) -> None:
        print(event.kernel_name, event.grid, event.block, event.stream)

    handle = add_launch_hook(log)
    ...
    remove_launch_hook(handle)

Hooks run on the launching thread, right after the launch was queued (not when the GPU runs
it: ``timestamp_ns`` is the host's ``time.perf_counter_ns()``). A hook that raises does not
break the launch: the error is logged once per hook and the hook stays registered.

With no hook registered the seam costs nothing: the memoised fast paths have no check for
hooks at all. Registering the first hook (and removing the last) clears every kernel's launch
memos and puts its layout entries aside (the entries of the other state come back: a profiler
entered and left around one step of many does not rebuild them each time); entries made while
hooks are registered carry the report in their driver call (``constant_call``'s ``report`` and the layout
entries' ``report``), so memoised launches stay fast and are still reported. The checked and
fast-table paths report where they launch.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from typing import Any, Callable, NamedTuple

__all__ = ["LaunchEvent", "LaunchHook", "add_launch_hook", "remove_launch_hook", "launch_hooks"]

log = logging.getLogger(__name__)


class LaunchEvent(NamedTuple):
    """One launch, as a hook sees it (immutable; a NamedTuple: built on every launch while a
    hook is registered, it costs a third of a frozen dataclass)."""

    kernel_name: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int
    #: The stream object passed to the launch (``None``: the default stream).
    stream: Any
    #: ``"auto"`` (a configuration chosen by ringkernel) or ``"explicit"`` (``kernel[grid, block]``).
    kind: str
    #: Elements the launch covers (as the decision counted them).
    elements: int
    timestamp_ns: int


LaunchHook = Callable[[LaunchEvent], None]

#: Registered hooks (a list, mutated in place: modules test ``if HOOKS:`` on the hot path).
HOOKS: list[tuple[int, LaunchHook]] = []
_ids = itertools.count(1)
_lock = threading.Lock()
_failed: set[int] = set()
#: Every GpuKernel, so that registering a hook can clear their launch memos.
KERNELS: "weakref.WeakSet[Any]" = weakref.WeakSet()


def add_launch_hook(hook: LaunchHook) -> int:
    """Call ``hook(event)`` after every launch; returns a handle for :func:`remove_launch_hook`."""
    if not callable(hook):
        from ..errors import ConfigurationError

        raise ConfigurationError(f"a launch hook must be callable, got {hook!r}")
    with _lock:
        handle = next(_ids)
        first = not HOOKS
        HOOKS.append((handle, hook))
        if first:  # entries made from now on report (reporting ones read HOOKS when they launch)
            for k in list(KERNELS):
                k._forget_memos(True)
    return handle


def remove_launch_hook(handle: int) -> None:
    """Unregister a hook (unknown handles are ignored: removing twice is harmless)."""
    with _lock:
        had = bool(HOOKS)
        HOOKS[:] = [(h, f) for h, f in HOOKS if h != handle]
        _failed.discard(handle)
        if had and not HOOKS:  # the last one: entries that report launches give way to silent ones
            for k in list(KERNELS):
                k._forget_memos(False)
            forget = getattr(notify, "forget", None)
            if forget is not None:
                forget()  # the compiled notify's cached decision (and the stream it holds) goes


def launch_hooks() -> list[LaunchHook]:
    """The registered hooks, in registration order."""
    return [f for _, f in HOOKS]


def _hook_failed(handle: int, hook: Any, exc: BaseException) -> None:
    """A hook raised: logged once per hook, which stays registered (the launch goes on)."""
    if handle not in _failed:
        _failed.add(handle)
        log.error("launch hook %r raised (reported once; it stays registered)", hook, exc_info=exc)


def _py_notify(kernel_name: str, decision: Any, stream: Any, kind: str) -> None:
    """Report one launch to every hook (called by ``GpuKernel`` only when ``HOOKS`` is not empty)."""
    c = decision.config
    event = LaunchEvent(kernel_name, c.grid, c.block, c.shared_mem, stream, kind, decision.elements,
                        time.perf_counter_ns())  # fmt: skip
    for handle, hook in list(HOOKS):
        try:
            hook(event)
        except Exception as exc:  # noqa: BLE001 - a hook must not break the launch it observes
            _hook_failed(handle, hook, exc)


#: Report one launch to every hook: ``notify(kernel_name, decision, stream, kind)``. The Python
#: function above, or once the compiled module is loaded (:func:`use_native`) its ``Notifier``,
#: which does the same and records a profiler's launch in C (``Recorder``). Read at each call
#: (``_hooks.notify``): entries made before the switch keep the Python one, which calls the
#: same hooks.
notify: Callable[[str, Any, Any, str], None] = _py_notify


def use_native(mod: Any) -> None:
    """Report launches through the compiled module's ``Notifier`` (``native.HOOKS`` False: not)."""
    global notify
    from .. import native

    if native.HOOKS and not isinstance(notify, mod.Notifier):
        notify = mod.Notifier(HOOKS, LaunchEvent, _hook_failed)


def use_python() -> None:
    """Back to the pure-Python ``notify`` (tests compare both)."""
    global notify
    notify = _py_notify
