"""The tensor input's protocol bodies, checked against tritonclient's own request builder and parser."""

import json

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
        "needs_review": np.array([False, True]),
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


# The client's side: encode_request and read_response, against the server's side and tritonclient.

ANSWER = {
    "probability": np.array([0.25, 0.75, 0.5], np.float32),
    "label": np.array([0, 1, 1], np.int32),
    "uncertainty": np.array([0.0, 0.125, 0.5], np.float32),
    "needs_review": np.array([True, False, False]),
}


def test_encode_request_is_what_tritonclient_sends_and_what_the_gateway_reads() -> None:
    pixels = images(3, seed=1)
    body, header_length = oip.encode_request(pixels, {"operating_point": "screening", "tta": True})
    theirs, their_length = tritonclient_request(pixels, operating_point="screening", tta=True)
    assert their_length is not None
    # The same JSON header (as values: the key order differs; ours sends no id) and tensor bytes.
    their_header = json.loads(theirs[:their_length])
    assert their_header.pop("id") == "r-1"
    assert json.loads(body[:header_length]) == their_header
    assert body[header_length:] == theirs[their_length:]
    request, read = oip.read_request(body, header_length, max_patches=8)
    np.testing.assert_array_equal(read, pixels)
    assert request.parameters == {"operating_point": "screening", "tta": True, "binary_data_output": True}


def test_encode_request_takes_one_patch_and_strided_arrays() -> None:
    pixels = images(2, seed=2)
    for given, expected in [(pixels[0], pixels[:1]), (pixels[:, ::-1], pixels[:, ::-1])]:
        body, header_length = oip.encode_request(given, {})
        np.testing.assert_array_equal(oip.read_request(body, header_length, max_patches=8)[1], expected)


@pytest.mark.parametrize(
    ("given", "words"),
    [
        (np.zeros((2, 96, 96, 3), np.float32), "uint8"),
        (np.zeros((2, 96, 96, 3), np.int64), "uint8"),
        (np.zeros((2, 64, 64, 3), np.uint8), r"shape \(N, 96, 96, 3\).*\(2, 64, 64, 3\)"),
        (np.zeros((2, 3, 96, 96), np.uint8), "shape"),
        (np.zeros((96, 96), np.uint8), "shape"),
        (np.zeros((0, 96, 96, 3), np.uint8), "no patches"),
        ([[1, 2, 3]], "uint8"),
    ],
    ids=["float", "int64", "small", "channels-first", "gray", "empty", "list"],
)
def test_images_outside_the_contract_are_a_value_error(given, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        oip.check_images(given)
    with pytest.raises(ValueError, match=words):
        oip.encode_request(given, {})


@pytest.mark.parametrize(
    "outputs",
    [None, [("probability", True), ("label", False)], [(name, False) for name in oip.OUTPUTS]],
    ids=["all-binary", "mixed", "all-json"],
)
def test_read_response_reads_the_gateways_answers_as_tritonclient_does(
    outputs: list[tuple[str, bool]] | None,
) -> None:
    request, _ = oip.read_request(*tritonclient_request(images(3), outputs=outputs), max_patches=8)
    parameters = {
        "operating_point": "balanced",
        "threshold": 0.5,
        "release": "r1",
        "degraded": False,
        "cached": 2,
    }
    body, header_length = oip.write_response(request, ANSWER, "r1", parameters)
    read, read_parameters = oip.read_response(body, header_length)
    theirs = triton_http.InferenceServerClient.parse_response_body(body, header_length=header_length)
    names = [name for name, _ in outputs] if outputs else list(oip.OUTPUTS)
    assert list(read) == names and read_parameters == parameters
    for name in names:
        np.testing.assert_array_equal(read[name], ANSWER[name])
        np.testing.assert_array_equal(read[name], theirs.as_numpy(name))
        assert read[name].dtype == oip.DATATYPES[oip.OUTPUTS[name]] and read[name].flags.writeable
    assert oip.AnswerParameters.model_validate(read_parameters).cached == 2


def _answer(**output: object) -> bytes:
    tensor = {"name": "label", "datatype": "INT32", "shape": [2], "data": [0, 1]} | output
    return json.dumps({"model_name": "pcam", "outputs": [tensor]}).encode()


def _binary_answer() -> tuple[bytes, int]:
    request, _ = oip.read_request(*tritonclient_request(images(3)), max_patches=8)
    body, header_length = oip.write_response(request, ANSWER, "r1", {})
    assert header_length is not None
    return body, header_length


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (lambda: (_binary_answer()[0] + b"\x00", _binary_answer()[1]), "belong to no output"),
        (lambda: (_binary_answer()[0][:-1], _binary_answer()[1]), "does not fit"),
        (lambda: (_binary_answer()[0], len(_binary_answer()[0]) + 1), "Inference-Header-Content-Length"),
        (lambda: (_binary_answer()[0], None), "Invalid JSON"),
        (lambda: (b'{"outputs": []}', None), "model_name"),
        (lambda: (_answer(name="logits"), None), "none of"),
        (lambda: (_answer(datatype="FP32"), None), "none of"),
        (lambda: (_answer(shape=[-2], data=[0, 1]), None), "none of"),
        (lambda: (_answer(data=[0.0, 0.7]), None), "not all integers"),
        (lambda: (_answer(data=["0", "1"]), None), "not INT32"),
        (lambda: (_answer(data=[0, None]), None), "not INT32"),
        (lambda: (_answer(data=[0, 1, 1]), None), "has 3 values"),
        (lambda: (_answer(data=None), None), "neither data nor binary_data_size"),
    ],
    ids=[
        "trailing-bytes", "short-tensor", "header-past-body", "binary-read-as-json", "no-model-name",
        "unknown-output", "wrong-datatype", "negative-shape", "float-labels", "string-labels", "null-label",
        "wrong-count", "no-data",
    ],
)  # fmt: skip
def test_a_malformed_answer_is_a_value_error(answer, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        oip.read_response(*answer())


def test_read_response_checks_the_binary_size_type() -> None:
    header = _answer(data=None, parameters={"binary_data_size": 8.0})
    with pytest.raises(ValueError, match="does not fit"):
        oip.read_response(header + bytes(8), len(header))
