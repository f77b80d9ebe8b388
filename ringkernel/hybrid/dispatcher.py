"""``HybridDispatcher``: which device runs a workload of a given size (design proposal, section 6).

::

    d = HybridDispatcher(HybridConfig(ProcessingMode.ADAPTIVE))
    if d.should_use_gpu(n, data_on_device=False):
        ...  # run on the GPU, time it, then
        d.record_gpu_execution(seconds, size=n)
    print(d.explain(n))

Modes: ``GPU_ONLY``, ``CPU_ONLY``, ``ProcessingMode.hybrid(gpu_threshold)`` (the GPU from that
size on) and ``ADAPTIVE``: per kernel and data location, a cost model per side
(:class:`~ringkernel.hybrid.model.CostModel`, fixed + per-element seconds fitted to measured
times) and the cheaper predicted side; while a side has fewer than two sizes measured it is
explored; afterwards the side not chosen is re-probed now and then (seeded, so runs repeat), less
often the slower it is predicted, so that a change (a busier GPU, a colder CPU) moves the
crossover. A re-probe is two calls of the same size: the
first (``warm-up``) pays for the switch (caches the other side's data left behind, worker
threads waking, pooled blocks of that size) and is not taught if the second follows at once;
the second is. A program that calls the same size repeatedly would see the second's time; one
whose next call is another size sees the first's, and then the first is taught.
"""

from __future__ import annotations

import math
import numbers
import os
import random
import threading
from dataclasses import dataclass, field
from threading import get_ident as _get_ident
from typing import Any, ClassVar

from ..errors import ConfigurationError
from .model import HISTORY_MIN, CostModel, Fit

__all__ = ["ProcessingMode", "HybridConfig", "HybridDispatcher", "HybridStats", "Decision", "Explanation"]

DEFAULT_KERNEL = "*"
_MODES = {"gpu_only", "cpu_only", "adaptive", "hybrid"}
_CLOSE = 1.5  # predicted times within this ratio are "close"
_CLOSE_PROBABILITY = 0.5  # the re-probe probability at a predicted tie
_LOG_CLOSE = math.log(_CLOSE)


@dataclass(frozen=True)
class ProcessingMode:
    """Where work runs. ``GPU_ONLY``, ``CPU_ONLY``, ``ADAPTIVE``, or ``ProcessingMode.hybrid(t)``.

    The proposal's ``Hybrid { gpu_threshold }`` is a variant with a value; in Python it is a
    constructor, :meth:`hybrid`, and the other three are constants.
    """

    kind: str
    gpu_threshold: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _MODES:
            raise ConfigurationError(f"unknown processing mode {self.kind!r}",
                                     hint="use ProcessingMode.GPU_ONLY, CPU_ONLY, ADAPTIVE or ProcessingMode.hybrid(n)")  # fmt: skip
        if self.kind == "hybrid":
            t = self.gpu_threshold
            if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
                raise ConfigurationError(f"gpu_threshold must be a non-negative int, got {t!r}",
                                         hint="e.g. ProcessingMode.hybrid(1 << 16)")  # fmt: skip
            object.__setattr__(self, "gpu_threshold", int(t))
        elif self.gpu_threshold is not None:
            raise ConfigurationError(f"only ProcessingMode.hybrid takes a threshold, not {self.kind!r}")

    GPU_ONLY: ClassVar["ProcessingMode"]
    CPU_ONLY: ClassVar["ProcessingMode"]
    ADAPTIVE: ClassVar["ProcessingMode"]

    @classmethod
    def hybrid(cls, gpu_threshold: int) -> "ProcessingMode":
        """The GPU for workloads of ``gpu_threshold`` elements or more, the CPU below."""
        return cls("hybrid", gpu_threshold)

    def __repr__(self) -> str:
        return f"ProcessingMode.hybrid({self.gpu_threshold})" if self.kind == "hybrid" else f"ProcessingMode.{self.kind.upper()}"


ProcessingMode.GPU_ONLY = ProcessingMode("gpu_only")
ProcessingMode.CPU_ONLY = ProcessingMode("cpu_only")
ProcessingMode.ADAPTIVE = ProcessingMode("adaptive")


@dataclass(frozen=True)
class HybridConfig:
    """Options of a :class:`HybridDispatcher`.

    mode:
        A :class:`ProcessingMode`.
    cpu_threads:
        Threads of the CPU path (``None``: numba's default, every core).
    gpu_available:
        ``None``: a GPU (or numba's simulator) is there. ``False`` keeps everything on the CPU
        and makes ``GPU_ONLY`` an error.
    learning_rate:
        How fast old measurements fade: a sample's weight is ``(1 - learning_rate) ** age``.
    reprobe_probability, reprobe_max_ratio:
        After learning, the side not chosen is run with about this probability per call,
        less the slower it is predicted (docs/hybrid.md), and 8x less again where it was
        measured at that very size over ``reprobe_max_ratio`` times slower.
    min_samples:
        Measurements per side (of at least two sizes) before the models decide.
    seed:
        Seeds the re-probing; the same seed and measurements give the same decisions.
    """

    mode: ProcessingMode = ProcessingMode.ADAPTIVE
    cpu_threads: int | None = None
    gpu_available: bool | None = None
    learning_rate: float = 0.1
    reprobe_probability: float = 1 / 32
    reprobe_max_ratio: float = 3.0
    min_samples: int = 3
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.mode, ProcessingMode) or self.mode.kind not in _MODES:
            raise ConfigurationError(f"mode must be a ProcessingMode, got {self.mode!r}",
                                     hint="e.g. ProcessingMode.ADAPTIVE or ProcessingMode.hybrid(65536)")  # fmt: skip
        if self.cpu_threads is not None and (isinstance(self.cpu_threads, bool) or not isinstance(self.cpu_threads, numbers.Integral)
                                             or not 1 <= self.cpu_threads <= (os.cpu_count() or 1) * 4):  # fmt: skip
            raise ConfigurationError(f"cpu_threads must be None or 1..{(os.cpu_count() or 1) * 4}, got {self.cpu_threads!r}")
        for name, lo, hi in (("learning_rate", 0.0, 1.0), ("reprobe_probability", 0.0, 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not lo <= float(v) < hi:
                raise ConfigurationError(f"{name} must be a number in [{lo}, {hi}), got {v!r}")
        if isinstance(self.reprobe_max_ratio, bool) or not isinstance(self.reprobe_max_ratio, numbers.Real) or not 1 <= self.reprobe_max_ratio < math.inf:
            raise ConfigurationError(f"reprobe_max_ratio must be >= 1, got {self.reprobe_max_ratio!r}")
        if isinstance(self.min_samples, bool) or not isinstance(self.min_samples, numbers.Integral) or self.min_samples < 2:
            raise ConfigurationError(f"min_samples must be an int >= 2, got {self.min_samples!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)):
            raise ConfigurationError(f"seed must be None or an int, got {self.seed!r}",
                                     hint="e.g. HybridConfig(seed=7): the same seed and times give the same decisions")  # fmt: skip
        if self.gpu_available is not None and not isinstance(self.gpu_available, bool):
            raise ConfigurationError(f"gpu_available must be None, True or False, got {self.gpu_available!r}")


@dataclass(frozen=True)
class HybridStats:
    """Counts and total times per side (a snapshot); ``probes``: calls made to learn or re-probe."""

    cpu_executions: int = 0
    gpu_executions: int = 0
    cpu_time_ns: int = 0
    gpu_time_ns: int = 0
    probes: int = 0
    per_kernel: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What :meth:`HybridDispatcher.decide` chose and why (``reason``: ``mode``, ``threshold``,
    ``no GPU``, ``explore``, ``model``, ``warm-up`` (a re-probe's first call), ``reprobe``,
    ``unmeasured size``; an ``@elementwise`` call's ``last_decision`` may also say ``fallback``
    (the chosen side cannot run the types) or ``simulator``)."""

    use_gpu: bool
    reason: str


_DECISIONS = {(g, r): Decision(g, r) for g in (False, True)
              for r in ("mode", "no GPU", "threshold", "explore", "model", "warm-up", "reprobe", "unmeasured size")}  # fmt: skip


#: The decisions a settled size returns: equal to the "model" ones, but other objects, so that a
#: caller can tell them apart by identity (``@elementwise`` teaches the models less often there).
SETTLED_DECISIONS = (Decision(False, "model"), Decision(True, "model"))


@dataclass(frozen=True)
class Explanation:
    """:meth:`HybridDispatcher.explain`'s answer; ``str()`` reads as a sentence."""

    size: int
    kernel: str
    data_on_device: bool
    mode: ProcessingMode
    use_gpu: bool
    reason: str
    cpu: Fit | None
    gpu: Fit | None
    cpu_samples: int
    gpu_samples: int
    crossover: float | None
    #: (median seconds, runs) of each side's recent runs of exactly this size, once it ran it 3 times
    cpu_measured: tuple[float, int] | None = None
    gpu_measured: tuple[float, int] | None = None

    def __str__(self) -> str:
        where = "device" if self.data_on_device else "host"
        side = "GPU" if self.use_gpu else "CPU"
        text = f"{self.kernel!r}, {self.size} elements, data on the {where}: {side} ({self.reason})"
        for name, fit, count, here in (("CPU", self.cpu, self.cpu_samples, self.cpu_measured),
                                       ("GPU", self.gpu, self.gpu_samples, self.gpu_measured)):  # fmt: skip
            if fit is None:
                text += f"; {name}: {count} samples, not fitted yet"
            else:
                text += (f"; {name}: predicted {fit.predict(self.size) * 1e6:.1f} us = {fit.fixed_s * 1e6:.2f} us + "
                         f"{fit.per_element_s * 1e9:.4f} ns x n ({fit.samples} samples, {fit.sizes} sizes, "
                         f"median error {100 * fit.relative_error:.0f}%)")  # fmt: skip
            if here is not None:
                text += f", measured at this size {here[0] * 1e6:.1f} us (median of its last {here[1]}; this decides)"
        if self.crossover is not None:
            text += f"; crossover {self.crossover:.3g} elements"
        return text


#: calls a model decision is reused for at one size before it is made again (the call that makes
#: it again, and teaches, cost 10-16 us more than a held call on the H200 host: 31, not 15, halves them)
_SETTLED_CALLS = 31
_SETTLED_SIZES = 256  # sizes whose decision is kept (all forgotten when more come)


class _Key:
    __slots__ = ("cpu", "gpu", "calls", "explore_next_gpu", "ready", "warm_up", "last_n", "settled", "confirm")

    def __init__(self, learning_rate: float) -> None:
        self.cpu = CostModel(learning_rate)
        self.gpu = CostModel(learning_rate)
        self.calls = 0
        self.explore_next_gpu = True
        self.ready = False  # both sides measured enough (stays so)
        #: a re-probe's first call: [on the GPU, size, its time once recorded, the deciding thread,
        #: the call count then] until that thread's next decision (other threads' calls pass it by)
        self.warm_up: list[Any] | None = None
        self.last_n = -1  # the previous call's size
        #: size -> [decision, its re-probe probability, calls left, a probe due after them, dead,
        #: this key]: a model decision reused (the predictions, the ratio and the re-probe draw
        #: made once for up to 32 calls); dropped when a probe moves a model
        self.settled: dict[int, list[Any]] = {}
        #: [on the GPU, size, probes left]: a re-probe beat the chosen side's estimate there, so
        #: the next calls of that size probe again (up to HISTORY_MIN in a row) until the probed
        #: side's recent runs there decide, or a probe loses
        self.confirm: list[Any] | None = None


def _explore(k: _Key, n: int, need: int) -> bool | None:
    """The side to explore for a call of ``n`` elements (True: the GPU), ``None`` once both sides
    have ``need`` measurements. A side that has not seen this size first (so that a caller
    alternating two sizes cannot leave each side with one), then the side short of
    measurements, then turns. A side measured at one size only is still usable: its model is
    that size's time, and any other size far from it is probed (``unmeasured size``)."""
    cpu_ready, gpu_ready = k.cpu.count >= need, k.gpu.count >= need
    if cpu_ready and gpu_ready:
        return None
    new_cpu, new_gpu = n not in k.cpu.seen, n not in k.gpu.seen
    if new_cpu != new_gpu:
        return new_gpu
    if cpu_ready != gpu_ready:
        return not gpu_ready
    return k.explore_next_gpu


def _geometric(rng: random.Random, p: float) -> int:
    """The number of Bernoulli(``p``) trials up to and including the first success (>= 1)."""
    if p >= 1:
        return 1
    return 1 + int(math.log1p(-rng.random()) / math.log1p(-p))


def crossover(cpu: Fit | None, gpu: Fit | None) -> float | None:
    """The size from which the GPU's predicted time is lower (0: always; ``inf``: never)."""
    if cpu is None or gpu is None:
        return None
    da, db = gpu.fixed_s - cpu.fixed_s, cpu.per_element_s - gpu.per_element_s
    if db <= 0:  # the GPU's per-element cost is not lower: it wins nowhere from some size on
        return 0.0 if db == 0 and da <= 0 else float("inf")
    return max(da / db, 0.0)


class HybridDispatcher:
    """Routes workloads between the CPU and the GPU; thread-safe (one lock around its state)."""

    def __init__(self, config: HybridConfig | None = None) -> None:
        self.config = config if config is not None else HybridConfig()
        if not isinstance(self.config, HybridConfig):
            raise ConfigurationError(f"config must be a HybridConfig, got {config!r}")
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, bool], _Key] = {}
        self._rng = random.Random(self.config.seed)
        self._cpu = [0, 0]  # executions, ns
        self._gpu = [0, 0]
        self._probes = 0
        self._per_kernel: dict[str, dict[str, int]] = {}
        # None: kernels can run (on a GPU, or on numba's simulator, which the models will find slow)
        self.gpu_available = self.config.gpu_available is not False
        if self.config.mode == ProcessingMode.GPU_ONLY and not self.gpu_available:
            raise ConfigurationError("ProcessingMode.GPU_ONLY with gpu_available=False",
                                     hint="use CPU_ONLY, or drop gpu_available=False")  # fmt: skip

    # -- decisions ----------------------------------------------------------------------------
    def _key(self, kernel: str, on_device: bool) -> _Key:
        k = self._keys.get((kernel, on_device))
        if k is None:
            k = self._keys[(kernel, on_device)] = _Key(self.config.learning_rate)
        return k

    def decide(self, workload_size: int, *, kernel: str = DEFAULT_KERNEL, data_on_device: bool = False) -> Decision:
        """Where a workload of ``workload_size`` elements runs, and why."""
        n = _check_size(workload_size)
        mode = self.config.mode
        kind = mode.kind  # a string compare: cheaper than the dataclass's __eq__ on every call
        if kind == "cpu_only" or not self.gpu_available:
            return _DECISIONS[False, "mode" if kind == "cpu_only" else "no GPU"]
        if kind == "gpu_only":
            return _DECISIONS[True, "mode"]
        if kind == "hybrid":
            assert mode.gpu_threshold is not None
            return _DECISIONS[n >= mode.gpu_threshold, "threshold"]
        with self._lock:
            k = self._keys.get((kernel, bool(data_on_device))) or self._key(kernel, bool(data_on_device))
            k.calls += 1
            repeat = k.last_n == n  # a program calling one size again: a re-probe will be two calls
            k.last_n = n
            w = k.warm_up
            if w is None:
                s = k.settled.get(n)
                if s is not None:  # decided at this size within the last 32 calls
                    if s[2] > 0:
                        s[2] -= 1
                        return s[0]  # type: ignore[no-any-return]
                    s[2], s[4] = 0, True  # (dead: a kernel's unlocked decrement cannot revive it)
                    del k.settled[n]
                    if s[3]:  # its drawn re-probe is due (thinned: kept with probability 1/2 after a same-size call)
                        if not repeat or self._rng.random() < 0.5:
                            return self._warm_up(k, not s[0].use_gpu, n)
                        return self._settle(k, n, s[0].use_gpu, s[1], repeat, now=False)
            if w is not None and w[3] != _get_ident() and k.calls - w[4] > 64:
                k.warm_up = w = None  # its thread never came back (ended, or moved on): others may probe
            if w is not None and w[3] == _get_ident():
                k.warm_up = None
                if w[1] == n:  # the re-probe's second call: the one taught
                    self._probes += 1
                    return _DECISIONS[w[0], "reprobe"]
                if w[2] is not None:  # the program moved to another size: the switch is what it pays
                    (k.gpu if w[0] else k.cpu).add(w[1], w[2], refit=True)
                    self._unsettle(k)
                    self._after_probe(k, w[0], w[1], w[2])
            c = k.confirm
            if c is not None and c[1] == n and c[2] > 0 and k.ready and k.warm_up is None:
                # (while another thread's re-probe is under way, the streak waits: a warm-up of
                # this thread would take that one's place)
                t_cpu, t_gpu = k.cpu.predict(n), k.gpu.predict(n)
                if t_cpu is not None and t_gpu is not None and (t_gpu < t_cpu) == c[0]:
                    k.confirm = None  # the probed side is the cheaper one now: the models decide
                else:
                    c[2] -= 1
                    if repeat:  # the previous call was this size's probe, on that side: it is warm
                        self._probes += 1
                        return _DECISIONS[c[0], "reprobe"]
                    return self._warm_up(k, c[0], n)  # (counts its probe)
            need = self.config.min_samples
            if not k.ready:
                use_gpu = _explore(k, n, need)
                if use_gpu is not None:
                    k.explore_next_gpu = not use_gpu
                    self._probes += 1
                    return _DECISIONS[use_gpu, "explore"]
                k.ready = True
            # each side's estimate: its recent median at this very size where it ran it 3+ times
            # (a program's repeated sizes; exact where the line is not), else its line
            t_cpu, t_gpu = k.cpu.predict(n), k.gpu.predict(n)
            assert t_cpu is not None and t_gpu is not None  # both sides are fitted once ready
            use_gpu = t_gpu < t_cpu
            other_model = k.cpu if use_gpu else k.gpu
            if not other_model.lo_n <= n <= other_model.hi_n:
                # the other side was never measured near this size: its prediction is a guess
                # (a side explored only on small sizes has a per-element cost drowned in its
                # fixed cost), so measure it once here rather than trust the guess forever
                self._probes += 1
                return _DECISIONS[not use_gpu, "unmeasured size"]
            best, other = (t_gpu, t_cpu) if use_gpu else (t_cpu, t_gpu)
            # Re-probe the other side now and then where it is predicted within reprobe_max_ratio,
            # and often where the two are close: there a wrong choice costs little and the
            # crossover is decided (up to half the calls at a predicted tie).
            p = self.config.reprobe_probability
            if p <= 0:
                return self._settle(k, n, use_gpu, 0.0, repeat)
            if k.warm_up is not None:  # another thread's re-probe is under way: no probe, nothing kept
                return _DECISIONS[use_gpu, "model"]
            few = other_model.count
            p = max(p, 1.0 / few)  # a side measured few times is probed more, anywhere: its fit may rest on an outlier
            ratio = other / (best if best > 1e-12 else 1e-12)
            if ratio < _CLOSE:
                # near a tie: probe often while the other side has few runs of this size, less
                # as they accumulate (its median there then decides, and a probe only follows drift)
                local = other_model.at.get(n)
                p += (_CLOSE_PROBABILITY - p) * (1.0 - math.log(ratio) / _LOG_CLOSE) / (1 + (local[1] if local else 0))
            else:
                # a probe of a side predicted 2x slower costs a whole call more: probe less often
                # the more it costs (the expected cost of probing stays p / 2 of a call)
                p *= 0.5 / (ratio - 1.0)
                if ratio > self.config.reprobe_max_ratio and few >= 2 * need and n in other_model.at:
                    # measured at this very size that much slower: 8x more rarely still, but not
                    # never (a pause while it was measured would otherwise decide for good);
                    # a side whose estimate here is its line's is probed at the rate above
                    p *= 0.125
            # (where sizes repeat, a re-probe is two calls: half as many keep its cost; where they
            # change, its one call is taught, and probes keep their rate)
            if ratio >= _CLOSE:  # (near a tie the probability changes with each run of this size)
                return self._settle(k, n, use_gpu, p, repeat)
            if k.warm_up is None and self._rng.random() < (0.5 * p if repeat else p):
                return self._warm_up(k, not use_gpu, n)
            return _DECISIONS[use_gpu, "model"]

    def _settle(self, k: _Key, n: int, use_gpu: bool, p: float, repeat: bool, now: bool = True) -> Decision:
        """This call's decision at size ``n``, kept for the next calls of that size: a program
        calling one size many times pays the predictions once every 32 calls (locked).

        Re-probing with probability ``p`` a call (halved where the previous call had the same
        size) is drawn once for the run, as the number of calls until the next candidate probe
        (geometric in ``p``: the same distribution as a draw every call), each candidate kept
        with probability 1/2 where its call follows one of the same size (thinning: the halved
        rate), so that a kept decision needs no draw: the entry serves the calls before the
        candidate (at most 31; where it is further, the call after them decides afresh and
        draws again, which memorylessness allows), and the candidate's call is the dispatcher's.
        ``now=False``: this call may not probe (its candidate was just thinned away)."""
        if len(k.settled) >= _SETTLED_SIZES and n not in k.settled:
            self._unsettle(k)
        old = k.settled.get(n)
        if old is not None:
            old[2], old[4] = 0, True  # (a lease of the previous entry ends)
        served, due = _SETTLED_CALLS, False  # the calls the entry serves; a candidate probe after them
        if p > 0:
            gap = (0 if now else 1) + _geometric(self._rng, p)  # the candidate's call, this one being 1
            if gap == 1:
                if not repeat or self._rng.random() < 0.5:
                    return self._warm_up(k, not use_gpu, n)
                gap = 1 + _geometric(self._rng, p)  # thinned away: the next candidate after this call
            if gap <= _SETTLED_CALLS + 1:
                served, due = gap - 2, True  # the calls between this one and the candidate
        d = SETTLED_DECISIONS[use_gpu]
        k.settled[n] = [d, p, served, due, False, k]
        return d

    @staticmethod
    def _unsettle(k: _Key) -> None:
        """Decide every size afresh (a probe moved a model): the entries' remaining calls are
        zeroed too, since a caller may hold one (:meth:`lease`) (locked)."""
        for entry in k.settled.values():
            entry[2], entry[4] = 0, True  # (dead: a lease's unlocked decrement cannot revive it)
        k.settled.clear()

    def lease(self, workload_size: int, *, kernel: str = DEFAULT_KERNEL, data_on_device: bool = False) -> list[Any] | None:
        """The kept entry behind a decision of :data:`SETTLED_DECISIONS` at this size: a list
        ``[decision, probability, calls left, probe due, dead, key]`` that the caller may use
        instead of calling :meth:`decide` while ``entry[2] > 0`` and not ``entry[4]``,
        decrementing ``entry[2]`` (the count the dispatcher uses; ``dead`` once it decides
        afresh: the next call after the count is the dispatcher's, which probes if one was
        drawn) and setting ``entry[5].last_n`` to the size (the previous call's size, which the
        next decision reads). Calls served so do not count towards a warm-up's 64-decision
        timeout. ``None`` where there is none."""
        with self._lock:
            k = self._keys.get((kernel, bool(data_on_device)))
            return None if k is None else k.settled.get(workload_size)

    @staticmethod
    def _after_probe(k: _Key, gpu: bool, n: int, seconds: float) -> None:
        """A probe of ``gpu``'s side at ``n`` was taught (locked). Where it ran faster than the other
        side's estimate there, one run is not evidence enough to switch (a side's estimate at a
        size is the median of its recent runs) but it may be the sign of a change (the host's
        speed steps, another process left the GPU): the next calls of that size probe the same
        side again, up to HISTORY_MIN runs in a row, so that its recent runs there are fresh and
        decide; a probe that loses ends the streak. Where probes lose, as they do far from a
        crossover, this adds nothing."""
        if not k.ready:
            return
        incumbent = (k.cpu if gpu else k.gpu).predict(n)
        c = k.confirm
        if c is not None and c[0] == gpu and c[1] == n:
            if c[2] <= 0 or incumbent is None or seconds >= incumbent:
                k.confirm = None  # the streak's last probe, or one that lost: the estimates decide
            return
        if incumbent is not None and seconds < incumbent:
            k.confirm = [gpu, n, HISTORY_MIN - 1]

    def _warm_up(self, k: _Key, use_gpu: bool, n: int) -> Decision:
        """A re-probe's first call, on ``use_gpu``'s side (locked)."""
        self._probes += 1
        k.warm_up = [use_gpu, n, None, _get_ident(), k.calls]
        return _DECISIONS[use_gpu, "warm-up"]

    def should_use_gpu(self, workload_size: int, *, kernel: str = DEFAULT_KERNEL, data_on_device: bool = False) -> bool:
        """True when the GPU should run a workload of ``workload_size`` elements."""
        return self.decide(workload_size, kernel=kernel, data_on_device=data_on_device).use_gpu

    # -- measurements -------------------------------------------------------------------------
    def _record(self, gpu: bool, seconds: float, size: int | None, kernel: str, on_device: bool, probe: bool) -> None:
        if type(seconds) is not float or not 0 <= seconds < 1e9:  # (a float: the exact check only)
            if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not 0 <= seconds < 1e9:
                raise ConfigurationError(f"a duration must be a number of seconds in [0, 1e9), got {seconds!r}")
        ns = int(seconds * 1e9)
        if type(kernel) is not str:  # (checked before anything is counted: a refused call counts nothing)
            raise ConfigurationError(f"kernel must be a kernel's name (a str), got {kernel!r}")
        n = _check_size(size) if size is not None else 0
        with self._lock:
            side = self._gpu if gpu else self._cpu
            side[0] += 1
            side[1] += ns
            per = self._per_kernel.setdefault(kernel, {"cpu": 0, "gpu": 0})
            per["gpu" if gpu else "cpu"] += 1
            if size is not None:
                k = self._key(kernel, on_device)
                w = k.warm_up
                if w is not None and w[2] is None and w[0] == gpu and w[1] == n and w[3] == _get_ident():
                    w[2] = float(seconds)  # a re-probe's first call: held until this thread's next decision
                    return
                (k.gpu if gpu else k.cpu).add(n, float(seconds), refit=probe)
                if probe:  # a probe is there to move the decision: decide afresh
                    self._unsettle(k)
                    self._after_probe(k, gpu, n, float(seconds))

    def record_cpu_execution(self, seconds: float, *, size: int | None = None, kernel: str = DEFAULT_KERNEL,
                             data_on_device: bool = False, probe: bool = False) -> None:  # fmt: skip
        """Count a CPU run of ``seconds``; with ``size``, also teach the CPU model (``probe``:
        the run was a probe, refit at once)."""
        self._record(False, seconds, size, kernel, bool(data_on_device), probe)

    def record_gpu_execution(self, seconds: float, *, size: int | None = None, kernel: str = DEFAULT_KERNEL,
                             data_on_device: bool = False, probe: bool = False) -> None:  # fmt: skip
        """Count a GPU run of ``seconds``; with ``size``, also teach the GPU model."""
        self._record(True, seconds, size, kernel, bool(data_on_device), probe)

    def update_threshold(self, size: int, cpu_time: float, gpu_time: float, *, kernel: str = DEFAULT_KERNEL,
                         data_on_device: bool = False) -> None:  # fmt: skip
        """Teach both models one measurement each at ``size`` (seconds), as the proposal's method."""
        n = _check_size(size)
        for t in (cpu_time, gpu_time):  # both checked before either is taught
            if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 < t < 1e9:
                raise ConfigurationError(f"times must be positive seconds below 1e9, got {t!r}")
        with self._lock:
            k = self._key(kernel, bool(data_on_device))
            k.cpu.add(n, float(cpu_time), refit=True)
            k.gpu.add(n, float(gpu_time), refit=True)
            self._unsettle(k)
            k.confirm = None  # (both sides taught at once: a streak's premise may no longer hold)

    # -- reading ------------------------------------------------------------------------------
    def crossover(self, *, kernel: str = DEFAULT_KERNEL, data_on_device: bool = False) -> float | None:
        """The learned crossover size (GPU from there on), ``inf`` if the CPU always wins, ``None`` before learning."""
        with self._lock:
            k = self._keys.get((kernel, bool(data_on_device)))
            return None if k is None else crossover(k.cpu.fit(), k.gpu.fit())

    @property
    def adaptive_threshold(self) -> int | None:
        """The crossover of the default kernel with host data, as an int (``None``: not learned or never)."""
        c = self.crossover()
        return None if c is None or c == float("inf") else int(round(c))

    def explain(self, workload_size: int, *, kernel: str = DEFAULT_KERNEL, data_on_device: bool = False) -> Explanation:
        """Which side a workload would run on and the models' numbers behind it (nothing recorded)."""
        n = _check_size(workload_size)
        with self._lock:
            k = self._keys.get((kernel, bool(data_on_device)))
            cpu, gpu = (k.cpu.fit(), k.gpu.fit()) if k else (None, None)
            counts = (k.cpu.count, k.gpu.count) if k else (0, 0)
            here = (k.cpu.at.get(n), k.gpu.at.get(n)) if k else (None, None)
            ready = k is not None and k.ready
            explore = _explore(k, n, self.config.min_samples) if k is not None and not ready else None
        mode = self.config.mode
        if mode.kind == "adaptive" and self.gpu_available:
            if cpu is None or gpu is None or not ready and (explore is not None or k is None):
                use_gpu = True if k is None else bool(explore)
                reason = "still exploring: too few measurements"
            else:
                t_cpu = here[0][0] if here[0] is not None else cpu.predict(n)
                t_gpu = here[1][0] if here[1] is not None else gpu.predict(n)
                use_gpu = t_gpu < t_cpu
                reason = "the cheaper side, " + ("both measured at this size" if None not in here else
                                                 "predicted" if here == (None, None) else "one side measured at this size")
                other = k.cpu if use_gpu else k.gpu  # type: ignore[union-attr]
                if not other.lo_n <= n <= other.hi_n:
                    use_gpu, reason = not use_gpu, "the other side was never measured near this size: probing it"
        else:
            use_gpu = self.gpu_available and (mode == ProcessingMode.GPU_ONLY or
                                              (mode.kind == "hybrid" and n >= (mode.gpu_threshold or 0)))  # fmt: skip
            reason = f"mode {mode!r}" if self.gpu_available else "no GPU"
        return Explanation(n, kernel, bool(data_on_device), mode, use_gpu, reason, cpu, gpu, counts[0], counts[1],
                           crossover(cpu, gpu), here[0], here[1])  # fmt: skip

    def stats(self) -> HybridStats:
        with self._lock:
            return HybridStats(self._cpu[0], self._gpu[0], self._cpu[1], self._gpu[1], self._probes,
                               {k: dict(v) for k, v in self._per_kernel.items()})  # fmt: skip

    def reset(self) -> None:
        """Forget every measurement and count."""
        with self._lock:
            for k in self._keys.values():
                self._unsettle(k)
            self._keys.clear()
            self._cpu, self._gpu, self._probes = [0, 0], [0, 0], 0
            self._per_kernel.clear()
            self._rng = random.Random(self.config.seed)

    def __repr__(self) -> str:
        return f"HybridDispatcher({self.config.mode!r}, gpu_available={self.gpu_available})"


def _check_size(n: Any) -> int:
    if type(n) is int and n >= 0:
        return n
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ConfigurationError(f"a workload size must be a non-negative int, got {n!r}", hint="pass the element count")
    return int(n)
