"""The load tests (loadtests/) against the real stack: each scenario runs without a failure within
generous SLOs, hot requests are cache hits, and a broken SLO or failing requests make Locust exit 1.

Locust runs as a subprocess (it monkey-patches the process that imports it with gevent), against a
gateway of its own with an API key and the rate limit off, sharing the session's preprocess, ensemble
and Redis: a load test spends the session gateway's 1200 requests a minute per address in seconds,
which would turn other tests' requests into 429s.
"""

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devstack.stack import LocalStack
from services.gateway.auth import hash_key, new_key
from tests.integration.test_gateway_api import start_gateway

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
GENEROUS = ["--slo-p95-ms", "30000", "--slo-p99-ms", "30000", "--slo-error-ratio", "0"]


@dataclass(frozen=True)
class LoadGateway:
    url: str
    api_key: str


@dataclass(frozen=True)
class Run:
    returncode: int
    output: str
    counts: dict[str, tuple[int, int]]
    """Request name -> (requests, failures), from Locust's `_stats.csv`."""
    report: dict


@pytest.fixture(scope="module")
def load_gateway(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadGateway]:
    work = tmp_path_factory.mktemp("loadtest-gateway")
    key = new_key()
    (work / "api-keys").write_text(f"loadtest:{hash_key(key)}\n")
    process, url = start_gateway(
        stack,
        work,
        "gateway-loadtest",
        stack.config.ports.redis,
        API_KEY_FILE=str(work / "api-keys"),
        RATE_LIMIT_PER_MINUTE="0",
    )
    try:
        yield LoadGateway(url, key)
    finally:
        process.stop()


def run_locust(
    gateway: LoadGateway, out: Path, user_class: str, *args: str, duration: str = "4s", users: int = 2
) -> Run:
    """A headless Locust run of one scenario; its exit code, output, CSV counts and SLO report."""
    command = [
        *(sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--headless", "--only-summary"),
        *("-u", str(users), "-r", str(users), "-t", duration, "--host", gateway.url),
        *("--csv", str(out / "run"), "--slo-report", str(out / "slo.json"), *args, user_class),
    ]
    env_key = {"PCAM_API_KEY": gateway.api_key} if "--api-key" not in args else {}
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**_environ(), **env_key},
    )
    with (out / "run_stats.csv").open() as f:
        counts = {r["Name"]: (int(r["Request Count"]), int(r["Failure Count"])) for r in csv.DictReader(f)}
    report = json.loads((out / "slo.json").read_text())
    return Run(done.returncode, done.stdout + done.stderr, counts, report)


def _environ() -> dict[str, str]:
    """This environment without load-test settings a developer may have exported."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PCAM_API_KEY", "PCAM_LOADTEST_"))}


def cache_hits(gateway: LoadGateway) -> float:
    text = httpx.get(f"{gateway.url}/metrics").text
    found = re.search(r'^pcam_gateway_cache_lookups_total\{result="hit"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize(
    ("user_class", "names", "args"),
    [
        ("ColdUser", {"cold"}, ()),
        ("BatchUser", {"batch"}, ("--batch-size", "3")),
        ("MixedUser", {"cold", "hot", "warmup"}, ("--hot-ratio", "0.5", "--hot-set-size", "2")),
    ],
)
def test_scenario_runs_without_failures_within_generous_slos(
    load_gateway: LoadGateway, tmp_path: Path, user_class: str, names: set[str], args: tuple[str, ...]
) -> None:
    run = run_locust(load_gateway, tmp_path, user_class, *GENEROUS, *args)
    assert run.returncode == 0, run.output
    assert run.report["passed"] is True and run.report["violations"] == []
    assert run.report["user_classes"] == [user_class]
    assert set(run.counts) == names | {"Aggregated"}, run.counts
    assert all(requests > 0 and failures == 0 for requests, failures in run.counts.values()), run.counts
    assert run.report["measured"]["requests"] >= run.counts["Aggregated"][0]
    assert run.report["measured"]["failures"] == 0


def test_hot_requests_are_cache_hits(load_gateway: LoadGateway, tmp_path: Path) -> None:
    before = cache_hits(load_gateway)
    run = run_locust(load_gateway, tmp_path, "HotUser", *GENEROUS, "--hot-set-size", "3", users=3)
    assert run.returncode == 0, run.output
    hot = next(m for m in run.report["per_name"] if m["name"] == "hot")
    assert hot["requests"] > 0 and hot["failures"] == 0  # every answer said `cached: true`
    assert (
        next(m for m in run.report["per_name"] if m["name"] == "warmup")["requests"] == 3
    )  # once per process
    assert cache_hits(load_gateway) - before >= hot["requests"]


def test_impossible_slo_exits_1_and_names_it(load_gateway: LoadGateway, tmp_path: Path) -> None:
    run = run_locust(load_gateway, tmp_path, "HotUser", *GENEROUS, "--slo-p95-ms", "0.001", duration="2s")
    assert run.returncode == 1, run.output
    assert run.counts["Aggregated"][1] == 0  # no failed request: the exit code is the gate's
    assert run.report["passed"] is False
    assert [(v["name"], v["slo"]) for v in run.report["violations"]] == [("Aggregated", "p95_ms")]
    assert run.report["thresholds"]["p95_ms"] == 0.001
    assert "SLO failed: Aggregated: p95_ms" in run.output


def test_failed_requests_fail_the_gate(load_gateway: LoadGateway, tmp_path: Path) -> None:
    # 5 s: under a loaded full suite the user's first request can take most of two.
    run = run_locust(load_gateway, tmp_path, "ColdUser", "--api-key", "pcam_wrong", duration="5s")
    assert run.returncode == 1, run.output
    requests, failures = run.counts["cold"]
    assert requests > 0 and failures == requests  # every 403 counted as a failure
    assert ("Aggregated", "error_ratio") in [(v["name"], v["slo"]) for v in run.report["violations"]]
