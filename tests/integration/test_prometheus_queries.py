"""Every dashboard panel query and every rule expression, run by a real Prometheus against the stack.

Debian's Prometheus scrapes the gateway, preprocess, ensemble and Triton of the session's stack every
second while the test sends traffic; then each query goes through Prometheus's HTTP API (Grafana's
$__rate_interval substituted). Each must parse; each panel must return data, except GPU panels on
this CPU-only Triton.
"""

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from devstack.ports import free_port
from devstack.processes import ManagedProcess, http_ok
from devstack.stack import LocalStack
from tests.integration.test_predict import unique_png

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULES = ROOT / "deploy" / "prometheus" / "pcam-rules.yml"
RATE_INTERVAL = "30s"
GPU_ONLY = "GPU only"


def panels() -> list[tuple[str, str, str, bool]]:
    """(dashboard, panel title, query, GPU only) of every panel target."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                query = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
                found.append((path.stem, panel["title"], query, GPU_ONLY in panel.get("description", "")))
    return found


@pytest.fixture(scope="module")
def prometheus(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus scraping the stack every second; its base URL."""
    server = shutil.which("prometheus")
    assert server, "prometheus is needed: `make system-deps` (Debian package prometheus)"
    work, port, ports = tmp_path_factory.mktemp("prometheus"), free_port(), stack.config.ports
    targets = [
        f"127.0.0.1:{p}" for p in (ports.gateway, ports.preprocess, ports.ensemble, ports.triton_metrics)
    ]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "pcam", "static_configs": [{"targets": targets}]}],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    argv = [server, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    process = ManagedProcess("prometheus", argv, work / "prometheus.log")
    try:
        process.wait_until(http_ok(f"http://127.0.0.1:{port}/-/ready"), 60, "ready")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


def _query(prometheus: str, query: str) -> list:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=30)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{query}: {body}"
    return body["data"]["result"]


@pytest.fixture(scope="module")
def scraped(prometheus: str, stack: LocalStack, patch_paths: list[Path]) -> str:
    """Traffic through the gateway (new and repeated images) while Prometheus scrapes."""
    with httpx.Client(base_url=stack.config.url("gateway"), timeout=60) as gateway:
        for _ in range(6):
            for i, path in enumerate(patch_paths[:6]):
                upload = unique_png(path, 20_000 + i)  # the same bytes every round: hits after the first
                gateway.post(
                    "/v1/predict", params={"operating_point": "screening"}, files={"file": ("p.png", upload)}
                )
            gateway.post("/v1/predict", files={"file": ("bad.png", b"not an image")})  # a rejected upload
            time.sleep(1.5)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _query(prometheus, "pcam_ensemble_decisions_total"):
        time.sleep(1)
    time.sleep(3)  # a few more scrapes: every rate window holds at least two samples
    return prometheus


@pytest.mark.parametrize(("dashboard", "title", "query", "gpu_only"), panels(), ids=lambda v: str(v)[:40])
def test_every_panel_query_returns_data(scraped: str, dashboard: str, title: str, query: str, gpu_only: bool):
    result = _query(scraped, query)
    if not gpu_only:
        assert result, f"{dashboard} / {title}: no data for {query}"


def test_every_rule_expression_runs(scraped: str):
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    for rule in rules:
        _query(scraped, rule["expr"])  # parses and evaluates (alerts need not fire on healthy traffic)
