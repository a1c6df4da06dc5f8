"""HTTP metrics by route template and status, /metrics left out, and the release-info gauge."""

import pytest
from fastapi import FastAPI, HTTPException, Response
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from services.common.metrics import HttpMetricsMiddleware, ReleaseInfo

SERVICE = "metrics-test"


def requests(route: str, method: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "pcam_http_requests_total", {"service": SERVICE, "route": route, "method": method, "status": status}
    )
    return value or 0.0


def timed(route: str, method: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "pcam_http_request_duration_seconds_count",
        {"service": SERVICE, "route": route, "method": method, "status": status},
    )
    return value or 0.0


@pytest.fixture
def client():
    app = FastAPI()
    app.add_middleware(HttpMetricsMiddleware, service=SERVICE)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        if item_id == 0:
            raise HTTPException(404)
        return {"id": item_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response("ok")

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_requests_and_latency_are_labelled_by_route_template_and_status(client) -> None:
    before = requests("/items/{item_id}", "GET", "200"), timed("/items/{item_id}", "GET", "200")
    missing = requests("/items/{item_id}", "GET", "404")
    client.get("/items/1")
    client.get("/items/2")
    client.get("/items/0")
    assert requests("/items/{item_id}", "GET", "200") == before[0] + 2
    assert timed("/items/{item_id}", "GET", "200") == before[1] + 2
    assert requests("/items/{item_id}", "GET", "404") == missing + 1
    assert (
        REGISTRY.get_sample_value(
            "pcam_http_requests_total",
            {"service": SERVICE, "route": "/items/1", "method": "GET", "status": "200"},
        )
        is None
    )  # never the raw path


def test_an_unhandled_error_counts_as_a_500(client) -> None:
    before = requests("/boom", "GET", "500")
    assert client.get("/boom").status_code == 500
    assert requests("/boom", "GET", "500") == before + 1


def test_unknown_paths_and_methods_do_not_grow_the_label_set(client) -> None:
    unmatched, other = requests("unmatched", "GET", "404"), requests("/items/{item_id}", "OTHER", "405")
    client.get("/no/such/path/42")
    client.request("BREW", "/items/1")
    assert requests("unmatched", "GET", "404") == unmatched + 1
    assert requests("/items/{item_id}", "OTHER", "405") == other + 1


def test_metrics_scrapes_are_neither_counted_nor_timed(client) -> None:
    for _ in range(3):
        assert client.get("/metrics").status_code == 200
    assert requests("/metrics", "GET", "200") == 0
    assert timed("/metrics", "GET", "200") == 0


def test_release_info_names_only_the_serving_release() -> None:
    info = ReleaseInfo("release-info-test")

    def value(release: str) -> float | None:
        return REGISTRY.get_sample_value(
            "pcam_release_info", {"service": "release-info-test", "release": release}
        )

    info.set("rel-1")
    assert value("rel-1") == 1
    info.set("rel-2")
    assert value("rel-1") is None and value("rel-2") == 1
    info.set("rel-2")
    assert value("rel-2") == 1
