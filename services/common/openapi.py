"""OpenAPI pieces every service's description uses: problem responses and upload request bodies."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.common.problem_types import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE

BINARY = {"type": "string", "format": "binary"}


class ProblemDetails(BaseModel):
    """An error (RFC 9457, `application/problem+json`); some carry extensions (e.g. `errors`)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI naming the kind of problem.")
    title: str
    status: int
    detail: str
    request_id: str


def _problem(status: int, kind: str, title: str, detail: str) -> dict[str, Any]:
    return {
        "type": PROBLEM_TYPE_BASE + kind,
        "title": title,
        "status": status,
        "detail": detail,
        "request_id": "3f1d2c9a7b6e4e0f9a8b7c6d5e4f3a2b",
    }


PROBLEM_EXAMPLES: dict[int, tuple[str, dict[str, dict[str, Any]]]] = {
    400: (
        "Malformed request body.",
        {"malformed-multipart": _problem(400, "malformed-multipart", "Malformed multipart body", "...")},
    ),
    401: (
        "No API key sent (only when API keys are configured).",
        {
            "unauthorized": _problem(
                401,
                "unauthorized",
                "Authentication required",
                "Send an API key in the X-API-Key header or as 'Authorization: Bearer <key>'.",
            )
        },
    ),
    403: (
        "The API key is not valid.",
        {"forbidden": _problem(403, "forbidden", "Invalid API key", "The API key is not valid.")},
    ),
    408: (
        "The upload did not arrive within the request deadline (a slow client).",
        {
            "request-timeout": _problem(
                408,
                "request-timeout",
                "Request timeout",
                "The upload did not arrive within the request deadline of 60 s.",
            )
        },
    ),
    413: (
        "Upload too large, or too many files.",
        {
            "image-too-large": _problem(
                413,
                "image-too-large",
                "Image too large",
                "File 0 of 'file' exceeds the limit of 1048576 bytes.",
            ),
            "too-many-files": _problem(
                413, "too-many-files", "Too many files", "At most 256 files per request."
            ),
        },
    ),
    415: (
        "Not a supported image, or not multipart/an image content type.",
        {
            "unsupported-image": _problem(
                415,
                "unsupported-image",
                "Unsupported image",
                "Not a decodable image in a supported format (PNG, JPEG, TIFF, BMP).",
            )
        },
    ),
    422: (
        "Wrong image size or mode, or invalid options.",
        {
            "unknown-operating-point": _problem(
                422,
                "unknown-operating-point",
                "Unknown operating point",
                "Received 'lenient'; expected one of screening, balanced, high_specificity, conservative, aggressive.",
            ),
            "wrong-size": _problem(
                422, "wrong-size", "Wrong image size", "Received 128x64; 96x96 is required."
            ),
        },
    ),
    429: (
        "Too many requests for this API key (or client address); retry after Retry-After seconds.",
        {
            "rate-limited": _problem(
                429, "rate-limited", "Too many requests", "At most 1200 requests per minute; retry in 17 s."
            )
        },
    ),
    502: (
        "A dependency answered unexpectedly.",
        {
            "bad-gateway": _problem(
                502, "bad-gateway", "Bad gateway", "The ensemble service answered unexpectedly: ..."
            )
        },
    ),
    503: (
        "A dependency is down; retry after Retry-After seconds.",
        {
            "service-unavailable": _problem(
                503,
                "service-unavailable",
                "Service temporarily unavailable",
                "The ensemble service is unavailable: ConnectError",
            )
        },
    ),
    504: (
        "The request deadline passed; retry after Retry-After seconds, or send fewer images.",
        {
            "deadline-exceeded": _problem(
                504,
                "deadline-exceeded",
                "Request took too long",
                "No answer within the request deadline of 60 s; retry, or send fewer images.",
            )
        },
    ),
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for problem statuses, each with its schema and examples under problem+json.

    The schema is inlined: FastAPI's `model` key would file it under application/json instead.
    """
    schema = ProblemDetails.model_json_schema()
    return {
        status: {
            "description": PROBLEM_EXAMPLES[status][0],
            "content": {
                PROBLEM_MEDIA_TYPE: {
                    "schema": schema,
                    "examples": {
                        name: {"summary": value["title"], "value": value}
                        for name, value in PROBLEM_EXAMPLES[status][1].items()
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
