"""PCamClient.predict_pixels against a fake gateway (httpx.MockTransport) that reads and answers the
tensor input with the gateway's own bodies (pcam_core.oip.read_request / write_response)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

import pcam_client.client as client_module
from pcam_client import AsyncPCamClient, PCamAPIError, PCamClient, PCamError, PixelPredictions
from pcam_core import oip
from tests.unit.client.transports import Handler, recording

INFER = "/v2/models/pcam/infer"


def patches(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)


def scores(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs that depend on each patch's own pixels, so a patch answered out of order shows."""
    probability = pixels.reshape(len(pixels), -1).mean(axis=1) / 255
    return {
        "probability": probability,
        "label": probability >= 0.5,
        "uncertainty": probability / 10,
        "needs_review": probability < 0.1,
    }


def sent_pixels(request: httpx.Request) -> tuple[oip.InferRequest, np.ndarray]:
    """The request and its pixels, read as the gateway reads them."""
    header = request.headers.get(oip.HEADER_LENGTH)
    return oip.read_request(request.read(), None if header is None else int(header), max_patches=256)


def gateway(release: str = "r1", cached: int = 0, degraded: bool = False, as_json: bool = False) -> Handler:
    """A gateway answering as the real one does (or in JSON whatever was asked, as a KServe v2 server may)."""

    def answer(request: httpx.Request) -> httpx.Response:
        call, pixels = sent_pixels(request)
        if as_json:
            call = call.model_copy(update={"parameters": {}, "outputs": None})
        parameters = {"operating_point": "screening", "threshold": 0.4, "release": release,
                      "degraded": degraded, "cached": cached}  # fmt: skip
        body, header_length = oip.write_response(call, scores(pixels), release, parameters)
        headers = {} if header_length is None else {oip.HEADER_LENGTH: str(header_length)}
        return httpx.Response(200, content=body, headers=headers)

    return answer


def answers(*handlers: Handler) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A gateway answering each request with the next handler."""
    queue: Iterator[Handler] = iter(handlers)
    return recording(lambda request: next(queue)(request))


def fixed(response: httpx.Response) -> Handler:
    return lambda request: response


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(client_module, "_sleep", slept.append)
    return slept


def assert_scores(result: PixelPredictions, pixels: np.ndarray) -> None:
    expected = scores(pixels)
    np.testing.assert_array_equal(result.probability, expected["probability"].astype(np.float32))
    np.testing.assert_array_equal(result.label, expected["label"].astype(np.int32))
    np.testing.assert_array_equal(result.uncertainty, expected["uncertainty"].astype(np.float32))
    assert (result.probability.dtype, result.label.dtype) == (np.float32, np.int32)


def test_pixels_go_in_the_binary_extension_with_the_options_and_headers() -> None:
    pixels = patches(3)
    transport, requests = recording(gateway(cached=1))
    with PCamClient("http://gw", api_key="k3y", transport=transport) as client:
        result = client.predict_pixels(
            pixels, operating_point="conservative", tta=True, cache=False, request_id="abc-1"
        )
    (request,) = requests
    assert request.method == "POST" and request.url.path == INFER and request.url.query == b""
    assert request.headers["X-API-Key"] == "k3y" and request.headers["X-Request-ID"] == "abc-1"
    assert request.headers["content-type"] == "application/octet-stream"
    call, sent = sent_pixels(request)
    np.testing.assert_array_equal(sent, pixels)
    assert int(request.headers[oip.HEADER_LENGTH]) == len(request.read()) - pixels.nbytes
    assert call.parameters == {
        "operating_point": "conservative",
        "tta": True,
        "cache": False,
        "binary_data_output": True,
    }
    assert_scores(result, pixels)
    assert len(result) == 3 and result.cached == 1 and result.degraded is False
    assert (result.operating_point, result.threshold, result.release, result.releases) == (
        "screening", 0.4, "r1", ("r1",)
    )  # fmt: skip


def test_defaults_send_no_options() -> None:
    transport, requests = recording(gateway())
    with PCamClient("http://gw", transport=transport) as client:
        client.predict_pixels(patches(1))
    call, _ = sent_pixels(requests[0])
    assert call.parameters == {"binary_data_output": True}
    assert "X-API-Key" not in requests[0].headers and "X-Request-ID" not in requests[0].headers


def test_one_patch_without_the_batch_axis_is_a_batch_of_one() -> None:
    pixels = patches(1)
    transport, requests = recording(gateway())
    with PCamClient("http://gw", transport=transport) as client:
        result = client.predict_pixels(pixels[0])
    np.testing.assert_array_equal(sent_pixels(requests[0])[1], pixels)
    assert len(result) == 1
    assert_scores(result, pixels)


def test_chunks_of_max_batch_are_answered_in_input_order() -> None:
    pixels = patches(5, seed=3)
    transport, requests = answers(
        gateway(cached=2), gateway(release="r2", degraded=True), gateway(release="r2", cached=1)
    )
    with PCamClient("http://gw", transport=transport, max_batch=2) as client:
        result = client.predict_pixels(pixels, operating_point="screening", request_id="r-7")
    chunks = [sent_pixels(r)[1] for r in requests]
    assert [len(c) for c in chunks] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(chunks), pixels)
    assert {r.headers["X-Request-ID"] for r in requests} == {"r-7"}
    assert all(sent_pixels(r)[0].parameters["operating_point"] == "screening" for r in requests)
    assert_scores(result, pixels)
    assert result.cached == 3 and result.degraded is True
    assert result.release == "r1" and result.releases == ("r1", "r2")


def test_a_json_answer_reads_as_a_binary_one() -> None:
    pixels = patches(4, seed=4)
    transport, _ = answers(gateway(as_json=True), gateway())
    with PCamClient("http://gw", transport=transport) as client:
        from_json, from_binary = client.predict_pixels(pixels), client.predict_pixels(pixels)
    assert_scores(from_json, pixels)
    for name in oip.OUTPUTS:
        np.testing.assert_array_equal(getattr(from_json, name), getattr(from_binary, name))


@pytest.mark.parametrize(
    ("given", "words"),
    [
        (np.zeros((2, 96, 96, 3), np.float64), "uint8"),
        (np.zeros((2, 3, 96, 96), np.uint8), r"shape \(N, 96, 96, 3\)"),
        (np.zeros((0, 96, 96, 3), np.uint8), "no patches"),
    ],
    ids=["float", "channels-first", "empty"],
)
def test_a_bad_array_is_refused_before_anything_is_sent(given: np.ndarray, words: str) -> None:
    transport, requests = recording(gateway())
    with PCamClient("http://gw", transport=transport) as client, pytest.raises(ValueError, match=words):
        client.predict_pixels(given)
    assert requests == []


def test_a_problem_raises_its_fields_and_stops_the_call(waits: list[float]) -> None:
    body = {"type": "https://pcam.example/problems/batch-size", "title": "Invalid request", "status": 422,
            "detail": "Received 3 patches; 1..2.", "request_id": "rid-9", "error": "Received 3 patches; 1..2."}  # fmt: skip
    refused = httpx.Response(422, json=body, headers={"content-type": "application/problem+json"})
    transport, requests = answers(gateway(), fixed(refused), gateway())
    with (
        PCamClient("http://gw", transport=transport, max_batch=3) as client,
        pytest.raises(PCamAPIError) as caught,
    ):
        client.predict_pixels(patches(7))
    error = caught.value
    assert (error.status, error.type, error.detail, error.request_id) == (
        422, "https://pcam.example/problems/batch-size", "Received 3 patches; 1..2.", "rid-9"
    )  # fmt: skip
    assert len(requests) == 2 and waits == []  # the third chunk is never sent


def test_a_503_is_retried_with_the_same_body(waits: list[float]) -> None:
    unavailable = httpx.Response(
        503, json={"status": 503, "title": "Service unavailable"}, headers={"Retry-After": "2"}
    )
    transport, requests = answers(fixed(unavailable), gateway())
    pixels = patches(2)
    with PCamClient("http://gw", transport=transport) as client:
        result = client.predict_pixels(pixels)
    assert waits == [2.0] and len(requests) == 2 and requests[0].read() == requests[1].read()
    assert requests[0].headers[oip.HEADER_LENGTH] == requests[1].headers[oip.HEADER_LENGTH]
    assert_scores(result, pixels)


def wrong_count(request: httpx.Request) -> httpx.Response:
    """A gateway answering one patch fewer than it was sent."""
    call, pixels = sent_pixels(request)
    body, header_length = oip.write_response(call, scores(pixels[1:]), "r1", {"operating_point": "balanced",
        "threshold": 0.5, "release": "r1", "degraded": False, "cached": 0})  # fmt: skip
    return httpx.Response(200, content=body, headers={oip.HEADER_LENGTH: str(header_length)})


def without_header(request: httpx.Request) -> httpx.Response:
    """A binary answer that lost its header length (a proxy dropping it)."""
    response = gateway()(request)
    return httpx.Response(200, content=response.content)


def missing_parameters(request: httpx.Request) -> httpx.Response:
    call, pixels = sent_pixels(request)
    body, header_length = oip.write_response(call, scores(pixels), "r1", {"operating_point": "balanced"})
    return httpx.Response(200, content=body, headers={oip.HEADER_LENGTH: str(header_length)})


def missing_output(request: httpx.Request) -> httpx.Response:
    response = gateway(as_json=True)(request)
    answer = json.loads(response.content)
    answer["outputs"] = [o for o in answer["outputs"] if o["name"] != "uncertainty"]
    return httpx.Response(200, json=answer)


@pytest.mark.parametrize(
    ("handler", "words"),
    [
        (wrong_count, r"shapes .* for 2 patches"),
        (missing_output, r"'uncertainty': None"),
        (without_header, "not an inference answer: .*Invalid JSON"),
        (missing_parameters, "not an inference answer: 4 validation errors"),
        (fixed(httpx.Response(200, content=b"{}", headers={oip.HEADER_LENGTH: "x"})), "invalid literal"),
        (fixed(httpx.Response(200, text="<html>proxy</html>")), "not an inference answer"),
    ],
    ids=["wrong-count", "missing-output", "no-header-length", "missing-parameters", "bad-header", "html"],
)
def test_an_answer_that_is_not_an_inference_answer_is_a_clear_error(handler: Handler, words: str) -> None:
    transport, _ = recording(handler)
    with PCamClient("http://gw", transport=transport) as client, pytest.raises(PCamError, match=words):
        client.predict_pixels(patches(2))


async def test_async_client_same_api() -> None:
    pixels = patches(3, seed=5)
    serve = gateway(cached=1)
    requests: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return serve(request)

    async with AsyncPCamClient(
        "http://gw", "k", transport=httpx.MockTransport(handler), max_batch=2
    ) as client:
        result = await client.predict_pixels(pixels, tta=True, request_id="a-1")
    assert [len(sent_pixels(r)[1]) for r in requests] == [2, 1]
    assert all(r.headers["X-API-Key"] == "k" and r.headers["X-Request-ID"] == "a-1" for r in requests)
    assert all(sent_pixels(r)[0].parameters["tta"] is True for r in requests)
    assert_scores(result, pixels)
    assert result.cached == 2


def test_without_numpy_the_error_says_which_extra_to_install() -> None:
    """numpy hidden (as when the client is installed without the `tensor` extra): importing still works,
    predict_pixels says what to install."""
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "from pcam_client import PCamClient\n"
        "try:\n"
        "    PCamClient('http://gw').predict_pixels([[0]])\n"
        "except ModuleNotFoundError as error:\n"
        "    print(error.name, '|', error)\n"
    )
    root = Path(__file__).parents[3]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    name, message = done.stdout.strip().split(" | ")
    assert name == "numpy" and "pcam-platform-client[tensor]" in message
