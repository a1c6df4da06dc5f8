"""The Open Inference Protocol (KServe v2) bodies of the tensor input: one model, `pcam`.

A request carries one input, `image`: UINT8 `[N, 96, 96, 3]`, as JSON `data` (small calls) or in the
binary tensor extension (a JSON header of `Inference-Header-Content-Length` bytes, then the raw
tensors in the order of the inputs that name a `binary_data_size`). The answer carries
`probability` (FP32 `[N]`), `label` (INT32 `[N]`; -1: withheld, with `abstain`), `uncertainty` (FP32
`[N]`) and `needs_review` (BOOL `[N]`: a review flag fired), each as JSON or binary as the request asked (an output's `binary_data`, else the request's `binary_data_output`).
Framework-free: the gateway's routes (`read_request`, `write_response`) and clients (`encode_request`,
`read_response`) build on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError
from pydantic_core import to_json

from pcam_core.contract import INPUT_SHAPE, INPUT_TRITON_DTYPE
from pcam_core.errors import InvalidRequest, MalformedRequest

MODEL_NAME = "pcam"
ABSTAINED_LABEL = -1
"""The `label` of a patch whose label was withheld (`abstain` and a review flag): INT32 has no null."""
INPUT_NAME = "image"
HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES: dict[str, np.dtype] = {
    INPUT_TRITON_DTYPE: np.dtype(np.uint8),
    "INT32": np.dtype(np.int32),
    "FP32": np.dtype(np.float32),
    "BOOL": np.dtype(np.bool_),
}
OUTPUTS: dict[str, str] = {
    "probability": "FP32",
    "label": "INT32",
    "uncertainty": "FP32",
    "needs_review": "BOOL",
}
"""Output name -> datatype, in the order an answer lists them."""


class Tensor(BaseModel):
    """An input of a request, or an output of an answer."""

    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    outputs: list[Tensor]


class AnswerParameters(BaseModel):
    """The parameters of the gateway's answer: the canonical operating point, its threshold in the
    serving release, whether any patch was answered by fewer members, and how many came from the cache."""

    operating_point: str
    threshold: float
    release: str
    degraded: bool
    cached: int = Field(ge=0)


def read_request(body: bytes, header_length: int | None, max_patches: int) -> tuple[InferRequest, np.ndarray]:
    """The request and its images, uint8 (N, 96, 96, 3) with 1 <= N <= max_patches."""
    try:
        json_end = _json_end(body, header_length)
        request = InferRequest.model_validate_json(body[:json_end])
        raws = _binary_parts(request.inputs, memoryview(body)[json_end:], "input")
    except ValidationError as exc:
        raise _malformed(f"not an inference request: {exc.errors(include_url=False)[0]['msg']}") from exc
    except ValueError as exc:  # the header length or binary sizes do not fit the body
        raise _malformed(str(exc)) from exc
    images = None
    for tensor, raw in zip(request.inputs, raws, strict=True):
        if tensor.name == INPUT_NAME:
            images = _images(tensor, raw, max_patches)
    names = [tensor.name for tensor in request.inputs]
    if names != [INPUT_NAME]:
        raise InvalidRequest(f"Expected one input, '{INPUT_NAME}'; received {names}.", kind="invalid-request")
    assert images is not None
    return request, images


def write_response(
    request: InferRequest, outputs: dict[str, np.ndarray], model_version: str, parameters: dict[str, Any]
) -> tuple[bytes, int | None]:
    """The answer's body and, when any output is binary, the length of its JSON header."""
    wanted = [o.name for o in request.outputs] if request.outputs is not None else list(OUTPUTS)
    unknown = [name for name in wanted if name not in OUTPUTS]
    if unknown:
        raise InvalidRequest(
            f"Unknown outputs {unknown}; this model has {list(OUTPUTS)}.", kind="invalid-request"
        )
    binary_default = bool(request.parameters.get("binary_data_output", False))
    as_binary = {o.name: bool(o.parameters.get("binary_data", binary_default)) for o in request.outputs or ()}
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in wanted:
        array = np.ascontiguousarray(outputs[name], dtype=DATATYPES[OUTPUTS[name]])
        tensor: dict[str, Any] = {"name": name, "datatype": OUTPUTS[name], "shape": list(array.shape)}
        if as_binary.get(name, binary_default):
            blobs.append(array.tobytes())
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            tensor["data"] = array.tolist()
        tensors.append(tensor)
    header: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": model_version}
    if request.id is not None:
        header["id"] = request.id
    header |= {"parameters": parameters, "outputs": tensors}
    json_part = to_json(header)
    if not blobs:
        return json_part, None
    return b"".join((json_part, *blobs)), len(json_part)


def check_images(images: Any) -> np.ndarray:
    """`images` as uint8 (N, 96, 96, 3), N >= 1 (one (96, 96, 3) patch is N = 1); ValueError otherwise."""
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(f"patches must be uint8 RGB pixels (0..255); received dtype {array.dtype}")
    if array.shape == INPUT_SHAPE:
        array = array[np.newaxis]
    if array.ndim != 4 or array.shape[1:] != INPUT_SHAPE:
        shape = ", ".join(map(str, INPUT_SHAPE))
        raise ValueError(f"patches must have shape (N, {shape}) or ({shape}); received {array.shape}")
    if not len(array):
        raise ValueError("no patches to send (N = 0)")
    return array


def encode_request(images: np.ndarray, parameters: Mapping[str, Any]) -> tuple[bytes, int]:
    """A request sending `images` in the binary tensor extension and asking every output as binary,
    and the length of its JSON header (the `Inference-Header-Content-Length`)."""
    pixels = np.ascontiguousarray(check_images(images))
    header = {
        "parameters": {**parameters, "binary_data_output": True},
        "inputs": [
            {
                "name": INPUT_NAME,
                "datatype": INPUT_TRITON_DTYPE,
                "shape": list(pixels.shape),
                "parameters": {"binary_data_size": pixels.nbytes},
            }
        ],
    }
    json_part = to_json(header)
    return b"".join((json_part, pixels.data)), len(json_part)


def read_response(body: bytes, header_length: int | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The outputs (name -> array) and parameters of an answer, JSON or binary; ValueError if malformed."""
    json_end = _json_end(body, header_length)
    response = InferResponse.model_validate_json(body[:json_end])  # a ValidationError is a ValueError
    for tensor in response.outputs:
        if OUTPUTS.get(tensor.name) != tensor.datatype or min(tensor.shape, default=0) < 0:
            raise ValueError(f"output '{tensor.name}' {tensor.datatype} {tensor.shape} is none of {OUTPUTS}")
    raws = _binary_parts(response.outputs, memoryview(body)[json_end:], "output")
    outputs: dict[str, np.ndarray] = {}
    for tensor, raw in zip(response.outputs, raws, strict=True):
        dtype, count = DATATYPES[tensor.datatype], math.prod(tensor.shape)
        if raw is None:
            outputs[tensor.name] = _json_values(tensor, dtype, count)
        elif len(raw) != count * dtype.itemsize:
            raise ValueError(f"output '{tensor.name}': binary_data_size {len(raw)} does not fit the body")
        else:
            # A copy: the caller gets a writable array, not a read-only view holding the whole body.
            outputs[tensor.name] = np.frombuffer(raw, dtype).reshape(tensor.shape).copy()
    return outputs, response.parameters


def model_metadata(release_id: str) -> dict[str, Any]:
    """`GET /v2/models/pcam`: the model's name, version (the serving release) and tensors."""
    return {
        "name": MODEL_NAME,
        "versions": [release_id],
        "platform": "pcam-ensemble",
        "inputs": [{"name": INPUT_NAME, "datatype": INPUT_TRITON_DTYPE, "shape": [-1, *INPUT_SHAPE]}],
        "outputs": [{"name": name, "datatype": kind, "shape": [-1]} for name, kind in OUTPUTS.items()],
    }


def _json_end(body: bytes, header_length: int | None) -> int:
    """Where the JSON header ends: `Inference-Header-Content-Length`, or the whole body without it."""
    json_end = len(body) if header_length is None else header_length
    if not 0 <= json_end <= len(body):
        raise ValueError(f"{HEADER_LENGTH} is {json_end}, the body {len(body)} bytes")
    return json_end


def _binary_parts(tensors: list[Tensor], binary: memoryview, role: str) -> list[memoryview | None]:
    """Each tensor's raw bytes in the binary tensor extension (None: it has JSON data), cut from
    `binary` in tensor order; ValueError if the sizes do not add up to it exactly."""
    parts: list[memoryview | None] = []
    offset = 0
    for tensor in tensors:
        size = tensor.parameters.get("binary_data_size")
        if size is None:
            parts.append(None)
            continue
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise ValueError(f"{role} '{tensor.name}': binary_data_size {size!r} does not fit the body")
        parts.append(binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise ValueError(f"{len(binary) - offset} bytes of binary data belong to no {role}")
    return parts


def _images(tensor: Tensor, raw: memoryview | None, max_patches: int) -> np.ndarray:
    if (
        tensor.datatype != INPUT_TRITON_DTYPE
        or len(tensor.shape) != 4
        or tuple(tensor.shape[1:]) != INPUT_SHAPE
    ):
        raise InvalidRequest(
            f"Input '{INPUT_NAME}' must be {INPUT_TRITON_DTYPE} [N, {', '.join(map(str, INPUT_SHAPE))}]; received "
            f"{tensor.datatype} {tensor.shape}.",
            kind="invalid-request",
        )
    if not 1 <= tensor.shape[0] <= max_patches:
        raise InvalidRequest(f"Received {tensor.shape[0]} patches; 1..{max_patches}.", kind="batch-size")
    expected = math.prod(tensor.shape)
    if raw is not None:
        if len(raw) != expected:
            raise _malformed(
                f"input '{INPUT_NAME}' of shape {tensor.shape} needs {expected} bytes, got {len(raw)}"
            )
        return np.frombuffer(raw, dtype=np.uint8).reshape(tensor.shape)
    if tensor.data is None:
        raise _malformed(f"input '{INPUT_NAME}' has neither data nor binary_data_size")
    values = np.asarray(tensor.data, dtype=object).reshape(-1) if tensor.data else np.empty(0, dtype=object)
    if values.size != expected or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in values
    ):
        raise InvalidRequest(
            f"Input '{INPUT_NAME}' data must be {expected} integers in 0..255.", kind="invalid-request"
        )
    return values.astype(np.uint8).reshape(tensor.shape)


def _json_values(tensor: Tensor, dtype: np.dtype, count: int) -> np.ndarray:
    if tensor.data is None:
        raise ValueError(f"output '{tensor.name}' has neither data nor binary_data_size")
    raw = np.asarray(tensor.data).reshape(-1)  # a ragged list raises ValueError
    if (raw.dtype.kind == "b") != (dtype.kind == "b") or raw.dtype.kind not in "iufb":
        raise ValueError(f"output '{tensor.name}' data is not {tensor.datatype}: {raw.dtype}")
    with np.errstate(invalid="ignore", over="ignore"):
        values = raw.astype(dtype)
    # A plain cast would silently turn a probability of 0.7 sent as a label into label 0.
    if dtype.kind == "i" and not np.array_equal(values, raw):
        raise ValueError(f"output '{tensor.name}' data is not {tensor.datatype}: not all integers")
    if values.size != count:
        raise ValueError(f"output '{tensor.name}' of shape {tensor.shape} has {values.size} values")
    return values.reshape(tensor.shape)


def _malformed(detail: str) -> MalformedRequest:
    return MalformedRequest(detail, kind="malformed-batch")
