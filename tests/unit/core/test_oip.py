"""The tensor input's protocol bodies, checked against tritonclient's own request builder and parser."""

import numpy as np
import pytest
import tritonclient.http as triton_http

from pcam_core import oip
from pcam_core.errors import InvalidRequest, MalformedRequest


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)


def tritonclient_request(
    pixels: np.ndarray, binary: bool = True, outputs: list[tuple[str, bool]] | None = None, **parameters
) -> tuple[bytes, int | None]:
    """A request body exactly as tritonclient's HTTP client sends it."""
    tensor = triton_http.InferInput(oip.INPUT_NAME, list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    requested = [triton_http.InferRequestedOutput(n, binary_data=b) for n, b in outputs] if outputs else None
    return triton_http.InferenceServerClient.generate_request_body(
        [tensor], outputs=requested, request_id="r-1", parameters=parameters or None
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclients_requests_read_back_pixel_for_pixel(binary: bool) -> None:
    pixels = images(3)
    body, header_length = tritonclient_request(pixels, binary=binary, operating_point="screening")
    request, read = oip.read_request(body, header_length, max_patches=8)
    np.testing.assert_array_equal(read, pixels)
    assert request.id == "r-1" and request.parameters["operating_point"] == "screening"


@pytest.mark.parametrize(
    "outputs", [None, [("probability", True), ("label", False)]], ids=["all-binary", "chosen"]
)
def test_answers_parse_with_tritonclient(outputs: list[tuple[str, bool]] | None) -> None:
    body, header_length = tritonclient_request(images(2), outputs=outputs)
    request, _ = oip.read_request(body, header_length, max_patches=8)
    values = {
        "probability": np.array([0.25, 0.75]),
        "label": np.array([0, 1]),
        "uncertainty": np.array([0.0, 0.125]),
    }
    answer, answer_header = oip.write_response(request, values, "rel-1", {"operating_point": "balanced"})
    result = triton_http.InferenceServerClient.parse_response_body(answer, header_length=answer_header)
    names = [name for name, _ in outputs] if outputs else list(oip.OUTPUTS)
    for name in names:
        np.testing.assert_array_equal(result.as_numpy(name), values[name])
    response = result.get_response()
    assert response["model_version"] == "rel-1" and response["id"] == "r-1"
    assert response["parameters"] == {"operating_point": "balanced"}
    assert [o["name"] for o in response["outputs"]] == names


@pytest.mark.parametrize(
    ("mutate", "error", "words"),
    [
        (lambda b, n: (b + b"\x00", n), MalformedRequest, "belong to no input"),
        (lambda b, n: (b[:-1], n), MalformedRequest, "does not fit"),
        (lambda b, n: (b, len(b) + 1), MalformedRequest, "Inference-Header-Content-Length"),
        (lambda b, n: (b"{not json", None), MalformedRequest, "not an inference request"),
    ],
    ids=["trailing-bytes", "short-tensor", "header-past-body", "not-json"],
)
def test_a_malformed_body_is_refused(mutate, error, words: str) -> None:
    body, header_length = mutate(*tritonclient_request(images(1)))
    with pytest.raises(error, match=words):
        oip.read_request(body, header_length, max_patches=8)


def test_the_input_must_follow_the_contract() -> None:
    wrong = triton_http.InferInput("image", [1, 64, 64, 3], "UINT8")
    wrong.set_data_from_numpy(np.zeros((1, 64, 64, 3), np.uint8))
    body, header_length = triton_http.InferenceServerClient.generate_request_body([wrong])
    with pytest.raises(InvalidRequest, match=r"UINT8 \[N, 96, 96, 3\]") as info:
        oip.read_request(body, header_length, max_patches=8)
    assert info.value.kind == "invalid-request"
    with pytest.raises(InvalidRequest) as info:
        oip.read_request(*tritonclient_request(images(3)), max_patches=2)
    assert info.value.kind == "batch-size"
    other = triton_http.InferInput("pixels", [1, 96, 96, 3], "UINT8")
    other.set_data_from_numpy(images(1))
    with pytest.raises(InvalidRequest, match="one input, 'image'"):
        oip.read_request(*triton_http.InferenceServerClient.generate_request_body([other]), max_patches=8)


def test_json_data_out_of_range_is_refused() -> None:
    body = b'{"inputs":[{"name":"image","datatype":"UINT8","shape":[1,96,96,3],"data":[300]}]}'
    with pytest.raises(InvalidRequest, match="integers in 0..255"):
        oip.read_request(body, None, max_patches=8)


def test_an_unknown_output_is_refused() -> None:
    body, header_length = tritonclient_request(images(1), outputs=[("logits", True)])
    request, _ = oip.read_request(body, header_length, max_patches=8)
    with pytest.raises(InvalidRequest, match="Unknown outputs"):
        oip.write_response(request, {}, "rel-1", {})
