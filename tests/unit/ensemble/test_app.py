"""Ensemble request handling that is decided before Triton answers (Triton is absent here)."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from devstack.ports import free_port
from pcam_core import wire
from services.ensemble.app import create_app
from services.ensemble.settings import EnsembleSettings
from tests.unit.common.release_fixture import write_test_release

FRAME = {"content-type": wire.MEDIA_TYPE}


@pytest.fixture
def client(tmp_path):
    write_test_release(tmp_path, "rel-e")
    settings = EnsembleSettings(
        model_repository=tmp_path,
        triton_grpc_url=f"127.0.0.1:{free_port()}",
        triton_timeout_s=1,
        max_images=4,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def frame(n: int, release: str = "rel-e") -> bytes:
    return wire.encode(wire.Batch(np.zeros((n, 96, 96, 3), np.uint8), release=release))


def test_release_summary(client) -> None:
    body = client.get("/v1/release").json()
    assert body["release_id"] == "rel-e" and body["members"][0]["name"] == "m1"


def test_malformed_frame_is_400(client) -> None:
    response = client.post("/v1/infer", content=b"\x00\x00\x00\x05{}", headers=FRAME)
    assert response.status_code == 400 and response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("n", [0, 5])
def test_batch_size_outside_limits_is_422(client, n: int) -> None:
    response = client.post("/v1/infer", content=frame(n), headers=FRAME)
    assert response.status_code == 422 and f"Received {n}" in response.json()["detail"]


def test_triton_down_is_503_with_retry_after(client) -> None:
    response = client.post("/v1/infer", content=frame(1), headers=FRAME)
    assert response.status_code == 503 and "retry-after" in response.headers
    assert "Model server unavailable" in response.json()["detail"]


@pytest.mark.parametrize("release", ["rel-old", None])
def test_batch_for_another_release_is_refused(client, release) -> None:
    body = wire.encode(wire.Batch(np.zeros((1, 96, 96, 3), np.uint8), release=release))
    response = client.post("/v1/infer", content=body, headers=FRAME)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "rel-e" in response.json()["detail"]


def test_not_ready_without_triton(client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["members"] == {"m1": False}
