"""pcam_client against fake gateways (httpx.MockTransport) answering the public API's shapes."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

import pcam_client.client as client_module
from pcam_client import (
    AsyncPCamClient,
    ItemError,
    PCamAPIError,
    PCamClient,
    PCamConnectionError,
    PCamError,
    Prediction,
    ReleaseSummary,
)
from pcam_client.client import predict_params
from pcam_client.errors import parse_retry_after
from tests.unit.client.transports import recording

PNG = b"\x89PNG\r\n\x1a\n" + b"fake png body"


def prediction(data: bytes, operating_point: str = "balanced") -> dict:
    return {
        "probability": 0.75,
        "label": 1,
        "operating_point": operating_point,
        "threshold": 0.5,
        "uncertainty": 0.02,
        "members": {"a": 0.7, "b": 0.8},
        "quality": {"tissue_fraction": 0.9, "stain_normalized": True, "stain_skip_reason": None},
        "release": "r1",
        "sha256": hashlib.sha256(data).hexdigest(),
        "cached": False,
        "request_id": "rid",
    }


def problem(status: int, kind: str, detail: str, request_id: str = "rid-1") -> dict:
    return {"type": f"https://pcam.example/problems/{kind}", "title": kind.replace("-", " ").capitalize(),
            "status": status, "detail": detail, "request_id": request_id}  # fmt: skip


def parts(request: httpx.Request) -> list[tuple[str, str, str, bytes]]:
    """(field, filename, content type, bytes) of each multipart part."""
    body = request.read()
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    found = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        head, data = chunk.removeprefix(b"\r\n").split(b"\r\n\r\n", 1)
        text = head.decode()
        field = re.search(r'name="([^"]*)"', text)
        filename = re.search(r'filename="([^"]*)"', text)
        media = re.search(r"Content-Type: (\S+)", text)
        assert field and filename and media, text
        found.append((field[1], filename[1], media[1], data.removesuffix(b"\r\n")))
    return found


def answers(*responses: httpx.Response) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A gateway giving these answers in turn."""
    queue: Iterator[httpx.Response] = iter(responses)
    return recording(lambda request: next(queue))


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's sleeps, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(client_module, "_sleep", slept.append)

    async def asleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(client_module, "_asleep", asleep)
    return slept


def test_predict_sends_options_as_query_parameters_and_the_headers():
    transport, requests = recording(lambda r: httpx.Response(200, json=prediction(PNG, "screening")))
    with PCamClient("http://gw:8080", api_key="k3y", transport=transport) as client:
        result = client.predict(
            PNG, operating_point="conservative", tta=True, explain=True, cache=False, request_id="abc-1"
        )
    (request,) = requests
    assert request.method == "POST" and request.url.path == "/v1/predict"
    assert dict(request.url.params) == {
        "operating_point": "conservative",
        "tta": "true",
        "explain": "occlusion",  # True: the method explain=true always meant
        "cache": "false",
    }
    assert request.headers["X-API-Key"] == "k3y" and request.headers["X-Request-ID"] == "abc-1"
    assert parts(request) == [("file", "image.png", "image/png", PNG)]
    assert (
        isinstance(result, Prediction)
        and result.probability == 0.75
        and result.operating_point == "screening"
    )
    assert result.quality.stain_normalized is True and result.members == {"a": 0.7, "b": 0.8}


def test_query_parameter_names_are_the_gateways():
    """The names the client sends are the fields of the gateway's own query model."""
    from pcam_core.schemas import PredictOptions

    assert set(predict_params("balanced", True, True, False, True)) == set(PredictOptions.model_fields)


def test_defaults_send_no_options_and_no_key(tmp_path: Path):
    path = tmp_path / "patch.tif"
    path.write_bytes(b"II*\x00tiff bytes")
    transport, requests = recording(lambda r: httpx.Response(200, json=prediction(b"")))
    with PCamClient("http://gw", transport=transport) as client:
        client.predict(path)
        client.predict(str(path))
    for request in requests:
        assert request.url.query == b""
        assert "X-API-Key" not in request.headers and "X-Request-ID" not in request.headers
        assert parts(request) == [("file", "patch.tif", "image/tiff", b"II*\x00tiff bytes")]


def test_models_parses_the_release_summary():
    op = {"threshold": 0.3, "sensitivity": 0.95, "specificity": 0.6, "criterion": "sensitivity>=0.95"}
    body = {
        "release_id": "r1",
        "created_at": "2024-01-01T00:00:00Z",
        "research_use_only": True,
        "data": {"source": "synthetic", "checksums": {}, "description": "demo"},
        "members": [
            {
                "name": "a",
                "architecture": "seresnet18",
                "version": 1,
                "sha256": "0" * 64,
                "temperature": 1.5,
                "weight": 1.0,
                "metrics": {"auc": 0.9},
            }
        ],  # fmt: skip
        "ensemble_rule": "weighted_mean",
        "operating_points": {name: op for name in ("screening", "balanced", "high_specificity")},
        "operating_point_aliases": {"conservative": "screening"},
        "default_operating_point": "balanced",
    }
    transport, requests = recording(lambda r: httpx.Response(200, json=body))
    with PCamClient("http://gw", transport=transport) as client:
        summary = client.models()
    assert requests[0].method == "GET" and requests[0].url.path == "/v1/models"
    assert isinstance(summary, ReleaseSummary) and summary.release_id == "r1"
    assert summary.members[0].temperature == 1.5 and summary.operating_points["screening"].threshold == 0.3


def test_health_and_ready_not_ready_is_an_answer_not_a_retry(waits: list[float]):
    transport, requests = answers(
        httpx.Response(200, json={"status": "ok"}),
        httpx.Response(
            503, json={"status": "not ready", "redis": True, "preprocess": True, "ensemble": False}
        ),
        httpx.Response(200, json={"status": "ready", "redis": False, "preprocess": True, "ensemble": True}),
    )
    with PCamClient("http://gw", transport=transport) as client:
        assert client.health() == {"status": "ok"}
        down, up = client.ready(), client.ready()
    assert [r.url.path for r in requests] == ["/healthz", "/readyz", "/readyz"]
    assert not down.ready and down.model_extra == {"redis": True, "preprocess": True, "ensemble": False}
    assert up.ready and waits == []


@pytest.mark.parametrize("status", [400, 401, 403, 413, 415, 422])
def test_a_problem_raises_its_fields_and_a_client_error_is_never_retried(status: int, waits: list[float]):
    body = problem(status, "some-kind", "what went wrong", request_id="rid-9")
    transport, requests = answers(
        httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})
    )
    with PCamClient("http://gw", transport=transport) as client, pytest.raises(PCamAPIError) as caught:
        client.predict(PNG)
    error = caught.value
    assert (error.status, error.type, error.title, error.detail, error.request_id, error.retry_after) == (
        status, "https://pcam.example/problems/some-kind", "Some kind", "what went wrong", "rid-9", None
    )  # fmt: skip
    assert "what went wrong" in str(error) and "rid-9" in str(error)
    assert len(requests) == 1 and waits == []


def test_a_relative_problem_type_resolves_against_the_gateway_that_answered(waits: list[float]):
    body = {**problem(422, "wrong-size", "Received 10x10."), "type": "/problems/wrong-size"}
    transport, _ = answers(
        httpx.Response(422, json=body, headers={"content-type": "application/problem+json"})
    )
    with PCamClient("http://gw:8080", transport=transport) as client, pytest.raises(PCamAPIError) as caught:
        client.predict(PNG)
    assert caught.value.type == "http://gw:8080/problems/wrong-size"
    assert caught.value.kind == "wrong-size"


def test_an_error_without_a_problem_body_still_raises_an_api_error():
    transport, _ = answers(
        httpx.Response(502, text="<html>bad gateway</html>", headers={"X-Request-ID": "p1"})
    )
    with PCamClient("http://gw", transport=transport) as client, pytest.raises(PCamAPIError) as caught:
        client.models()
    error = caught.value
    assert (error.status, error.type, error.title) == (502, "about:blank", "Bad Gateway")
    assert error.detail == "<html>bad gateway</html>" and error.request_id == "p1"


def test_429_and_503_are_retried_after_retry_after(waits: list[float]):
    transport, requests = answers(
        httpx.Response(
            503, json=problem(503, "service-unavailable", "ensemble down"), headers={"Retry-After": "3"}
        ),
        httpx.Response(429, json=problem(429, "rate-limited", "slow down"), headers={"Retry-After": "1"}),
        httpx.Response(200, json=prediction(PNG)),
    )
    with PCamClient("http://gw", transport=transport, max_retries=2) as client:
        result = client.predict(PNG, operating_point="screening", request_id="r-7")
    assert result.probability == 0.75 and waits == [3.0, 1.0]
    # Every attempt is the same request: same options, same upload, same request id.
    assert {r.url.query for r in requests} == {b"operating_point=screening"}
    assert all(parts(r) == [("file", "image.png", "image/png", PNG)] for r in requests)
    assert {r.headers["X-Request-ID"] for r in requests} == {"r-7"}


def test_retries_are_bounded(waits: list[float]):
    unavailable = httpx.Response(
        503, json=problem(503, "service-unavailable", "ensemble down"), headers={"Retry-After": "2"}
    )
    transport, requests = recording(lambda r: unavailable)
    with (
        PCamClient("http://gw", transport=transport, max_retries=3) as client,
        pytest.raises(PCamAPIError) as caught,
    ):
        client.predict(PNG)
    assert len(requests) == 4 and waits == [2.0, 2.0, 2.0]
    assert (
        caught.value.status == 503
        and caught.value.retry_after == 2.0
        and caught.value.detail == "ensemble down"
    )


def test_a_retry_after_beyond_the_limit_is_not_waited_out(waits: list[float]):
    transport, requests = answers(
        httpx.Response(429, json=problem(429, "rate-limited", "x"), headers={"Retry-After": "120"})
    )
    with (
        PCamClient("http://gw", transport=transport, max_retry_wait_s=10) as client,
        pytest.raises(PCamAPIError) as caught,
    ):
        client.predict(PNG)
    assert len(requests) == 1 and waits == [] and caught.value.retry_after == 120.0


def test_without_retry_after_the_wait_doubles(waits: list[float]):
    transport, requests = answers(
        httpx.Response(503), httpx.Response(503), httpx.Response(200, json=prediction(PNG))
    )
    with PCamClient("http://gw", transport=transport) as client:
        client.predict(PNG)
    assert len(requests) == 3 and waits == [1.0, 2.0]


def test_parse_retry_after():
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Mon, 01 Jan 2024 11:00:00 GMT", now) == 0.0  # in the past: now
    assert (
        parse_retry_after(None) is None
        and parse_retry_after("soon") is None
        and parse_retry_after("nan") is None
    )


def test_batch_is_chunked_and_keeps_the_order(waits: list[float]):
    images = [b"img-%d" % i for i in range(5)]

    def gateway(request: httpx.Request) -> httpx.Response:
        results = [
            problem(422, "wrong-size", "bad") if data == b"img-2" else prediction(data)
            for _, _, _, data in parts(request)
        ]
        return httpx.Response(200, json={"results": results, "request_id": "b"})

    transport, requests = recording(gateway)
    with PCamClient("http://gw", transport=transport, max_batch=2) as client:
        results = client.predict_batch(images, operating_point="balanced", tta=True)
    assert [r.url.path for r in requests] == ["/v1/predict/batch"] * 3
    assert [[p[3] for p in parts(r)] for r in requests] == [images[0:2], images[2:4], images[4:5]]
    assert all(p[0] == "files" for r in requests for p in parts(r))
    assert {r.url.query for r in requests} == {b"operating_point=balanced&tta=true"}
    assert [type(r) for r in results] == [Prediction, Prediction, ItemError, Prediction, Prediction]
    assert [r.sha256 for r in results if isinstance(r, Prediction)] == [
        hashlib.sha256(images[i]).hexdigest() for i in (0, 1, 3, 4)
    ]
    error = results[2]
    assert isinstance(error, ItemError) and error.status == 422 and error.detail == "bad"


def test_batch_edge_cases():
    transport, requests = answers(httpx.Response(200, json={"results": [], "request_id": "b"}))
    with PCamClient("http://gw", transport=transport) as client:
        assert client.predict_batch([]) == [] and requests == []  # nothing to send: no request
        with pytest.raises(PCamError, match="0 results for 1 images"):
            client.predict_batch([PNG])


def test_an_answer_outside_the_schema_is_a_clear_error():
    transport, _ = answers(httpx.Response(200, json={"probability": "high"}))
    with (
        PCamClient("http://gw", transport=transport) as client,
        pytest.raises(PCamError, match="not a Prediction"),
    ):
        client.predict(PNG)


def test_connection_errors_raise_pcam_connection_error(waits: list[float]):
    calls = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    with PCamClient("http://gw:1", transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(PCamConnectionError, match="http://gw:1") as caught:
            client.predict(PNG)
        with pytest.raises(PCamConnectionError):
            client.health()
    assert isinstance(caught.value.__cause__, httpx.ConnectError) and len(calls) == 2 and waits == []


def test_the_context_manager_closes_the_http_client():
    client = PCamClient("http://gw", transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    with client as entered:
        assert entered is client and not client._http.is_closed
    assert client._http.is_closed


async def test_async_client_same_api(waits: list[float]):
    queue = iter(
        [
            httpx.Response(503, headers={"Retry-After": "1"}),
            httpx.Response(200, json=prediction(PNG)),
            httpx.Response(200, json={"results": [prediction(b"x"), prediction(b"y")], "request_id": "b"}),
            httpx.Response(200, json={"results": [prediction(b"z")], "request_id": "b"}),
        ]
    )
    requests: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return next(queue)

    async with AsyncPCamClient(
        "http://gw", "k", transport=httpx.MockTransport(handler), max_batch=2
    ) as client:
        single = await client.predict(PNG, explain="cam")
        batch = await client.predict_batch([b"x", b"y", b"z"])
    assert client._http.is_closed
    assert single.probability == 0.75 and waits == [1.0]
    assert [r.sha256 for r in batch if isinstance(r, Prediction)] == [
        hashlib.sha256(d).hexdigest() for d in (b"x", b"y", b"z")
    ]
    assert requests[0].url.query == b"explain=cam" and requests[0].headers["X-API-Key"] == "k"


def test_the_client_needs_no_web_framework():
    """Users install pydantic and httpx: the gateway's schema modules must stay free of FastAPI/Redis."""
    heavy = ("fastapi", "starlette", "redis", "pydantic_settings", "tritonclient", "numpy")
    code = f"import sys, pcam_client; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    root = Path(__file__).parents[3]
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert loaded.stdout.strip() == ""
