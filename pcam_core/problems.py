"""The one table from domain errors to RFC 9457 problem details: status, type and title per kind.

No web framework here: the services answer with these bodies, the Python client reads them, and the
per-item errors of a batch carry them. A status code appears in this table and in route declarations,
nowhere else (tests/unit/core/test_problems.py scans the source).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel

from pcam_core import errors

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
PROBLEM_TYPE_BASE: Final = "https://pcam.example/problems/"


@dataclass(frozen=True)
class ProblemType:
    status: int
    title: str
    error: type[errors.PCamError] | None
    """The domain error raising this kind; None for the framework's own answers (404, 405, 500, ...)."""
    headers: tuple[tuple[str, str], ...] = ()
    """Headers every answer of this kind carries (Retry-After comes from the error itself)."""


E = errors
PROBLEM_TYPES: Final[dict[str, ProblemType]] = {
    # what the caller sent
    "empty-image": ProblemType(400, "Empty image", E.ImageRejected),
    "unsupported-image": ProblemType(415, "Unsupported image", E.ImageRejected),
    "corrupt-image": ProblemType(422, "Corrupt image", E.ImageRejected),
    "decompression-bomb": ProblemType(422, "Decompression bomb", E.ImageRejected),
    "wrong-size": ProblemType(422, "Wrong image size", E.ImageRejected),
    "multi-frame-image": ProblemType(422, "Multi-frame image", E.ImageRejected),
    "unsupported-mode": ProblemType(422, "Unsupported pixel mode", E.ImageRejected),
    "transparent-image": ProblemType(422, "Transparent pixels", E.ImageRejected),
    "payload-too-large": ProblemType(413, "Payload too large", E.UploadTooLarge),
    "image-too-large": ProblemType(413, "Image too large", E.UploadTooLarge),
    "too-many-files": ProblemType(413, "Too many files", E.UploadTooLarge),
    "unsupported-media-type": ProblemType(415, "Unsupported media type", E.UnsupportedMediaType),
    "invalid-content-length": ProblemType(400, "Invalid Content-Length", E.MalformedRequest),
    "malformed-multipart": ProblemType(400, "Malformed multipart body", E.MalformedRequest),
    "malformed-batch": ProblemType(400, "Malformed batch", E.MalformedRequest),
    "invalid-request": ProblemType(422, "Invalid request", E.InvalidRequest),
    "missing-file": ProblemType(422, "Missing file", E.InvalidRequest),
    "not-a-file": ProblemType(422, "Not a file", E.InvalidRequest),
    "batch-size": ProblemType(422, "Invalid batch size", E.InvalidRequest),
    "explain-batch-size": ProblemType(422, "Too many images to explain", E.InvalidRequest),
    "explain-unavailable": ProblemType(422, "Explanation not available", E.InvalidRequest),
    "unknown-operating-point": ProblemType(422, "Unknown operating point", E.InvalidRequest),
    "unauthorized": ProblemType(
        401, "Authentication required", E.NotAuthenticated, (("WWW-Authenticate", 'Bearer realm="pcam"'),)
    ),
    "forbidden": ProblemType(403, "Invalid API key", E.InvalidCredentials),
    "rate-limited": ProblemType(429, "Too many requests", E.RateLimited),
    "request-timeout": ProblemType(408, "Request timeout", E.UploadTimeout),
    # the platform's side
    "deadline-exceeded": ProblemType(504, "Request took too long", E.DeadlineExceeded),
    "service-unavailable": ProblemType(503, "Service temporarily unavailable", E.DependencyUnavailable),
    "overloaded": ProblemType(503, "Overloaded", E.Overloaded),
    "model-error": ProblemType(502, "Model error", E.MemberRefused),
    "bad-gateway": ProblemType(502, "Bad gateway", E.BadGateway),
    # the framework's own answers
    "not-found": ProblemType(404, "Not Found", None),
    "method-not-allowed": ProblemType(405, "Method Not Allowed", None),
    "http-error": ProblemType(400, "HTTP error", None),
    "internal-error": ProblemType(500, "Internal error", None),
}

KIND_OF_STATUS: Final = {PROBLEM_TYPES[k].status: k for k in ("not-found", "method-not-allowed")}
"""The framework's routing answers by status, for the handler that turns them into problems."""
INPUT_FAULTS: Final = (
    errors.ImageRejected,
    errors.UploadTooLarge,
    errors.UnsupportedMediaType,
    errors.MalformedRequest,
)
"""Errors that one upload can cause on its own: the other uploads of its batch are unaffected."""
INPUT_FAULT_STATUSES: Final = frozenset(
    spec.status
    for spec in PROBLEM_TYPES.values()
    if spec.error is not None and issubclass(spec.error, INPUT_FAULTS)
)
"""Their statuses: how a client tells an upload's own fault from one that fails every upload alike."""


class ItemError(BaseModel):
    """A problem (RFC 9457) for one image of a batch."""

    type: str
    title: str
    status: int
    detail: str

    @property
    def kind(self) -> str:
        """The short name of the problem type (e.g. 'wrong-size')."""
        return problem_kind(self.type)


def problem_kind(problem_type: str) -> str:
    """The short kind of a problem type URI (e.g. 'wrong-size')."""
    return problem_type.removeprefix(PROBLEM_TYPE_BASE)


def kind_body(kind: str, detail: str, title: str | None = None, **extensions: Any) -> dict[str, Any]:
    """The problem+json body of a kind in the table (without request id, which a response adds)."""
    spec = PROBLEM_TYPES[kind]
    return {
        "type": PROBLEM_TYPE_BASE + kind,
        "title": spec.title if title is None else title,
        "status": spec.status,
        "detail": detail,
        **extensions,
    }


def problem_body(error: errors.PCamError) -> dict[str, Any]:
    """The problem+json body of a domain error (without request id, which a response adds)."""
    return kind_body(error.kind, error.detail, **error.extensions)


def item_error(error: errors.PCamError) -> ItemError:
    """The per-item problem of a batch entry for a domain error."""
    return ItemError.model_validate(problem_body(error))


def domain_error(body: ItemError | dict[str, Any]) -> errors.PCamError:
    """The domain error a problem body describes (one received from another service)."""
    problem = body if isinstance(body, ItemError) else ItemError.model_validate(body)
    spec = PROBLEM_TYPES.get(problem.kind)
    if spec is None or spec.error is None:
        return errors.BadGateway(f"unknown problem {problem.kind!r}: {problem.detail}")
    known = {"type", "title", "status", "detail", "request_id"}
    extensions = {k: v for k, v in body.items() if k not in known} if isinstance(body, dict) else {}
    return spec.error(problem.detail, kind=problem.kind, **extensions)


def status_of(error: errors.PCamError) -> int:
    """The HTTP status the table gives a domain error."""
    return PROBLEM_TYPES[error.kind].status
