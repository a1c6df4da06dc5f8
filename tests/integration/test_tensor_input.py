"""The tensor input (KServe v2 on the gateway) through the real stack, with tritonclient's HTTP client
unchanged: the same answers as the same patches uploaded as PNGs, cached by their pixels."""

from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from PIL import Image
from tritonclient.utils import InferenceServerException

from devstack.stack import LocalStack
from tests.integration.test_predict import png

pytestmark = pytest.mark.integration
PROBABILITY_ATOL = 1e-5
"""Triton may batch the two paths' patches differently: only the last digits may move."""


def fresh_pixels(paths: list[Path], salt: int) -> np.ndarray:
    """Real patches, each with one pixel changed: pixels no other test sends."""
    patches = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in paths]).copy()
    for i in range(len(patches)):
        patches[i, 0, 0] = [(salt + i) % 256, (salt + i) // 256 % 256, 7]
    return patches


def tensor(pixels: np.ndarray, binary: bool = True) -> triton_http.InferInput:
    image = triton_http.InferInput("image", list(pixels.shape), "UINT8")
    image.set_data_from_numpy(pixels, binary_data=binary)
    return image


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(stack.config.url("gateway").removeprefix("http://"))


def test_health_and_metadata(client: triton_http.InferenceServerClient, gateway: httpx.Client) -> None:
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("pcam")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("pcam")
    assert metadata["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 96, 96, 3]}]
    assert metadata["versions"] == [gateway.get("/v1/models").json()["release_id"]]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_the_answers_are_those_of_the_same_patches_uploaded(
    client: triton_http.InferenceServerClient, gateway: httpx.Client, patch_paths: list[Path], binary: bool
) -> None:
    pixels = fresh_pixels(patch_paths[:6], salt=900 + 10 * binary)
    result = client.infer(
        "pcam", [tensor(pixels, binary)], parameters={"operating_point": "screening", "cache": False}
    )
    uploaded = gateway.post(
        "/v1/predict/batch",
        params={"operating_point": "screening", "cache": "false"},
        files=[("files", (f"{i}.png", png(patch))) for i, patch in enumerate(pixels)],
    )
    assert uploaded.status_code == 200
    reference = uploaded.json()["results"]
    assert result.as_numpy("probability") == pytest.approx(
        [r["probability"] for r in reference], abs=PROBABILITY_ATOL
    )
    assert result.as_numpy("label").tolist() == [r["label"] for r in reference]
    assert result.as_numpy("uncertainty") == pytest.approx([r["uncertainty"] for r in reference], abs=1e-5)
    parameters = result.get_response()["parameters"]
    assert parameters["operating_point"] == "screening" and parameters["release"] == reference[0]["release"]
    assert parameters["threshold"] == pytest.approx(reference[0]["threshold"])


def test_a_second_call_is_served_from_the_cache_keyed_by_pixels(
    client: triton_http.InferenceServerClient, patch_paths: list[Path]
) -> None:
    pixels = fresh_pixels(patch_paths[:4], salt=950)
    first = client.infer("pcam", [tensor(pixels)])
    again = client.infer("pcam", [tensor(pixels)])
    assert first.get_response()["parameters"]["cached"] == 0
    assert again.get_response()["parameters"]["cached"] == len(pixels)
    np.testing.assert_array_equal(again.as_numpy("probability"), first.as_numpy("probability"))


def test_errors_reach_tritonclient_as_its_exceptions(
    client: triton_http.InferenceServerClient, gateway: httpx.Client
) -> None:
    with pytest.raises(InferenceServerException, match=r"UINT8 \[N, 96, 96, 3\]") as info:
        client.infer("pcam", [tensor(np.zeros((1, 64, 64, 3), np.uint8))])
    assert info.value.status() == "422"
    with pytest.raises(InferenceServerException, match="lenient"):
        client.infer(
            "pcam", [tensor(np.zeros((1, 96, 96, 3), np.uint8))], parameters={"operating_point": "lenient"}
        )
    with pytest.raises(InferenceServerException, match=r"parameters\.tta: Input should be a valid boolean"):
        client.infer("pcam", [tensor(np.zeros((1, 96, 96, 3), np.uint8))], parameters={"tta": "maybe"})
    # Still the API's problem+json, with the member KServe v2 clients read.
    response = gateway.post("/v2/models/pcam/infer", content=b"{not json")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["error"] == response.json()["detail"]
