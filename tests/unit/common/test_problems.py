from contextlib import asynccontextmanager

from fastapi import Request
from fastapi.testclient import TestClient

from pcam_core.errors import ImageRejected, RateLimited
from pcam_core.problems import PROBLEM_MEDIA_TYPE, domain_error, problem_body
from services.common.app import create_service_app
from services.common.settings import ServiceSettings

SETTINGS = ServiceSettings(port=8000)


@asynccontextmanager
async def _noop(_app):
    yield


def _client() -> TestClient:
    app = create_service_app("test", "t", "d", _noop, max_body_bytes=1024, settings=SETTINGS)

    @app.get("/teapot")
    async def teapot() -> None:
        raise RateLimited("short and stout", retry_after_s=3)

    @app.get("/typed")
    async def typed(n: int) -> int:
        return n

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    return TestClient(app, raise_server_exceptions=False)


def test_problem_is_rfc9457_with_request_id_echoed() -> None:
    response = _client().get("/teapot", headers={"X-Request-ID": "abc-123"})
    assert response.status_code == 429
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.headers["retry-after"] == "3"
    assert response.headers["x-request-id"] == "abc-123"
    body = response.json()
    assert body["type"].endswith("/rate-limited") and body["detail"] == "short and stout"
    assert body["request_id"] == "abc-123"


def test_malformed_request_id_is_replaced() -> None:
    response = _client().get("/teapot", headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.headers["x-request-id"] != "bad id\twith spaces"
    assert len(response.headers["x-request-id"]) == 32


def test_validation_errors_and_unknown_routes_are_problems() -> None:
    client = _client()
    invalid = client.get("/typed", params={"n": "x"})
    assert invalid.status_code == 422 and invalid.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert "n" in invalid.json()["detail"]
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM_MEDIA_TYPE


def test_unexpected_errors_are_bare_problems_with_the_request_id() -> None:
    response = _client().get("/boom", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500 and response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert "secret" not in response.text
    assert response.json()["request_id"] == "boom-1" and response.headers["x-request-id"] == "boom-1"


def test_problem_survives_a_hop() -> None:
    original = ImageRejected("Received 10x10.", kind="wrong-size", extra=1)
    rebuilt = domain_error({**problem_body(original), "request_id": "r"})
    assert type(rebuilt) is ImageRejected
    assert problem_body(rebuilt) == problem_body(original)


def test_chunked_bodies_are_capped_without_content_length() -> None:
    app = create_service_app("test", "t", "d", _noop, max_body_bytes=1000, settings=SETTINGS)

    @app.post("/echo")
    async def echo(request: Request) -> int:
        return len(await request.body())

    client = TestClient(app)
    chunks = (b"x" * 300 for _ in range(5))  # a generator: sent chunked, no Content-Length
    response = client.post("/echo", content=chunks)
    assert response.status_code == 413 and response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert client.post("/echo", content=(b"x" * 300 for _ in range(3))).json() == 900
