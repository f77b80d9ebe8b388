"""ADAPTIVE on a kernel whose two sides nearly tie at every size, with synthetic times (no GPU).

The ninth session's sweep (benchmarks/results/hybrid.json) had poly50 with host data within
15% between the sides from 2^17 to 2^26 on that host (copies dominate the GPU side), and ADAPTIVE
1.17x the better mode at 2^21 (paired 1.13). This replays benchmarks/hybrid.py's call pattern
(32 learning calls at random sweep sizes, then rounds over the 19 sizes rotating, each visit 3
untimed calls and a burst of 3, its median; the median over rounds) against the real
``HybridDispatcher`` and the teaching rule of ``@elementwise``, with times drawn from
``cost(side, n) * lognormal(0, noise)``, a switch of side costing ``--switch`` more on the CPU
(threads waking) and half that on the GPU, the other modes' calls between two visits leaving
either side last at random. It reports, over ``--seeds`` runs, the ratio at 2^21 and the worst
size's ratio against the true better side; ``--oracle`` replaces the dispatcher by the true
better side (what the statistic alone gives).

    python benchmarks/experiments/hybrid_tie_sim.py --noise 0.1 --seeds 96
    python benchmarks/experiments/hybrid_tie_sim.py --noise 0.1 --seeds 96 --oracle
"""

from __future__ import annotations

import argparse
import importlib
import os

import numpy as np

os.environ.setdefault("RINGKERNEL_SIMULATOR", "1")  # (nothing runs on a device here)

from ringkernel.hybrid.dispatcher import SETTLED_DECISIONS, HybridConfig, HybridDispatcher  # noqa: E402

_ew = importlib.import_module("ringkernel.hybrid.elementwise")
SIZES = [1 << k for k in range(8, 27)]
TIE = 1 << 21


KERNEL = "poly50"


MEASURED: dict[bool, dict[int, float]] = {}


def cost(gpu: bool, n: int) -> float:
    """``--kernel poly50``: the ninth session's sweep host's poly50 with host data (CPU 3108 us,
    GPU 2737 us at 2^21). ``--kernel trig``: the eleventh session's trig with host data, whose
    sides cross near 2^15 (CPU 138 us, GPU 115 us there; CPU 74 us at 2^14)."""
    if MEASURED:
        return MEASURED[gpu][n]
    if KERNEL == "trig":
        return (85e-6 + n * 0.92e-9) if gpu else (10e-6 + n * 3.9e-9)
    return (100e-6 + n * 1.2575e-9) if gpu else (20e-6 + n * 1.4725e-9)


def one_run(seed: int, args: argparse.Namespace) -> tuple[float, float, int]:
    rng = np.random.default_rng(1000 + seed)
    d = HybridDispatcher(HybridConfig(seed=seed))
    last: list[bool | None] = [None]
    taught = [0]
    slow = {False: False, True: False}  # --phase: a side in a slow phase (the host's speed steps)

    def timed(gpu: bool, n: int) -> float:
        t = cost(gpu, n) * rng.lognormal(0, args.noise)
        if slow[gpu]:
            t *= args.phase_factor
        if last[0] is not None and last[0] != gpu:
            t *= 1 + (args.switch / 2 if gpu else args.switch)
        last[0] = gpu
        return t

    held: dict[int, list] = {}  # @elementwise's kept decisions per size (HybridDispatcher.lease)

    def call(n: int) -> float:
        entry = held.get(n)
        if entry is not None and entry[2] > 0 and not entry[4]:
            entry[2] -= 1
            entry[5].last_n = n
            dec, asked = entry[0], False
        else:
            dec, asked = d.decide(n, kernel="k", data_on_device=False), True
            if dec is SETTLED_DECISIONS[dec.use_gpu]:
                kept = d.lease(n, kernel="k")
                if kept is not None:
                    held[n] = kept
            else:
                held.clear()
        if args.oracle:
            dec = SETTLED_DECISIONS[cost(True, n) < cost(False, n)]
        t = timed(dec.use_gpu, n)
        probe = dec.reason != "model"
        if dec is SETTLED_DECISIONS[dec.use_gpu]:
            teach = probe or asked
        else:
            taught[0] += 1
            teach = probe or taught[0] % _ew._TEACH_EVERY == 0
        record = d.record_gpu_execution if dec.use_gpu else d.record_cpu_execution
        record(t, size=n if teach else None, kernel="k", probe=probe)
        return t

    def fixed(gpu: bool, n: int) -> float:
        for _ in range(3):
            timed(gpu, n)
        return float(np.median([timed(gpu, n) for _ in range(3)]))

    for _ in range(32):
        call(int(rng.choice(SIZES)))
    rounds: dict[int, list[float]] = {n: [] for n in SIZES}
    base: dict[bool, dict[int, list[float]]] = {g: {n: [] for n in SIZES} for g in (False, True)}
    for r in range(args.rounds):
        for n in SIZES[r % len(SIZES):] + SIZES[: r % len(SIZES)]:
            for side in (False, True):  # each visit a unit of time: a phase starts or ends
                if rng.random() < (args.phase_leave if slow[side] else args.phase_enter):
                    slow[side] = not slow[side]
            order = [0, 1, 2]
            rng.shuffle(order)  # the three modes in a random order, as the benchmark's rotation
            for m in order:
                if m == 2:
                    for _ in range(3):
                        call(n)
                    rounds[n].append(float(np.median([call(n) for _ in range(3)])))
                else:
                    base[bool(m)][n].append(fixed(bool(m), n))
    ratios = {}
    for n, v in rounds.items():
        if args.phase_enter > 0 or args.measured_baseline:
            best = min(float(np.median(base[False][n])), float(np.median(base[True][n])))
        else:
            best = min(cost(True, n), cost(False, n))
        ratios[n] = float(np.median(v)) / best
    worst = max(ratios, key=ratios.__getitem__)
    return ratios[TIE], ratios[worst], worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--noise", type=float, default=0.1, help="sigma of the lognormal noise per call")
    p.add_argument("--switch", type=float, default=0.12, help="extra cost of a CPU call after a GPU one")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--seeds", type=int, default=24)
    p.add_argument("--oracle", action="store_true", help="always the true better side")
    p.add_argument("--kernel", choices=["poly50", "trig"], default="poly50", help="the cost model (see cost())")
    p.add_argument("--phase-enter", type=float, default=0.0,
                   help="per size visit, the chance that a side enters a slow phase (0: none)")
    p.add_argument("--phase-leave", type=float, default=0.1, help="per size visit, the chance a slow phase ends")
    p.add_argument("--phase-factor", type=float, default=1.4, help="a slow phase's factor on that side's times")
    p.add_argument("--measured-baseline", action="store_true",
                   help="compare with the fixed modes as simulated in the same run (always so with phases)")
    p.add_argument("--measured", nargs=2, metavar=("JSON", "KEY"),
                   help="per-size costs from a sweep's medians (e.g. benchmarks/results/hybrid.json trig/host): "
                   "not a line, as real times are not; the tie is the size whose sides are closest")
    args = p.parse_args()
    global KERNEL, TIE
    KERNEL = args.kernel
    TIE = 1 << 15 if KERNEL == "trig" else 1 << 21
    if args.measured:
        import json

        r = json.load(open(args.measured[0]))["by_kernel"][args.measured[1]]
        for gpu in (False, True):
            MEASURED[gpu] = dict(zip(r["sizes"], r["median_s"]["gpu" if gpu else "cpu"]))
        TIE = min(SIZES, key=lambda n: abs(np.log(MEASURED[True][n] / MEASURED[False][n])))
        KERNEL = args.measured[1]
    runs = [one_run(s, args) for s in range(args.seeds)]
    at_tie = [r[0] for r in runs]
    worst = [r[1] for r in runs]
    print(f"{KERNEL}: {'oracle' if args.oracle else 'ADAPTIVE'}, rounds {args.rounds}, noise {args.noise}, switch {args.switch}, phases {args.phase_enter}/{args.phase_leave}x{args.phase_factor}, {args.seeds} runs: "
          f"at 2^{TIE.bit_length() - 1} mean {np.mean(at_tie):.3f} max {max(at_tie):.3f}; worst size mean {np.mean(worst):.3f} "
          f"max {max(worst):.3f}; runs whose worst size is over 1.10: {sum(w > 1.10 for w in worst)}")


if __name__ == "__main__":
    main()
