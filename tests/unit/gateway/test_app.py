"""Gateway request handling that is decided before any dependency is called."""

import asyncio

import pytest
from fastapi.testclient import TestClient

from pcam_core.schemas import PREDICTION_EXAMPLE, PatchResult
from services.gateway.app import create_app
from services.gateway.breaker import CircuitBreaker
from services.gateway.ratelimit import RateLimiter
from tests.unit.gateway.fakes import FakeRedis, unreachable_settings

PROBLEM = "application/problem+json"


@pytest.fixture
def client():
    settings = unreachable_settings(max_image_bytes=4096, max_images=2, retry_after_s=7)
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


def test_explain_on_more_images_than_allowed_is_422_before_any_work() -> None:
    settings = unreachable_settings(max_explain_images=1)
    with TestClient(create_app(settings)) as client:
        files = [("files", (str(i), b"x")) for i in range(2)]
        response = client.post("/v1/predict/batch", params={"explain": "true"}, files=files)
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("explain-batch-size") and "at most 1" in response.json()["detail"]


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


class RecordingPredictor:
    """Stands in for Predictor after startup: records the call, answers after `delay_s`."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s, self.calls = delay_s, []

    async def predict(self, uploads, options, read_cache=True):
        self.calls.append((uploads, options, read_cache))
        await asyncio.sleep(self.delay_s)
        result = {**PREDICTION_EXAMPLE, "operating_point": options.operating_point, "tta": options.tta}
        del result["cached"], result["request_id"]
        return [PatchResult(**result)] * len(uploads), [False] * len(uploads)


def test_options_reach_the_predictor_canonical(client) -> None:
    client.app.state.predictor = recorder = RecordingPredictor()
    response = client.post(
        "/v1/predict?operating_point=conservative&tta=true&explain=1&cache=false",
        files={"file": ("a.png", b"x")},
    )
    assert response.status_code == 200, response.text
    _, options, read_cache = recorder.calls[0]
    assert options.model_dump() == {
        "operating_point": "screening",
        "tta": True,
        "explain": "occlusion",  # explain=1 keeps its meaning from before there was a choice
        "abstain": False,
    }
    assert read_cache is False
    body = response.json()
    assert body["tta"] is True and body["degraded"] is False and body["missing_members"] == []
    client.post("/v1/predict/batch", files=[("files", ("a", b"x"))])
    _, options, read_cache = recorder.calls[1]
    assert options.model_dump() == {
        "operating_point": "balanced",
        "tta": False,
        "explain": None,
        "abstain": False,
    }
    assert read_cache is True


def test_an_invalid_boolean_option_is_a_422_problem(client) -> None:
    response = client.post("/v1/predict?tta=maybe", files={"file": ("a.png", b"x")})
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert "tta" in response.json()["detail"]


def test_the_request_deadline_answers_504_with_retry_after() -> None:
    settings = unreachable_settings(request_timeout_s=0.1, retry_after_s=7)
    with TestClient(create_app(settings)) as client:
        client.app.state.predictor = RecordingPredictor(delay_s=5)  # would answer 200 after 5 s
        response = client.post("/v1/predict", files={"file": ("a.png", b"x")})
    assert response.status_code == 504 and response.headers["retry-after"] == "7"
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/deadline-exceeded")


def test_rate_limit_is_429_with_retry_after_per_client_address(client) -> None:
    client.app.state.limiter = RateLimiter(FakeRedis(), 2, CircuitBreaker("redis-app-test", 3, 10))
    assert [client.get("/healthz").status_code for _ in range(3)] == [200] * 3  # not limited
    answers = [client.post("/v1/predict", files={"file": ("a.png", b"x")}) for _ in range(2)]
    assert [a.status_code for a in answers] == [503, 503]  # counted, then answered (dependencies are down)
    assert [a.headers["ratelimit"].split(";")[1] for a in answers] == ["r=1", "r=0"]
    refused = client.get("/v1/models")
    assert refused.status_code == 429 and refused.headers["content-type"] == PROBLEM
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # The IETF RateLimit fields on the refusal too: none left, until the window's end.
    assert refused.headers["ratelimit-policy"] == '"per-client";q=2;w=60'
    assert refused.headers["ratelimit"] == f'"per-client";r=0;t={refused.headers["retry-after"]}'
    assert "ratelimit" not in client.get("/healthz").headers  # probes are not limited
    assert refused.json()["type"].endswith("/rate-limited")


def test_openapi_documents_every_route_with_examples(client) -> None:
    spec = client.get("/openapi.json").json()
    expected = {
        ("/v1/predict", "post"): {"200", "400", "408", "413", "415", "422", "429", "502", "503", "504"},
        ("/v1/predict/batch", "post"): {"200", "400", "408", "413", "415", "422", "429", "502", "503", "504"},
        ("/v1/models", "get"): {"200", "429", "502", "503"},
    }
    for (path, method), statuses in expected.items():
        operation = spec["paths"][path][method]
        assert set(operation["responses"]) == statuses, path
        assert operation["responses"]["200"]["content"]["application/json"]["example"]
        for status in statuses - {"200"}:
            content = operation["responses"][status]["content"]
            examples = content[PROBLEM]["examples"]
            assert all(e["value"]["status"] == int(status) for e in examples.values()), (path, status)
        assert "security" not in operation  # no keys configured: authentication is off
    names = {p["name"] for p in spec["paths"]["/v1/predict"]["post"]["parameters"]}
    assert names == {"operating_point", "tta", "explain", "cache", "abstain"}
    assert {"multipart/form-data", "image/png"} <= set(
        spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    )
    assert {"tta", "degraded", "missing_members", "explanation"} <= set(
        spec["components"]["schemas"]["Prediction"]["properties"]
    )
