"""Throughput of 64-byte messages through the device queues (issue 14's messaging figures).

Four queues, in one process, each moving the same messages (producer id, sequence, six random
uint64 payload words from a device table, a checksum over all of them: 64 B):

  partitioned_warp  PartitionedQueue, warp-aggregated pq_warp_push_from / pq_warp_pop_into,
                    each warp on partition (warp id % partitions)
  inbox_warp        one LockFreeInbox, inbox_warp_push_from / inbox_warp_pop_into
  inbox_thread      one LockFreeInbox, inbox_try_push_from / inbox_try_pop_into per thread
  baseline          written here: one global atomic ticket per message (push: t = atomic.add(tail, 1),
                    wait for slot t & mask's flag to say "empty for lap t >> log2(capacity)", write,
                    fence, flag += 1; pop the same with head), no aggregation

Two patterns:

  alternate  (the headline, ``msgs_per_s``) AnyQ's producer-consumer pattern: one grid of full
             occupancy (the occupancy API's resident blocks for the kernel), every thread pushes a
             message then pops one, ``per`` times; the queue holds at least twice the grid, so
             pushes are never refused and the figure is the queue's cost, not the ring's size.
  two_streams a producer kernel and a consumer kernel, each half of full occupancy (so both are
             resident), launched on two streams at once; consumers each pop a fixed quota. Time:
             from an event before both launches to the later of the two kernels' end events.

Every timed run is checked on the device and then on the host: the messages popped are counted,
two independent 64-bit hashes of (producer, sequence) are summed (exactly once: count and both
sums equal the host's), each message's checksum is recomputed (nothing torn), and the queue
must be empty afterwards; a broken queue stops the benchmark with exit status 1.

``fraction_of_bandwidth_bound``: a message is written once and read once (2 x 64 B); the bound
is the device-to-device copy bandwidth (bytes read + bytes written per second of a 1 GiB
cudaMemcpy, CUDA events, median) divided by 128 B.

CUDA events around each run, after a warm-up run of each configuration; ``--rounds`` rounds
with the variant order rotated; reported: the median of the rounds.

    python benchmarks/messaging.py --out benchmarks/results/messaging.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

import ringkernel  # noqa: F401 - before numba.cuda: ringkernel picks the backend
from numba import cuda
from ringkernel.messaging.device import _copy, _fence, _load  # the queues' own primitives, for the baseline

MSG = np.dtype([("producer", np.int32), ("seq", np.int32), ("payload", np.uint64, (6,)), ("check", np.uint64)])
assert MSG.itemsize == 64
BLOCK = 256
PARTITIONS = 128  # about one per SM
CAP_PER_PARTITION = 1 << 14
CAPACITY = 1 << 21  # inbox and baseline: as many slots as the partitioned queue in all
RND_WORDS = 1 << 20  # the random payload table (8 MiB)
SALT = np.uint64(0x5DEECE66D2545F49)
VARIANTS = ("partitioned_warp", "inbox_warp", "inbox_thread", "baseline")
PATTERNS = ("alternate", "two_streams")


@cuda.jit(device=True)
def _mix(x):  # type: ignore[no-untyped-def]
    # splitmix64's finalizer (uint64 throughout: mixing int64 and uint64 would give float64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def mix_host(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@cuda.jit(device=True)
def _fill(scratch, t, k, per, rnd, rmask):  # type: ignore[no-untyped-def]
    """Message k of producer t into scratch[t]: random payload words, checksum over everything."""
    key = np.uint64(t) * np.uint64(per) + np.uint64(k)
    scratch[t]["producer"] = t
    scratch[t]["seq"] = k
    c = _mix(key)
    for w in range(6):
        v = rnd[(key * np.uint64(6) + np.uint64(w)) & rmask]
        scratch[t]["payload"][w] = v
        c += v
    scratch[t]["check"] = c


@cuda.jit(device=True)
def _check(out, j, per, acc_local):  # type: ignore[no-untyped-def]
    """Account for the message in out[j]: count, two key hashes, torn flag (thread-local sums)."""
    key = np.uint64(out[j]["producer"]) * np.uint64(per) + np.uint64(out[j]["seq"])
    h = _mix(key)
    c = h
    for w in range(6):
        c += out[j]["payload"][w]
    acc_local[0] += np.uint64(1)
    acc_local[1] += h
    acc_local[2] += _mix(key ^ SALT)
    if c != out[j]["check"]:
        acc_local[3] += np.uint64(1)


@cuda.jit(device=True)
def _flush(acc, acc_local):  # type: ignore[no-untyped-def]
    for i in range(4):
        cuda.atomic.add(acc, i, acc_local[i])  # relaxed: sums read by the host after the kernel


# ---- the naive baseline: one global ticket per message --------------------------------------
# ctr[0]: tail (producers' tickets), ctr[16]: head (consumers' tickets), own 128-byte lines;
# flags[slot] == 2*lap: empty for lap's producer, 2*lap + 1: full for lap's consumer.
# It uses the queues' own memory primitives (16-byte message copies, ld.relaxed.gpu reads,
# fence.acq_rel.gpu), so that the ratio measures the algorithm (a ticket per message on one
# counter vs claims aggregated per warp over partitions), not the code generation.


@cuda.jit(device=True)
def base_push(ctr, flags, slots, part, msgs, i):  # type: ignore[no-untyped-def]
    t = cuda.atomic.add(ctr, 0, 1)  # relaxed ticket: atomicity alone makes position t ours
    mask = flags.shape[0] - 1
    shift = cuda.popc(mask)  # log2(capacity)
    idx = t & mask
    want = (t >> shift) * 2
    while _load(flags, idx) != want:  # strong reads: wait for the previous lap's consumer
        pass
    _fence()  # acquire: its reads happen before our writes
    _copy(slots, idx, msgs, i)
    _fence()  # release: payload before the flag
    cuda.atomic.add(flags, idx, 1)  # relaxed RMW after the fence: full
    return True


@cuda.jit(device=True)
def base_pop(ctr, flags, slots, part, outs, j):  # type: ignore[no-untyped-def]
    t = cuda.atomic.add(ctr, 16, 1)  # relaxed ticket
    mask = flags.shape[0] - 1
    shift = cuda.popc(mask)
    idx = t & mask
    want = (t >> shift) * 2 + 1
    while _load(flags, idx) != want:  # strong reads: wait for the producer's release
        pass
    _fence()  # acquire: the producer's payload writes happen before our reads
    _copy(outs, j, slots, idx)
    _fence()  # release: our reads before the hand-back
    cuda.atomic.add(flags, idx, 1)  # relaxed RMW after the fence: empty for the next lap
    return True


def device_ops() -> dict[str, tuple[Callable[..., Any], Callable[..., Any], bool]]:
    """variant -> (push, pop, warp form): one signature (q0, q1, q2, partition, msgs, i)."""
    from ringkernel.messaging import (
        inbox_try_pop_into, inbox_try_push_from, inbox_warp_pop_into, inbox_warp_push_from, pq_warp_pop_into,
        pq_warp_push_from,
    )  # fmt: skip

    @cuda.jit(device=True)
    def pqw_push(q0, q1, q2, part, msgs, i):  # type: ignore[no-untyped-def]
        return pq_warp_push_from(q0, q1, q2, part, msgs, i, True)

    @cuda.jit(device=True)
    def pqw_pop(q0, q1, q2, part, outs, j):  # type: ignore[no-untyped-def]
        return pq_warp_pop_into(q0, q1, q2, part, outs, j, True)

    @cuda.jit(device=True)
    def ibw_push(q0, q1, q2, part, msgs, i):  # type: ignore[no-untyped-def]
        return inbox_warp_push_from(q0, q1, q2, msgs, i, True)

    @cuda.jit(device=True)
    def ibw_pop(q0, q1, q2, part, outs, j):  # type: ignore[no-untyped-def]
        return inbox_warp_pop_into(q0, q1, q2, outs, j, True)

    @cuda.jit(device=True)
    def ibt_push(q0, q1, q2, part, msgs, i):  # type: ignore[no-untyped-def]
        return inbox_try_push_from(q0, q1, q2, msgs, i)

    @cuda.jit(device=True)
    def ibt_pop(q0, q1, q2, part, outs, j):  # type: ignore[no-untyped-def]
        return inbox_try_pop_into(q0, q1, q2, outs, j)

    return {
        "partitioned_warp": (pqw_push, pqw_pop, True), "inbox_warp": (ibw_push, ibw_pop, True),
        "inbox_thread": (ibt_push, ibt_pop, False), "baseline": (base_push, base_pop, False),
    }  # fmt: skip


def make_kernels(push: Any, pop: Any, warp: bool) -> tuple[Any, Any, Any]:
    """(alternate, produce, consume) kernels for one variant (push/pop retried until they succeed)."""

    @cuda.jit
    def alternate(q0, q1, q2, nparts, per, rnd, rmask, scratch, out, acc):  # type: ignore[no-untyped-def]
        t = cuda.grid(1)
        part = (t // 32) % nparts  # uniform across a warp
        acc_local = cuda.local.array(4, np.uint64)
        for i in range(4):
            acc_local[i] = np.uint64(0)
        for k in range(per):
            _fill(scratch, t, k, per, rnd, rmask)
            while not push(q0, q1, q2, part, scratch, t):
                pass
            if warp:
                cuda.syncwarp()  # reconverge so that the pop is aggregated over the whole warp
            while not pop(q0, q1, q2, part, out, t):
                pass
            if warp:
                cuda.syncwarp()
            _check(out, t, per, acc_local)
        _flush(acc, acc_local)

    @cuda.jit
    def produce(q0, q1, q2, nparts, per, rnd, rmask, scratch):  # type: ignore[no-untyped-def]
        t = cuda.grid(1)
        part = (t // 32) % nparts
        for k in range(per):
            _fill(scratch, t, k, per, rnd, rmask)
            while not push(q0, q1, q2, part, scratch, t):
                pass
            if warp:
                cuda.syncwarp()

    @cuda.jit
    def consume(q0, q1, q2, nparts, per, out, acc):  # type: ignore[no-untyped-def]
        t = cuda.grid(1)
        part = (t // 32) % nparts  # consumer warp w drains what producer warp w pushed: balanced
        acc_local = cuda.local.array(4, np.uint64)
        for i in range(4):
            acc_local[i] = np.uint64(0)
        for k in range(per):
            while not pop(q0, q1, q2, part, out, t):
                pass
            if warp:
                cuda.syncwarp()
            _check(out, t, per, acc_local)
        _flush(acc, acc_local)

    return alternate, produce, consume


def resident_blocks(kernel: Any) -> int:
    """Blocks of BLOCK threads the occupancy API says fit on the device at once (compiled kernel)."""
    return int(next(iter(kernel.overloads.values())).max_cooperative_grid_blocks(BLOCK))


def expected(total: int) -> tuple[int, int, int, int]:
    keys = np.arange(total, dtype=np.uint64)
    return total, int(mix_host(keys).sum(dtype=np.uint64)), int(mix_host(keys ^ SALT).sum(dtype=np.uint64)), 0


def copy_bandwidth(stream: Any, rounds: int) -> float:
    """Bytes read + written per second by a 1 GiB device-to-device copy (CUDA events, median)."""
    n = 1 << 27  # uint64 words: 1 GiB
    src, dst = cuda.device_array(n, np.uint64, stream=stream), cuda.device_array(n, np.uint64, stream=stream)
    start, end = cuda.event(), cuda.event()
    dst.copy_to_device(src, stream=stream)  # warm-up
    times = []
    for _ in range(max(rounds, 5)):
        start.record(stream)
        dst.copy_to_device(src, stream=stream)
        end.record(stream)
        end.synchronize()
        times.append(cuda.event_elapsed_time(start, end) / 1e3)
    del src, dst
    return 2 * n * 8 / float(np.median(times))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=1 << 24, help="messages per timed run (rounded down to the grid)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    from ringkernel.config import simulator_enabled

    if simulator_enabled():
        print("needs a CUDA GPU (queue throughput and memory ordering mean nothing on the simulator)", file=sys.stderr)
        return 2
    import warnings

    from ringkernel import GpuArchitecture, LockFreeInbox, PartitionedQueue

    warnings.simplefilter("ignore")  # numba's low-occupancy warning for the warm-up grids
    rng = np.random.default_rng()
    s1, s2 = cuda.stream(), cuda.stream()
    bandwidth = copy_bandwidth(s1, args.rounds)
    print(f"copy bandwidth {bandwidth / 1e9:.0f} GB/s (read + write)", flush=True)
    rnd = cuda.to_device(rng.integers(0, 2**64, RND_WORDS, dtype=np.uint64, endpoint=False))
    rmask = np.uint64(RND_WORDS - 1)
    pq = PartitionedQueue(PARTITIONS, CAP_PER_PARTITION, MSG)
    inbox = LockFreeInbox(CAPACITY, MSG)
    base_ctr = cuda.to_device(np.zeros(32, np.int64))
    base_flags = cuda.to_device(np.zeros(CAPACITY, np.int64))
    base_slots = cuda.device_array(CAPACITY, MSG, stream=s1)
    queues = {
        "partitioned_warp": (*pq.device_args(), PARTITIONS), "inbox_warp": (*inbox.device_args(), 1),
        "inbox_thread": (*inbox.device_args(), 1), "baseline": (base_ctr, base_flags, base_slots, 1),
    }  # fmt: skip
    empty = {"partitioned_warp": pq.is_empty, "inbox_warp": inbox.is_empty, "inbox_thread": inbox.is_empty,
             "baseline": lambda: bool(np.diff(base_ctr.copy_to_host()[[0, 16]])[0] == 0)}  # fmt: skip
    ops = device_ops()
    kernels = {v: make_kernels(*ops[v]) for v in VARIANTS}
    acc = cuda.device_array(4, np.uint64, stream=s1)
    zeros = np.zeros(4, np.uint64)
    start, end_p, end_c = cuda.event(), cuda.event(), cuda.event()

    # compile (one warp, one message each) and size the grids by the occupancy API
    grid: dict[tuple[str, str], int] = {}
    for v in VARIANTS:
        alt, prod, cons = kernels[v]
        q0, q1, q2, nparts = queues[v]
        sc, out = cuda.device_array(32, MSG), cuda.device_array(32, MSG)
        alt[1, 32, s1](q0, q1, q2, nparts, 1, rnd, rmask, sc, out, acc)
        prod[1, 32, s1](q0, q1, q2, nparts, 1, rnd, rmask, sc)
        cons[1, 32, s1](q0, q1, q2, nparts, 1, out, acc)
        s1.synchronize()
        grid[v, "alternate"] = resident_blocks(alt)
        grid[v, "two_streams"] = min(resident_blocks(prod), resident_blocks(cons)) // 2  # each kernel
    print("resident blocks of", BLOCK, "threads:", {f"{v}/{p}": b for (v, p), b in grid.items()}, flush=True)
    most = max(b for (v, pat), b in grid.items() if pat == "alternate") * BLOCK
    if CAPACITY < 2 * most or CAP_PER_PARTITION * PARTITIONS < 2 * most:
        raise SystemExit("the queues are too small for a full-occupancy grid: raise CAPACITY, CAP_PER_PARTITION")

    def run(v: str, pattern: str, messages: int) -> tuple[float, int]:
        """One run of about ``messages`` messages; returns (seconds, messages) after checking delivery."""
        alt, prod, cons = kernels[v]
        q0, q1, q2, nparts = queues[v]
        threads = grid[v, pattern] * BLOCK
        per = max(1, messages // threads)
        total = per * threads
        sc, out = bufs[threads]
        acc.copy_to_device(zeros, stream=s1)
        s1.synchronize()
        start.record(s1)
        if pattern == "alternate":
            alt[grid[v, pattern], BLOCK, s1](q0, q1, q2, nparts, per, rnd, rmask, sc, out, acc)
            end_p.record(s1)
            end_p.synchronize()
            seconds = cuda.event_elapsed_time(start, end_p) / 1e3
        else:
            start.wait(s2)  # both kernels start after the start event; consumers first (they wait)
            cons[grid[v, pattern], BLOCK, s2](q0, q1, q2, nparts, per, out, acc)
            prod[grid[v, pattern], BLOCK, s1](q0, q1, q2, nparts, per, rnd, rmask, sc)
            end_p.record(s1)
            end_c.record(s2)
            end_p.synchronize()
            end_c.synchronize()
            seconds = max(cuda.event_elapsed_time(start, end_p), cuda.event_elapsed_time(start, end_c)) / 1e3
        got = tuple(int(x) for x in acc.copy_to_host())
        want = checks.setdefault(total, expected(total))
        if got != want or not empty[v]():
            raise SystemExit(
                f"{v}/{pattern}: broken delivery of {total} messages: (count, hash1, hash2, torn) = {got}, "
                f"want {want}; queue empty afterwards: {empty[v]()}"
            )
        return seconds, total

    checks: dict[int, tuple[int, int, int, int]] = {}
    bufs: dict[int, tuple[Any, Any]] = {}
    for b in set(grid.values()):
        bufs[b * BLOCK] = (cuda.device_array(b * BLOCK, MSG), cuda.device_array(b * BLOCK, MSG))
    per_round: dict[str, dict[str, list[float]]] = {pat: {v: [] for v in VARIANTS} for pat in PATTERNS}
    messages: dict[str, dict[str, int]] = {pat: {} for pat in PATTERNS}
    for pattern in PATTERNS:
        size: dict[str, int] = {}
        for v in VARIANTS:  # warm-up (caches, clocks, positions off zero) on 1/16 of the messages;
            seconds, total = run(v, pattern, args.messages // 16)
            # a slow variant gets fewer messages (at most ~1.5 s a run) so that the whole run stays short
            size[v] = max(1 << 20, min(args.messages, int(total / seconds * 1.5)))
        for r in range(args.rounds):
            for v in VARIANTS[r % 4:] + VARIANTS[: r % 4]:
                seconds, total = run(v, pattern, size[v])
                per_round[pattern][v].append(total / seconds)
                messages[pattern][v] = total
        print(pattern, {v: f"{np.median(x):.3g}" for v, x in per_round[pattern].items()}, flush=True)
    by_pattern = {pat: {v: float(np.median(x)) for v, x in d.items()} for pat, d in per_round.items()}
    headline = by_pattern["alternate"]
    bound = bandwidth / (2 * MSG.itemsize)
    from ringkernel._versions import driver_version, library_versions

    arch = GpuArchitecture.current()
    result = {
        "benchmark": "messaging",
        "msgs_per_s": headline,
        "headline_pattern": "alternate",
        "by_pattern": by_pattern,
        "ratio_to_baseline": {pat: {v: d[v] / d["baseline"] for v in VARIANTS} for pat, d in by_pattern.items()},
        "fraction_of_bandwidth_bound": {pat: {v: d[v] / bound for v in VARIANTS} for pat, d in by_pattern.items()},
        "bandwidth_bound_msgs_per_s": bound,
        "copy_bandwidth_bytes_per_s": bandwidth,
        "msgs_per_s_per_round": per_round,
        "messages_per_run": messages,
        "grid_blocks": {pat: {v: grid[v, pat] for v in VARIANTS} for pat in PATTERNS},
        "block": BLOCK, "message_bytes": MSG.itemsize, "message_dtype": str(MSG),
        "partitions": PARTITIONS, "capacity_per_partition": CAP_PER_PARTITION, "inbox_capacity": CAPACITY,
        "baseline_capacity": CAPACITY, "rounds": args.rounds,
        "device": {"name": arch.name, "compute_capability": list(arch.compute_capability), "sm_count": arch.sm_count,
                   "driver": driver_version()},
        "versions": library_versions(),
        "host": platform.node(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/messaging.py " + " ".join(sys.argv[1:]),
        "method": "64-byte messages with random payload words and a checksum; alternate (headline): one grid "
        "of the occupancy API's resident blocks, every thread push then pop, per times; two_streams: producer "
        "and consumer kernels of half that grid each, concurrently on two streams; CUDA events around each "
        "run (two_streams: start event to the later end event), after one warm-up run per configuration; "
        "every run checked: count, two 64-bit key-hash sums and per-message checksums reduced on the device "
        "and compared on the host, queue empty afterwards; median over rounds, variant order rotated; bound = "
        "device-to-device copy bandwidth (read + write bytes/s of a 1 GiB copy, CUDA events) / (2 x 64 B)",
    }  # fmt: skip
    pq.close()
    inbox.close()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
