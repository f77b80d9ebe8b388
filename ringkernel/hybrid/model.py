"""A side's cost model: ``t(n) = fixed + per_element * n``, fitted to measured times.

Pure NumPy, no device. The fit minimises the *relative* error of recent samples (a call of
2^8 elements takes microseconds, one of 2^26 milliseconds: an absolute least-squares fit would
ignore the small ones, where the fixed cost is decided), weights a sample by
``(1 - learning_rate) ** age`` so that the model follows drift, and drops outliers (a
garbage-collector pause, a page fault storm) whose relative residual is far beyond the
others' before fitting again. Both coefficients are kept non-negative.

Beside the line, each model keeps the last few times of every size it has run (StarPU's
history-based model, for sizes a program calls again and again): where a side has run a size
at least three times, the median of those recent times is its estimate there, since a line through
every size cannot follow caches, thread wake-ups or a grid that fills the GPU, and near the
crossover an error of a few percent picks the wrong side.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["CostModel", "Fit"]


@dataclass(frozen=True)
class Fit:
    """A fitted model: seconds = ``fixed_s + per_element_s * n``."""

    fixed_s: float
    per_element_s: float
    samples: int
    sizes: int
    #: Median relative residual of the samples kept: how well the line fits.
    relative_error: float

    def predict(self, n: int) -> float:
        return self.fixed_s + self.per_element_s * n


HISTORY = 5  # recent times kept per size
HISTORY_MIN = 3  # runs of a size before their median is its estimate
HISTORY_SIZES = 256  # sizes kept (the oldest size forgotten first)


class CostModel:
    """Recent (size, seconds) samples of one side for one kernel and data location."""

    def __init__(self, learning_rate: float, window: int = 64, refit_every: int = 8) -> None:
        #: size -> (median of its recent times, how many) once a size has run three times
        self.at: dict[int, tuple[float, int]] = {}
        self._history: dict[int, deque[float]] = {}
        self.learning_rate = learning_rate
        self._samples: deque[tuple[int, float]] = deque(maxlen=window)
        self._fit: Fit | None = None
        self._stale = True
        self._new = 0
        self._refit_every = refit_every
        #: Sizes within 4x of those measured: the other side's prediction there is trusted (the dispatcher
        #: probes a side at a size beyond them).
        self.lo_n = self.hi_n = -1.0
        #: Every size ever measured (the dispatcher explores the side that lacks a size).
        self.seen: set[int] = set()

    def add(self, n: int, seconds: float, *, refit: bool = False) -> None:
        """Add a sample. The fit is recomputed (a least-squares solve, tens of microseconds)
        after every sample while there are fewer than 16, later after ``refit_every`` or half
        the window's samples, whichever is more, and at once when ``refit`` (a probe's sample,
        which is there to move the fit)."""
        if n > 0 and seconds > 0 and math.isfinite(seconds):
            n = int(n)
            self._samples.append((n, float(seconds)))
            self.seen.add(n)
            h = self._history.get(n)
            if h is None:
                if len(self._history) >= HISTORY_SIZES:
                    old = next(iter(self._history))  # the size first measured longest ago
                    del self._history[old]
                    self.at.pop(old, None)
                h = self._history[n] = deque(maxlen=HISTORY)
            h.append(float(seconds))
            typical = _typical(h) if len(h) >= HISTORY_MIN else None
            if typical is not None:
                self.at[n] = (typical, len(h))
            else:
                self.at.pop(n, None)
            self._new += 1
            self.lo_n = n / 4.0 if self.lo_n < 0 else min(self.lo_n, n / 4.0)
            self.hi_n = max(self.hi_n, n * 4.0)
            if refit or len(self._samples) < 16 or self._new >= max(self._refit_every, len(self._samples) // 2):
                self._stale = True

    @property
    def count(self) -> int:
        return len(self._samples)

    @property
    def distinct_sizes(self) -> int:
        return len({n for n, _ in self._samples})

    def fit(self) -> Fit | None:
        """The current fit (``None`` without samples; with one size only, that size's median
        time as a constant: the dispatcher starts using a model after two sizes)."""
        if self._stale:
            self._fit = self._compute()
            self._stale = False
            self._new = 0
        return self._fit

    def predict(self, n: int) -> float | None:
        """The estimate at ``n``: the recent median there if measured three times, else the line's."""
        m = self.at.get(n)
        if m is not None:
            return m[0]
        f = self.fit()
        return None if f is None else f.predict(n)

    def _compute(self) -> Fit | None:
        if not self._samples:
            return None
        data = np.array(self._samples, dtype=np.float64)
        n, t = data[:, 0], data[:, 1]
        if self.distinct_sizes < 2:  # one size (the older ones left the window): its median time
            med = float(np.median(t))
            return Fit(med, 0.0, len(t), 1, float(np.median(np.abs(t - med) / t)))
        age = np.arange(len(n) - 1, -1, -1, dtype=np.float64)
        w = (1.0 - self.learning_rate) ** age
        keep = np.ones(len(n), dtype=bool)
        fixed, per = _solve(n, t, w)
        for _ in range(2):  # drop outliers, then fit again on the rest
            r = np.abs(fixed + per * n - t) / t
            med = float(np.median(r[keep]))
            mad = float(np.median(np.abs(r[keep] - med)))
            limit = max(med + 6.0 * 1.4826 * mad, 0.25)
            new_keep = r <= limit
            if len(set(n[new_keep].tolist())) < 2 or (new_keep == keep).all():
                break
            keep = new_keep
            fixed, per = _solve(n[keep], t[keep], w[keep])
        r = np.abs(fixed + per * n[keep] - t[keep]) / t[keep]
        return Fit(fixed, per, int(keep.sum()), len(set(n[keep].tolist())), float(np.median(r)))


def _typical(times: "deque[float]") -> float | None:
    """The median of a size's recent times, leaving out those over 3x the fastest: the same work
    is never much faster than usual, but a pause (the garbage collector, a page-fault storm,
    another process) makes it many times slower, and two pauses among a few runs are not rare
    over many sizes and sides. ``None`` (the line decides) unless two runs agree so."""
    ordered = sorted(times)
    kept = [t for t in ordered if t <= 3.0 * ordered[0]]
    return kept[len(kept) // 2] if len(kept) >= 2 else None


def _solve(n: np.ndarray, t: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """min sum w * ((a + b n - t) / t)^2 over a, b >= 0.

    Two unknowns: the normal equations are solved in closed form, with the columns scaled to
    unit norm (their scales differ by the sizes', up to 2^26), by elementwise NumPy only. A
    LAPACK least-squares solve (``np.linalg.lstsq``) wakes OpenBLAS's thread pool, whose
    threads then spin for a while on the cores the CPU side's parallel loop needs: on the
    16-core GPU host, calls of both modes were slower for as long as ADAPTIVE kept refitting
    (benchmarks/results/hybrid_overhead_session12_run1.json)."""
    x0, x1 = 1.0 / t, n / t  # rows of the design, divided by t; the target is 1
    s00, s01, s11 = float(np.sum(w * x0 * x0)), float(np.sum(w * x0 * x1)), float(np.sum(w * x1 * x1))
    s0, s1 = float(np.sum(w * x0)), float(np.sum(w * x1))
    a = b = -1.0
    if s00 > 0 and s11 > 0:
        c0, c1 = math.sqrt(s00), math.sqrt(s11)
        r = s01 / (c0 * c1)  # the cosine between the two columns: 1 only for a single size
        det = 1.0 - r * r
        if det > 1e-12:
            u0, u1 = s0 / c0, s1 / c1
            a, b = (u0 - r * u1) / det / c0, (u1 - r * u0) / det / c1
    if a >= 0 and b >= 0:
        return float(a), float(b)
    # one coefficient at its bound: fit the other alone, keep the better of the two
    b_only = max(s1 / s11, 0.0) if s11 > 0 else 0.0
    a_only = max(s0 / s00, 0.0) if s00 > 0 else 0.0
    err_b = float(np.sum(w * (b_only * x1 - 1) ** 2))
    err_a = float(np.sum(w * (a_only * x0 - 1) ** 2))
    return (0.0, b_only) if err_b <= err_a else (a_only, 0.0)
