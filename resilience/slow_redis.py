"""A slow Redis: a TCP proxy in front of the stack's Redis adds latency to every answer, under load.

    python -m resilience.slow_redis [--repository model_repository] [--requests 400]

The gateway reaches Redis only through `resilience.proxy`. The same closed-loop load (predictions of
patches never sent before, so each request reads the cache, misses, computes and writes) runs three
times: the proxy adding nothing, 200 ms (under the gateway's redis_timeout_s: every call slow but
answered), then 1 s (past it: calls time out and the breaker skips Redis).

Judged as issue 18 asks: every answer a 200 (the cache is an optimisation, never a reason to fail);
each phase's p99 within the baseline p99 plus two Redis timeouts (a request makes at most two Redis
calls, each cut at redis_timeout_s); the connections Redis sees never above the gateway's
redis_max_connections; the gateway's open file descriptors and resident memory not piling up.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.load import Latencies, http_load, predictions
from benchmarks.report import write
from benchmarks.serving import UniqueBodies
from devstack.groups import open_fds, resident_bytes
from devstack.ports import free_port
from devstack.processes import ManagedProcess
from devstack.stack import LocalStack, StackConfig, StackPorts
from resilience.scenario import OUTPUT_DIR, ROOT, Verdict, scenario_parser

REDIS_TIMEOUT_S = 0.25
REDIS_MAX_CONNECTIONS = 16
DELAYS_MS = (0, 200, 1000)
CLIENTS = 8


@dataclass(frozen=True)
class Phase:
    """One delay's load: latencies, and what the gateway and Redis held at its end."""

    delay_ms: int
    load: Latencies
    redis_clients: int
    gateway_fds: int
    gateway_rss: int


@contextmanager
def stack_behind_proxy(
    repository: Path, triton_venv: Path, work: Path, delay_file: Path
) -> Iterator[LocalStack]:
    """The local stack whose gateway reaches Redis through `resilience.proxy` (delay from `delay_file`)."""
    ports, proxy_port = StackPorts.free(), free_port()
    environment = {
        "PCAM_GATEWAY_REDIS_URL": f"redis://127.0.0.1:{proxy_port}/0",
        "PCAM_GATEWAY_REDIS_TIMEOUT_S": str(REDIS_TIMEOUT_S),
        "PCAM_GATEWAY_REDIS_MAX_CONNECTIONS": str(REDIS_MAX_CONNECTIONS),
        "PCAM_GATEWAY_RATE_LIMIT_PER_MINUTE": "0",
    }
    config = StackConfig(
        repository.resolve(), triton_venv.resolve(), work.resolve(), ports, service_environment=environment
    )
    argv = [sys.executable, "-m", "resilience.proxy", str(proxy_port), f"127.0.0.1:{ports.redis}", "--delay-file",
            str(delay_file)]  # fmt: skip
    proxy = ManagedProcess("redis-proxy", argv, work / "logs" / "redis-proxy.log")
    try:
        with LocalStack(config) as stack:
            yield stack
    finally:
        proxy.stop()


def run_phases(stack: LocalStack, delay_file: Path, count: int, bodies: UniqueBodies) -> list[Phase]:
    """The same load at each delay, in turn."""
    url, gateway = stack.config.url("gateway"), stack.processes["gateway"].popen.pid
    direct = redis.Redis(port=stack.config.ports.redis)
    phases = []
    for delay_ms in DELAYS_MS:
        delay_file.write_text(str(delay_ms))
        load = http_load(url, predictions(bodies.take(count)), concurrency=CLIENTS)
        clients = int(direct.info("clients")["connected_clients"]) - 1  # not this one
        phases.append(Phase(delay_ms, load, clients, open_fds(gateway), resident_bytes(gateway)))
    direct.close()
    return phases


def verdict(phases: list[Phase]) -> Verdict:
    baseline, *slow = phases
    bound_ms = baseline.load.ms(99) + 2 * REDIS_TIMEOUT_S * 1000
    missed = [
        f"{p.delay_ms} ms: p99 {p.load.ms(99):.0f} ms > baseline p99 + 2 Redis timeouts = {bound_ms:.0f} ms"
        for p in slow
        if p.load.ms(99) > bound_ms
    ]
    missed += [
        f"{p.delay_ms} ms: {p.redis_clients} Redis connections > {REDIS_MAX_CONNECTIONS}"
        for p in phases
        if p.redis_clients > REDIS_MAX_CONNECTIONS
    ]
    if phases[-1].gateway_fds > 2 * baseline.gateway_fds:
        missed.append(f"gateway file descriptors {baseline.gateway_fds} -> {phases[-1].gateway_fds}")
    if phases[-1].gateway_rss > 1.25 * baseline.gateway_rss:
        missed.append(f"gateway memory {baseline.gateway_rss >> 20} -> {phases[-1].gateway_rss >> 20} MiB")
    return Verdict(missed)


def report(phases: list[Phase]) -> Path:
    result = verdict(phases)
    rows = [
        [
            p.delay_ms,
            p.load.ms(50),
            p.load.ms(99),
            p.load.per_second,
            p.redis_clients,
            p.gateway_fds,
            p.gateway_rss / 2**20,
        ]  # fmt: skip
        for p in phases
    ]
    columns = ["Redis delay (ms)", "p50 (ms)", "p99 (ms)", "answers/s", "Redis connections", "gateway fds",
               "gateway RSS (MiB)"]  # fmt: skip
    title = f"Slow Redis behind a proxy ({CLIENTS} clients; verdict: {result.summary()})"
    return write("slow_redis", title, columns, rows, {"missed": result.missed}, OUTPUT_DIR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = scenario_parser(__doc__)
    parser.add_argument("--requests", type=int, default=400, help="per phase")
    args = parser.parse_args(argv)
    work = ROOT / "build" / "chaos" / "slow-redis-stack"
    delay_file = work / "redis-delay-ms"
    delay_file.parent.mkdir(parents=True, exist_ok=True)
    delay_file.write_text("0")
    bodies = UniqueBodies()
    with stack_behind_proxy(args.repository, args.triton_venv, work, delay_file) as stack:
        phases = run_phases(stack, delay_file, args.requests, bodies)
    report(phases)
    return 0 if verdict(phases).passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
