"""Chaos under load: one random process of the supervised stack killed every 10 s while Locust runs.

    python -m resilience.chaos [--repository model_repository] [--duration 120] [--every 10] [--seed 0]

The local stack runs under devstack's Supervisor, the code `make run` restarts crashed processes with.
Locust's cold scenario (a patch never sent before per request) runs headless against the gateway
for the whole time. Every `--every` seconds one process (Redis, Triton, preprocess, ensemble or the
gateway, drawn with `--seed`) is killed with SIGKILL to its whole process group, as an out-of-memory
kill would.

Reported: the error ratio Locust saw (connection errors while the gateway is down, 503s while a
dependency restarts). Judged as issue 18 asks: every process back and the gateway ready at the end;
no request outlived its deadline (Locust's slowest answer within the gateway's request deadline plus
a second).
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.report import write
from devstack.stack import LocalStack
from devstack.supervisor import Supervisor
from loadtests.run_local import local_stack, locust_command
from resilience.scenario import OUTPUT_DIR, ROOT, Verdict, scenario_parser

REQUEST_TIMEOUT_S = 10.0
RECOVERY_S = 120.0
"""How long the stack gets, after the last kill, to have every process back and the gateway ready."""
USERS = 6


@dataclass(frozen=True)
class Chaos:
    kills: list[tuple[float, str]]
    """(seconds into the run, process) of each kill."""
    requests: int
    failures: int
    slowest_ms: float
    recovered: bool
    restarts: dict[str, int]

    @property
    def error_ratio(self) -> float:
        return self.failures / max(self.requests, 1)

    def verdict(self) -> Verdict:
        missed = []
        if not self.recovered:
            missed.append(f"not every process back and ready within {RECOVERY_S:g} s of the last kill")
        if self.slowest_ms > (REQUEST_TIMEOUT_S + 1) * 1000:
            missed.append(
                f"slowest answer {self.slowest_ms / 1000:.1f} s > deadline {REQUEST_TIMEOUT_S:g} s + 1 s"
            )
        if self.requests == 0:
            missed.append("Locust sent nothing")
        return Verdict(missed)


def supervise(stack: LocalStack, stop: threading.Event) -> Supervisor:
    """Run the Supervisor's watch loop in a thread until `stop` (as `make run` does in its main loop)."""
    supervisor = Supervisor(stack)

    def loop() -> None:
        while not stop.is_set():
            supervisor.watch()
            stop.wait(0.5)

    threading.Thread(target=loop, name="supervisor", daemon=True).start()
    return supervisor


def ready(stack: LocalStack) -> bool:
    """Every process alive and the gateway's readiness (which asks preprocess and ensemble) ok."""
    if not all(process.alive() for process in stack.processes.values()):
        return False
    try:
        return httpx.get(f"{stack.config.url('gateway')}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def kill_at_random(
    stack: LocalStack, duration_s: float, every_s: float, rng: random.Random
) -> list[tuple[float, str]]:
    """SIGKILL one random process group every `every_s` for `duration_s`."""
    start, kills = time.monotonic(), []
    for turn in range(1, int(duration_s // every_s) + 1):
        time.sleep(max(0.0, start + turn * every_s - time.monotonic()))
        name = rng.choice(sorted(stack.processes))
        process = stack.processes[name]
        if process.alive():
            os.killpg(process.popen.pid, signal.SIGKILL)
        kills.append((time.monotonic() - start, name))
    return kills


def locust_totals(stats_csv: Path) -> tuple[int, int, float]:
    """(requests, failures, slowest ms) of Locust's Aggregated row."""
    with stats_csv.open(newline="") as f:
        (row,) = [r for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
    return int(row["Request Count"]), int(row["Failure Count"]), float(row["Max Response Time"])


def run(stack: LocalStack, duration_s: float, every_s: float, seed: int, out: Path) -> Chaos:
    stop = threading.Event()
    supervisor = supervise(stack, stop)
    out.mkdir(parents=True, exist_ok=True)
    command = locust_command("cold", stack.config.url("gateway"), out, USERS, USERS, f"{duration_s + 10:g}s")
    locust = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=(out / "locust.log").open("wb"))
    try:
        time.sleep(5)  # users started
        kills = kill_at_random(stack, duration_s, every_s, random.Random(seed))
        deadline = time.monotonic() + RECOVERY_S
        while not ready(stack) and time.monotonic() < deadline:
            time.sleep(1)
        recovered = ready(stack)
        locust.wait(timeout=RECOVERY_S + duration_s)
    finally:
        if locust.poll() is None:
            locust.kill()
        stop.set()
    requests, failures, slowest = locust_totals(out / "cold_stats.csv")
    restarts = {name: schedule.restarts for name, schedule in supervisor.schedules.items()}
    return Chaos(kills, requests, failures, slowest, recovered, restarts)


def report(result: Chaos) -> Path:
    verdict = result.verdict()
    rows = [
        ["kills", ", ".join(f"{name}@{at:.0f}s" for at, name in result.kills)],
        [
            "restarts by the supervisor",
            ", ".join(f"{n} {name}" for name, n in sorted(result.restarts.items()) if n),
        ],
        ["requests (Locust)", result.requests],
        ["failed", result.failures],
        ["error ratio", f"{result.error_ratio:.3f}"],
        ["slowest answer (s)", result.slowest_ms / 1000],
        ["every process back, gateway ready", result.recovered],
        ["verdict", verdict.summary()],
    ]
    return write("chaos", "Chaos: a random process killed every 10 s under Locust", ["figure", "value"], rows,
                 {"missed": verdict.missed, "kills": result.kills}, OUTPUT_DIR)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = scenario_parser(__doc__)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    work = ROOT / "build" / "chaos" / "chaos"
    environment = {
        "PCAM_GATEWAY_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
        "PCAM_GATEWAY_RATE_LIMIT_PER_MINUTE": "0",
    }
    with local_stack(args.repository, args.triton_venv, work / "stack", environment) as stack:
        result = run(stack, args.duration, args.every, args.seed, work / "locust")
    report(result)
    return 0 if result.verdict().passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
