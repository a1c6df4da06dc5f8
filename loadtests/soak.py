"""`make soak`: mixed load for a long time (default 10 minutes); no errors, resident memory stable.

Starts the local stack, warms it with the mixed scenario (not judged: caches, pools and numba's
kernels fill up), records each process's resident memory (children included: Triton's backend
stubs), runs the mixed scenario for `--duration` with an error-ratio SLO of 0, and records memory
again. Fails when Locust fails its SLOs or a service or Triton grew by more than `--max-growth` (10 %);
Redis is reported, not judged (the cache grows by design).
Writes `soak.json` beside Locust's reports in `--out`. Not part of `make test` (it takes minutes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from devstack.groups import resident_bytes
from loadtests.run_local import ROOT, local_stack, locust_command

# Redis is reported but not judged: it grows by design, one entry per new result (bounded by its
# maxmemory with LRU eviction in compose and Helm).
JUDGED = ("gateway", "preprocess", "ensemble", "triton")


def growth_violations(before: Mapping[str, int], after: Mapping[str, int], max_growth: float) -> list[str]:
    """Processes whose resident memory grew by more than `max_growth` (a fraction), as messages."""
    return [
        f"{name}: {before[name] / 2**20:.0f} -> {after[name] / 2**20:.0f} MiB "
        f"(+{(after[name] - before[name]) / before[name]:.1%} > {max_growth:.0%})"
        for name in before
        if after.get(name, 0) > before[name] * (1 + max_growth)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.soak", description=__doc__)
    parser.add_argument("--duration", default="10m")
    parser.add_argument("--warmup", default="60s")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "soak")
    parser.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--triton-venv", type=Path, default=ROOT / ".venv-triton")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    with local_stack(args.model_repository, args.triton_venv, args.out / "stack") as stack:
        host = stack.config.url("gateway")
        warm = locust_command("mixed", host, args.out / "warmup", args.users, args.users, args.warmup)
        (args.out / "warmup").mkdir(exist_ok=True)
        subprocess.run(warm, cwd=ROOT, check=False)
        before = {name: resident_bytes(p.popen.pid) for name, p in stack.processes.items()}
        soak = locust_command(
            "mixed", host, args.out, args.users, args.users, args.duration, ["--slo-error-ratio", "0"]
        )
        locust = subprocess.run(soak, cwd=ROOT, check=False).returncode
        after = {name: resident_bytes(p.popen.pid) for name, p in stack.processes.items()}

    violations = growth_violations({n: before[n] for n in JUDGED}, after, args.max_growth)
    report = {
        "duration": args.duration,
        "users": args.users,
        "locust_exit_code": locust,
        "resident_mib": {
            name: {"before": round(before[name] / 2**20, 1), "after": round(after[name] / 2**20, 1)}
            for name in before
        },
        "max_growth": args.max_growth,
        "judged": list(JUDGED),
        "violations": violations,
        "passed": locust == 0 and not violations,
    }
    (args.out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    for name, mib in report["resident_mib"].items():
        print(f"{name:<11} {mib['before']:>8.1f} -> {mib['after']:>8.1f} MiB")
    print("\n".join(violations) or "memory: no process grew beyond the bound")
    print(f"soak {'passed' if report['passed'] else 'FAILED'}: {args.out / 'soak.json'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
