"""Gateway request handling that is decided before any dependency is called."""

import pytest
from fastapi.testclient import TestClient

from devstack.processes import free_port
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings

PROBLEM = "application/problem+json"


@pytest.fixture
def client():
    dead = f"http://127.0.0.1:{free_port()}"
    settings = GatewaySettings(
        preprocess_url=dead,
        ensemble_url=dead,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        max_image_bytes=4096,
        max_images=2,
        retry_after_s=7,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_declared_oversized_raw_body_is_413(client) -> None:
    response = client.post("/v1/predict", content=b"x" * 5000, headers={"content-type": "image/png"})
    assert response.status_code == 413 and response.headers["content-type"] == PROBLEM


def test_json_instead_of_an_image_is_415(client) -> None:
    response = client.post("/v1/predict", json={"image": "aGVsbG8="})
    assert response.status_code == 415 and "multipart/form-data" in response.json()["detail"]


def test_too_many_batch_files_is_a_problem(client) -> None:
    response = client.post("/v1/predict/batch", files=[("files", (str(i), b"x")) for i in range(3)])
    assert response.status_code == 413 and response.headers["content-type"] == PROBLEM


def test_unknown_operating_point_is_422_before_any_work(client) -> None:
    response = client.post("/v1/predict?operating_point=nope", files={"file": ("a", b"x")})
    assert response.status_code == 422 and "nope" in response.json()["detail"]


def test_dependencies_down_is_503_with_retry_after(client) -> None:
    response = client.post("/v1/predict", files={"file": ("a.png", b"x")})
    assert response.status_code == 503 and response.headers["retry-after"] == "7"
    assert response.headers["content-type"] == PROBLEM


def test_readyz_reports_each_dependency(client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "redis": False, "preprocess": False, "ensemble": False}


def test_malformed_multipart_is_400(client) -> None:
    response = client.post(
        "/v1/predict",
        content=b"--nope\r\ngarbage",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status_code == 400 and response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/malformed-multipart")
