"""Overload: open-loop load at several times the capacity measured in the same run, on the local stack.

    python -m resilience.overload [--repository model_repository] [--duration 60] [--factor 3]

One stack, three steps, single-patch predictions of patches never sent before (no cache hit):

1. unloaded: one client, one request at a time: the unloaded p99;
2. capacity: closed loop with as many clients as the gateway admits patches (none refused): the rate
   of answers the stack sustains;
3. overload: open loop at `factor` x capacity for `duration` seconds (benchmarks.client: requests go
   out on schedule whatever the answers, latency counted from the scheduled time).

Judged as issue 18 asks: goodput (200s per second) at least 80 % of capacity; the accepted requests'
p99 at most 3x the unloaded p99; every refusal a 503 `overloaded` or a 429 with Retry-After, its p99
within the same bar; no other status; no process's resident memory grown by more than 25 %.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.load import OpenLoopRun, http_load, open_loop_load, predictions
from benchmarks.report import write
from benchmarks.serving import UniqueBodies
from devstack.groups import resident_bytes
from loadtests.run_local import local_stack
from loadtests.soak import growth_violations
from resilience.scenario import OUTPUT_DIR, ROOT, Verdict, scenario_parser

MAX_PENDING_PATCHES = 3
"""The gateway's admission bound in this scenario. An accepted patch waits about pending / throughput
(Little's law): a CPU Triton answers some 50 patches/s, so 3 pending patches are already 60 ms, about
twice the unloaded latency. A GPU answering thousands per second affords hundreds."""
GOODPUT_SHARE, P99_RATIO, MEMORY_GROWTH = 0.8, 3.0, 0.25
REFUSALS = (503, 429)


@dataclass(frozen=True)
class Overload:
    """What one run measured."""

    unloaded_p99_ms: float
    capacity_rps: float
    offered_rps: float
    run: OpenLoopRun
    memory_before: dict[str, int]
    memory_after: dict[str, int]

    @property
    def accepted(self) -> np.ndarray:
        return self.run.status == 200

    @property
    def refused(self) -> np.ndarray:
        return np.isin(self.run.status, REFUSALS)

    @property
    def goodput_rps(self) -> float:
        return float(self.accepted.sum() / self.run.wall_s)

    def percentile_ms(self, which: np.ndarray, percentile: float) -> float:
        return float(np.percentile(self.run.seconds[which], percentile) * 1000) if which.any() else 0.0

    def p99_ms(self, which: np.ndarray) -> float:
        return self.percentile_ms(which, 99)

    def verdict(self) -> Verdict:
        """The issue's bars, each a message when missed."""
        missed = []
        if self.goodput_rps < GOODPUT_SHARE * self.capacity_rps:
            missed.append(
                f"goodput {self.goodput_rps:.1f}/s < {GOODPUT_SHARE:.0%} of {self.capacity_rps:.1f}/s"
            )
        if self.p99_ms(self.accepted) > P99_RATIO * self.unloaded_p99_ms:
            missed.append(
                f"accepted p99 {self.p99_ms(self.accepted):.0f} ms > {P99_RATIO:g}x unloaded "
                f"{self.unloaded_p99_ms:.0f} ms"
            )
        missed += self.refusal_faults() + self.slow_refusals()
        missed += growth_violations(self.memory_before, self.memory_after, MEMORY_GROWTH)
        return Verdict(missed)

    def refusal_faults(self) -> list[str]:
        """Statuses other than 200 and a refusal, and refusals without a Retry-After in seconds."""
        faults = [
            f"{int((self.run.status == status).sum())} answers with status {status}"
            for status in sorted(set(self.run.status.tolist()) - {200, *REFUSALS})
        ]
        bare = sum(1 for i in np.flatnonzero(self.refused) if not self.run.retry_after[i].isdigit())
        if bare:
            faults.append(f"{bare} refusals without a Retry-After in seconds")
        return faults

    def slow_refusals(self) -> list[str]:
        """Refusals are meant to be at once, never queued: their p99 within the accepted requests' bar."""
        if self.p99_ms(self.refused) <= self.unloaded_p99_ms:
            return []
        return [
            f"refusals' p99 {self.p99_ms(self.refused):.0f} ms > unloaded p99 {self.unloaded_p99_ms:.0f} ms"
        ]


def measure(
    url: str, pids: dict[str, int], duration_s: float, factor: float, bodies: UniqueBodies, clients: int
) -> Overload:
    """The three steps against a running stack (`pids`: each process group, for its resident memory;
    `clients`: the closed loop measuring capacity, no more than the gateway admits at once)."""
    unloaded = http_load(url, predictions(bodies.take(100)), concurrency=1)
    capacity = http_load(url, predictions(bodies.take(40 * clients)), concurrency=clients)
    offered = factor * capacity.per_second
    requests = predictions(bodies.take(int(offered * duration_s) + 1))
    memory_before = {name: resident_bytes(pid) for name, pid in pids.items()}
    run = open_loop_load(url, requests, offered, duration_s, connections=512)
    memory_after = {name: resident_bytes(pid) for name, pid in pids.items()}
    return Overload(unloaded.ms(99), capacity.per_second, offered, run, memory_before, memory_after)


def stack_environment(max_pending: int = MAX_PENDING_PATCHES) -> dict[str, str]:
    """The scenario's settings: the gateway's admission bound, batches no larger than it."""
    return {
        "PCAM_GATEWAY_MAX_PENDING_PATCHES": str(max_pending),
        "PCAM_GATEWAY_BATCH_MAX_SIZE": str(max_pending),
    }


def report(result: Overload) -> Path:
    """Print the figures and write them (with the verdict) to build/chaos/overload.json."""
    verdict = result.verdict()
    run = result.run
    rows = [
        ["unloaded p99 (ms)", result.unloaded_p99_ms],
        ["capacity (answers/s)", result.capacity_rps],
        ["offered (requests/s)", result.offered_rps],
        ["goodput (200/s)", result.goodput_rps],
        ["goodput / capacity", result.goodput_rps / result.capacity_rps],
        ["accepted p50 (ms)", result.percentile_ms(result.accepted, 50)],
        ["accepted p99 (ms)", result.p99_ms(result.accepted)],
        ["accepted p99 / unloaded p99", result.p99_ms(result.accepted) / result.unloaded_p99_ms],
        ["refused (503/429)", int(result.refused.sum())],
        ["refusals' p99 (ms)", result.p99_ms(result.refused)],
        ["load client CPU per request (ms)", 1000 * run.client_cpu_s / len(run.status)],
        *[
            [
                f"{name} RSS MiB before -> after",
                f"{result.memory_before[name] / 2**20:.0f} -> {result.memory_after[name] / 2**20:.0f}",
            ]
            for name in result.memory_before
        ],  # fmt: skip
        ["verdict", verdict.summary()],
    ]
    details = {"statuses": {str(s): int((run.status == s).sum()) for s in set(run.status.tolist())},
               "missed": verdict.missed}  # fmt: skip
    return write("overload", "Overload: open loop at a multiple of capacity", ["figure", "value"], rows,
                 details, OUTPUT_DIR)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = scenario_parser(__doc__)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--factor", type=float, default=3.0)
    parser.add_argument("--max-pending", type=int, default=MAX_PENDING_PATCHES, help="the gateway's bound")
    args = parser.parse_args(argv)
    bodies = UniqueBodies()
    work = ROOT / "build" / "chaos" / "overload-stack"
    with local_stack(args.repository, args.triton_venv, work, stack_environment(args.max_pending)) as stack:
        pids = {name: process.popen.pid for name, process in stack.processes.items()}
        url = stack.config.url("gateway")
        result = measure(url, pids, args.duration, args.factor, bodies, args.max_pending)
    report(result)
    return 0 if result.verdict().passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
