"""`make loadtest`: run the Locust scenarios headless, one after another, against a local stack or `--host`.

Without `--host`, starts the local stack (devstack's LocalStack) on free ports with the rate limit
off, runs every scenario, and stops the stack. Writes per scenario to `--out`: `<scenario>_stats.csv`
(and Locust's other CSVs), `<scenario>.html`, `<scenario>-slo.json`. Exit status 1 when any
scenario fails its SLOs (or Locust fails), 0 otherwise. Research use only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devstack.stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
SCENARIOS = {"cold": "ColdUser", "hot": "HotUser", "mixed": "MixedUser", "batch": "BatchUser"}


def locust_command(
    scenario: str,
    host: str,
    out: Path,
    users: int,
    spawn_rate: float,
    duration: str,
    extra: Sequence[str] = (),
) -> list[str]:
    """The headless Locust command line of one scenario."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "-u",
        str(users),
        "-r",
        f"{spawn_rate:g}",
        "-t",
        duration,
        "--host",
        host,
        "--csv",
        str(out / scenario),
        "--html",
        str(out / f"{scenario}.html"),
        "--slo-report",
        str(out / f"{scenario}-slo.json"),
        *extra,
        SCENARIOS[scenario],
    ]


@contextlib.contextmanager
def local_stack(
    model_repository: Path, triton_venv: Path, work_dir: Path, environment: dict[str, str] | None = None
) -> Iterator[LocalStack]:
    """The local stack on free ports (rate limit off unless set), its services given `environment`,
    started and stopped around the block."""
    from devstack.stack import LocalStack, StackConfig, StackPorts
    from pcam_core.release import RELEASE_FILENAME

    if not (model_repository / RELEASE_FILENAME).exists():
        raise SystemExit(f"No release in {model_repository}: run `make repository` first")
    # A load test from one address would hit the per-client limit (1200/min) within seconds.
    os.environ.setdefault("PCAM_GATEWAY_RATE_LIMIT_PER_MINUTE", "0")
    config = StackConfig(
        model_repository=model_repository.resolve(),
        triton_venv=triton_venv.resolve(),
        work_dir=work_dir.resolve(),
        ports=StackPorts.free(),
        service_environment=dict(environment or {}),
    )
    print(f"Starting the local stack (logs in {config.work_dir / 'logs'})", flush=True)
    with LocalStack(config) as stack:
        yield stack
    print("Stopped the local stack.", flush=True)


def summary_line(scenario: str, report_path: Path, returncode: int) -> str:
    """One line of the final table, from the scenario's SLO report."""
    try:
        r = json.loads(report_path.read_text())
    except (OSError, ValueError):
        return f"{scenario:<6} no SLO report (locust exit code {returncode})"
    m = r["measured"]
    verdict = "pass" if r["passed"] and returncode == 0 else "FAIL"
    line = (
        f"{scenario:<6} {m['requests']:>8} {r['rps']:>8.1f} {r['median_ms']:>8.0f} {m['p95_ms']:>8.0f}"
        f" {m['p99_ms']:>8.0f} {m['error_ratio']:>8.4f}  {verdict}"
    )
    return line + "".join(f"\n       {v['message']}" for v in r["violations"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.run_local", description=__doc__)
    parser.add_argument("--host", default="", help="an already running gateway; empty: start the local stack")
    parser.add_argument(
        "--scenario", default="all", help=f"comma-separated of {', '.join(SCENARIOS)}, or all"
    )
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--spawn-rate", type=float, default=0, help="users per second (0: all at once)")
    parser.add_argument("--duration", default="30s", help="per scenario, e.g. 60s, 5m")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "loadtest")
    parser.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--triton-venv", type=Path, default=ROOT / ".venv-triton")
    parser.add_argument("locust_args", nargs="*", help="passed to locust (after --), e.g. --slo-p99-ms 800")
    args = parser.parse_args(argv)

    scenarios = list(SCENARIOS) if args.scenario == "all" else args.scenario.split(",")
    if unknown := [s for s in scenarios if s not in SCENARIOS]:
        parser.error(f"unknown scenario {', '.join(unknown)}: choose from {', '.join(SCENARIOS)} or all")
    if args.host and not args.host.startswith(("http://", "https://")):
        parser.error(f"--host must be an http:// or https:// URL, not {args.host!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    # SIGTERM unwinds like Ctrl-C, so the stack's context manager stops every process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with contextlib.ExitStack() as stack:
        host = args.host or stack.enter_context(
            local_stack(args.model_repository, args.triton_venv, args.out / "stack")
        ).config.url("gateway")
        results = []
        for scenario in scenarios:
            command = locust_command(
                scenario,
                host,
                args.out,
                args.users,
                args.spawn_rate or args.users,
                args.duration,
                args.locust_args,
            )
            (args.out / f"{scenario}-slo.json").unlink(missing_ok=True)  # never read a stale verdict
            print(f"\n== {scenario} ({SCENARIOS[scenario]}) against {host}", flush=True)
            results.append((scenario, subprocess.run(command, cwd=ROOT).returncode))

    print(f"\n{'':<6} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>8}")
    for scenario, code in results:
        print(summary_line(scenario, args.out / f"{scenario}-slo.json", code))
    print(f"Reports: {args.out}/<scenario>.html, <scenario>_stats.csv, <scenario>-slo.json")
    return 1 if any(code != 0 for _, code in results) else 0


if __name__ == "__main__":
    sys.exit(main())
