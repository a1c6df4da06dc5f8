"""The serving, ceiling and slide benchmarks run end to end on tiny loads, so they cannot break unnoticed.

Only that they run and report every measure is checked here: their figures come from `make bench`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# About two minutes of load on 2 cores: `make test-slow` runs them (CI runs both).
pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
MEASURES = [
    "overhead p50 (ms)",
    "overhead p95 (ms)",
    "batch of 8 p50 (ms)",
    "throughput (patches/s)",
    "cache hits (req/s)",
    "cache hits p99 (ms)",
    "gateway CPU per request (ms)",
    "load client CPU per request (ms)",
]


def test_the_serving_benchmark_runs_and_reports_every_measure(model_repository: Path, tmp_path: Path) -> None:
    # Enough cache hits that /healthz's CPU spans some of /proc's 10 ms ticks.
    small = ["--rounds", "1", "--requests", "3", "--load-requests", "32", "--concurrency", "8",
             "--batch", "8", "--batch-requests", "2", "--batch-concurrency", "2",
             "--cache-concurrency", "8", "--cache-requests", "400"]  # fmt: skip
    reports = run_benchmark("serving", ["--repository", str(model_repository), *small], tmp_path)
    serving = json.loads((reports / "serving.json").read_text())
    assert [row[0] for row in serving["rows"]] == MEASURES
    assert all(row[2] > 0 and row[3] > 0 for row in serving["rows"])  # stack and baseline both measured
    cpu = json.loads((reports / "serving-cpu.json").read_text())
    used = {row[0]: row[1:] for row in cpu["rows"]}
    assert {"gateway", "preprocess", "ensemble", "triton", "load client"} <= set(used)
    assert all(ms > 0 for name in ("gateway", "preprocess", "ensemble") for ms in used[name])


def test_the_ceiling_benchmark_builds_its_release_and_reports_both_loads_both_ways(tmp_path: Path) -> None:
    repository = tmp_path / "ceiling"
    small = ["--rounds", "1", "--batch", "8", "--batch-requests", "4", "--batch-concurrency", "2",
             "--concurrency", "4", "--requests", "16"]  # fmt: skip
    reports = run_benchmark("ceiling", ["--repository", str(repository), *small], tmp_path)
    assert json.loads((repository / "release.json").read_text())["release_id"].startswith("ceiling-")
    ceiling = json.loads((reports / "ceiling.json").read_text())
    rows = {(row[0], row[1]): row[2:] for row in ceiling["rows"]}
    loads = ("2 clients, tensor batches of 8", "4 single-patch clients")
    modes = ("in the gRPC message", "in shared memory")
    assert list(rows) == [(load, mode) for load in loads for mode in modes]
    for rate, gateway, preprocess, ensemble, services, *_, cores in rows.values():
        assert rate > 0 and services > 0 and cores > 0
        assert services == pytest.approx(gateway + preprocess + ensemble, abs=0.01)


def test_the_slide_benchmark_reports_tiles_per_second_and_client_cpu_three_ways(
    model_repository: Path, tmp_path: Path
) -> None:
    small = ["--rounds", "1", "--size", "384", "480", "--batch", "64", "--concurrency", "2"]
    reports = run_benchmark("slides", ["--repository", str(model_repository), *small], tmp_path)
    slides = json.loads((reports / "slides.json").read_text())
    assert [row[0] for row in slides["rows"]] == ["reader only", "in-process", "stack"]
    assert all(float(row[1]) > 0 and row[3] > 0 for row in slides["rows"])
    assert slides["tiles"] > 0 and slides["whole_slide"]["tiles"] > 0
    assert slides["stack_cpu_ms_per_tile"]["services"] > 0


def run_benchmark(name: str, arguments: list[str], folder: Path) -> Path:
    """Run `python -m benchmarks.<name>` in `folder` (its reports go there, not over the checkout's);
    return the reports' folder."""
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *arguments],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return folder / "build" / "bench"
