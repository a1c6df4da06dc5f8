"""A slow model: one ensemble member made 20x slower inside Triton, under open-loop load.

    python -m resilience.slow_member [--repository model_repository] [--rate 6] [--duration 40]

The release is copied and one member's python-backend `model.py` wrapped (`slowed_member`): each
execute sleeps 19 times what the real one took, so that member answers 20x slower. The slowness is in
the dependency, Triton; the ensemble and gateway run as shipped. Triton's queue policy (max_queue_size,
queue timeout), the ensemble's per-call deadline and the gateway's request deadline are what must hold.

The gateway runs with the overload scenario's admission bound, so the excess is refused at once.
Judged: every answer a 200, or a 503/504 with Retry-After (never a 500 or 502, never a hang); the p99
of all answers within the gateway's request deadline plus a second; once the load has drained, the
gateway's and ensemble's open file descriptors back near where they started and memory within 25 %.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from benchmarks.load import OpenLoopRun, open_loop_load, predictions
from benchmarks.report import write
from benchmarks.serving import UniqueBodies
from devstack.groups import open_fds, resident_bytes
from devstack.stack import LocalStack
from loadtests.run_local import local_stack
from pcam_core.release import load_release
from resilience.overload import stack_environment
from resilience.scenario import OUTPUT_DIR, ROOT, Verdict, scenario_parser

SLOWDOWN = 20
REQUEST_TIMEOUT_S = 8.0
ANSWERED = (200, 503, 504)
WATCHED = ("gateway", "ensemble")
DRAIN_S = 30.0
"""How long the stack gets to finish what it still holds after the load (past every deadline)."""
KEPT_ALIVE = 8
"""Connections a drained stack may keep open beyond its start (keep-alive pools)."""
IN_FLIGHT = re.compile(r"^pcam_admission_in_flight\{[^}]*\} (\S+)$", re.M)

SLOWED_MODEL = '''"""The member's served model.py (served_model.py beside it), every execute made {slowdown}x slower:
a slow dependency for resilience.slow_member, never shipped."""

import importlib.util
import os
import time


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "served_model.py")
        spec = importlib.util.spec_from_file_location("served_model", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.served = module.TritonPythonModel()
        self.served.initialize(args)

    def execute(self, requests):
        start = time.perf_counter()
        responses = self.served.execute(requests)
        time.sleep((time.perf_counter() - start) * ({slowdown} - 1))
        return responses

    def finalize(self):
        getattr(self.served, "finalize", lambda: None)()
'''


def slowed_member(repository: Path, copy: Path, slowdown: int = SLOWDOWN) -> str:
    """Copy the repository with its first member's model.py made `slowdown` times slower; its name."""
    shutil.copytree(repository, copy, ignore=shutil.ignore_patterns("__pycache__"))
    member = load_release(copy).members[0].name
    (version,) = [d for d in (copy / member).iterdir() if d.is_dir() and d.name.isdigit()]
    (version / "model.py").rename(version / "served_model.py")
    (version / "model.py").write_text(SLOWED_MODEL.format(slowdown=slowdown))
    return member


@dataclass(frozen=True)
class SlowMember:
    run: OpenLoopRun
    fds: dict[str, tuple[int, int]]
    memory: dict[str, tuple[int, int]]

    def faults(self) -> list[str]:
        """Answers other than 200/503/504, and 503/504 without Retry-After: what no timing excuses."""
        status = self.run.status
        faults = [
            f"{int((status == s).sum())} answers with status {s}"
            for s in sorted(set(status.tolist()) - set(ANSWERED))
        ]
        refused = np.flatnonzero(np.isin(status, (503, 504)))
        bare = sum(1 for i in refused if not self.run.retry_after[i].isdigit())
        if bare:
            faults.append(f"{bare} 503/504 answers without Retry-After")
        return faults

    def verdict(self) -> Verdict:
        missed = self.faults()
        p99 = float(np.percentile(self.run.seconds, 99))
        if p99 > REQUEST_TIMEOUT_S + 1:
            missed.append(f"p99 {p99:.1f} s > the request deadline {REQUEST_TIMEOUT_S:g} s + 1 s")
        for name, (before, after) in self.fds.items():
            if after > before + KEPT_ALIVE:
                missed.append(f"{name} file descriptors {before} -> {after}")
        for name, (before, after) in self.memory.items():
            if after > 1.25 * before:
                missed.append(f"{name} memory {before >> 20} -> {after >> 20} MiB")
        return Verdict(missed)


def environment() -> dict[str, str]:
    """The overload scenario's admission bound (sized for a CPU Triton), a shorter request deadline."""
    return {
        **stack_environment(),
        "PCAM_GATEWAY_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
        "PCAM_GATEWAY_RATE_LIMIT_PER_MINUTE": "0",
    }


def in_flight(stack: LocalStack) -> float:
    """Work the gateway and the ensemble still hold (admission gauges): 0 once the load has drained."""
    total = 0.0
    for service in WATCHED:
        text = httpx.get(f"{stack.config.url(service)}/metrics", timeout=5).text
        total += sum(float(value) for value in IN_FLIGHT.findall(text))
    return total


def measure(stack: LocalStack, rate: float, duration_s: float, bodies: UniqueBodies) -> SlowMember:
    """Open-loop load; file descriptors and memory before it, and after it has drained."""
    pids = {name: stack.processes[name].popen.pid for name in WATCHED}
    before = {name: (open_fds(pids[name]), resident_bytes(pids[name])) for name in WATCHED}
    url = stack.config.url("gateway")
    run = open_loop_load(url, predictions(bodies.take(int(rate * duration_s) + 1)), rate, duration_s, 256)
    deadline = time.monotonic() + DRAIN_S
    while in_flight(stack) and time.monotonic() < deadline:
        time.sleep(0.5)
    after = {name: (open_fds(pids[name]), resident_bytes(pids[name])) for name in WATCHED}
    return SlowMember(
        run,
        {name: (before[name][0], after[name][0]) for name in WATCHED},
        {name: (before[name][1], after[name][1]) for name in WATCHED},
    )


def report(result: SlowMember, member: str) -> Path:
    verdict, run = result.verdict(), result.run
    seconds = run.seconds
    rows = [
        *[[f"status {s}", int((run.status == s).sum())] for s in sorted(set(run.status.tolist()))],
        ["p50 (s)", float(np.percentile(seconds, 50))],
        ["p99 (s)", float(np.percentile(seconds, 99))],
        ["max (s)", float(seconds.max())],
        *[[f"{name} fds before -> after", f"{a} -> {b}"] for name, (a, b) in result.fds.items()],
        *[
            [f"{name} RSS MiB before -> after", f"{a >> 20} -> {b >> 20}"]
            for name, (a, b) in result.memory.items()
        ],
        ["verdict", verdict.summary()],
    ]
    title = f"Member {member} {SLOWDOWN}x slower in Triton, open loop {len(run.status) / run.wall_s:.1f}/s"
    return write("slow_member", title, ["figure", "value"], rows, {"missed": verdict.missed}, OUTPUT_DIR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = scenario_parser(__doc__)
    parser.add_argument("--rate", type=float, default=6.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=40.0)
    args = parser.parse_args(argv)
    work = ROOT / "build" / "chaos" / "slow-member"
    shutil.rmtree(work, ignore_errors=True)
    member = slowed_member(args.repository, work / "model_repository")
    with local_stack(work / "model_repository", args.triton_venv, work / "stack", environment()) as stack:
        result = measure(stack, args.rate, args.duration, UniqueBodies())
    report(result, member)
    return 0 if result.verdict().passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
