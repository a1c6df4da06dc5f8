"""OpenAPI pieces every service's description uses: problem responses and upload request bodies."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pcam_core.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPES, kind_body

BINARY = {"type": "string", "format": "binary"}


class ProblemDetails(BaseModel):
    """An error (RFC 9457, `application/problem+json`); some carry extensions (e.g. `errors`)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI naming the kind of problem.")
    title: str
    status: int
    detail: str
    request_id: str


EXAMPLE_DETAILS: dict[str, str] = {
    "malformed-multipart": "The multipart body ended before its closing boundary.",
    "unauthorized": "Send an API key in the X-API-Key header or as 'Authorization: Bearer <key>'.",
    "forbidden": "The API key is not valid.",
    "request-timeout": "The upload did not arrive within the request deadline of 60 s.",
    "image-too-large": "File 0 of 'file' exceeds the limit of 1048576 bytes.",
    "too-many-files": "At most 256 files per request.",
    "unsupported-image": "Not a decodable image in a supported format (PNG, JPEG, TIFF, BMP).",
    "unknown-operating-point": "Received 'lenient'; expected one of screening, balanced, high_specificity, "
    "conservative, aggressive.",
    "wrong-size": "Received 128x64; 96x96 is required.",
    "rate-limited": "At most 1200 requests per minute; retry in 17 s.",
    "bad-gateway": "The ensemble service answered unexpectedly: ...",
    "service-unavailable": "The ensemble service is unavailable: ConnectError",
    "overloaded": "This service holds 510 patches in flight and may hold 512; retry after 1 s.",
    "deadline-exceeded": "No answer within the request deadline of 60 s; retry, or send fewer images.",
    "not-found": "No problem type 'teapot'; GET /problems lists them.",
}
"""An example detail per problem kind, shown in the API descriptions under the kind's status."""


def _example(kind: str) -> dict[str, Any]:
    return kind_body(kind, EXAMPLE_DETAILS[kind], request_id="3f1d2c9a7b6e4e0f9a8b7c6d5e4f3a2b")


def _status_of(kind: str) -> int:
    return PROBLEM_TYPES[kind].status


STATUS_DESCRIPTIONS: dict[int, str] = {
    _status_of("malformed-multipart"): "Malformed request body.",
    _status_of("not-found"): "No such resource.",
    _status_of("unauthorized"): "No API key sent (only when API keys are configured).",
    _status_of("forbidden"): "The API key is not valid.",
    _status_of("request-timeout"): "The upload did not arrive within the request deadline (a slow client).",
    _status_of("image-too-large"): "Upload too large, or too many files.",
    _status_of("unsupported-image"): "Not a supported image, or not multipart/an image content type.",
    _status_of("wrong-size"): "Wrong image size or mode, or invalid options.",
    _status_of("rate-limited"): "Too many requests for this API key (or client address); retry after "
    "Retry-After seconds. Every counted answer states the quota in the IETF RateLimit-Policy and "
    "RateLimit fields.",
    _status_of("bad-gateway"): "A dependency answered unexpectedly.",
    _status_of("service-unavailable"): "A dependency is down, or the service is at its limit of work in "
    "flight (overloaded); retry after Retry-After seconds.",
    _status_of("deadline-exceeded"): "The request deadline passed; retry after Retry-After seconds, or send "
    "fewer images.",
}
"""What each problem status means in the API descriptions (keyed through the table: no status here)."""


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for problem statuses, each with its schema and examples under problem+json.

    The schema is inlined: FastAPI's `model` key would file it under application/json instead.
    """
    schema = ProblemDetails.model_json_schema()
    return {
        status: {
            "description": STATUS_DESCRIPTIONS[status],
            "content": {
                PROBLEM_MEDIA_TYPE: {
                    "schema": schema,
                    "examples": {
                        kind: {"summary": PROBLEM_TYPES[kind].title, "value": _example(kind)}
                        for kind in EXAMPLE_DETAILS
                        if PROBLEM_TYPES[kind].status == status
                    },
                }
            },
        }
        for status in statuses
    }


def ok_response(description: str, example: Any) -> dict[int | str, dict[str, Any]]:
    """The 200 response's description and example (FastAPI adds its schema from the return type)."""
    return {200: {"description": description, "content": {"application/json": {"example": example}}}}


def upload_request_body(
    field: str, many: bool, raw_media_types: tuple[str, ...] = (), max_items: int | None = None
) -> dict[str, Any]:
    """OpenAPI requestBody for multipart image uploads (routes read the body themselves, within limits).

    With `many`, the field is an array of 1..`max_items` files.
    """
    schema = (
        {"type": "array", "items": BINARY, "minItems": 1, **({"maxItems": max_items} if max_items else {})}
        if many
        else BINARY
    )
    content: dict[str, Any] = {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {field: schema}, "required": [field]}
        },
        **{media: {"schema": BINARY} for media in raw_media_types},
    }
    return {"requestBody": {"content": content, "required": True}}


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters for a model's fields, as FastAPI writes them for a `Query()` model (for
    routes that parse their query themselves: services.common.query)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    return [
        {
            "description": field.get("description"),
            "in": "query",
            "name": name,
            "required": name in required,
            "schema": field,
        }
        for name, field in schema["properties"].items()
    ]
