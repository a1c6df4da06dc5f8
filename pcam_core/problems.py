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
PROBLEM_TYPE_BASE: Final = "/problems/"
"""Default base of problem `type` URIs: a relative reference (RFC 9457 3.1.1), so a type resolves
against the API's own address, where the gateway serves a page per kind (`/problems/{kind}`). Services
take another base from their `problem_type_base` setting."""


@dataclass(frozen=True)
class ProblemType:
    status: int
    title: str
    error: type[errors.PCamError] | None
    """The domain error raising this kind; None for the framework's own answers (404, 405, 500, ...)."""
    about: str
    """What happened, for the kind's page."""
    action: str
    """What the caller can do about it, for the kind's page."""
    headers: tuple[tuple[str, str], ...] = ()
    """Headers every answer of this kind carries (Retry-After comes from the error itself)."""


E = errors
_IMAGE = "Send a 96x96 8-bit RGB (or grey, palette) patch as PNG, JPEG, TIFF or BMP, one per file."
_RETRY = "Retry after the Retry-After seconds, with backoff; the answer is not cached, so a retry is safe."
PROBLEM_TYPES: Final[dict[str, ProblemType]] = {
    # what the caller sent
    "empty-image": ProblemType(
        400, "Empty image", E.ImageRejected, "An uploaded file had no bytes.", _IMAGE
    ),
    "unsupported-image": ProblemType(
        415, "Unsupported image", E.ImageRejected,
        "An uploaded file is not an image in a format the service decodes (PNG, JPEG, TIFF, BMP).", _IMAGE,
    ),
    "corrupt-image": ProblemType(
        422, "Corrupt image", E.ImageRejected,
        "An uploaded file claims an image format but could not be decoded (truncated or damaged).",
        "Check the file opens locally (for example with Pillow) and upload it again.",
    ),
    "decompression-bomb": ProblemType(
        422, "Decompression bomb", E.ImageRejected,
        "An uploaded image declares far more pixels than a 96x96 patch; it was refused before decoding.",
        "Cut the image into 96x96 patches first (`pcam slide predict` does this for whole slides).",
    ),
    "wrong-size": ProblemType(
        422, "Wrong image size", E.ImageRejected,
        "The model reads 96x96 patches at PCam's resolution (10x); another size is never resized, "
        "since that would change what the center 32x32 region means.",
        "Crop or tile at 96x96 pixels at about 0.97 um/px; for a whole slide use `pcam slide predict`.",
    ),
    "multi-frame-image": ProblemType(
        422, "Multi-frame image", E.ImageRejected,
        "An uploaded image holds several frames or pages; which one to score would be a guess.",
        "Upload each frame as its own file.",
    ),
    "unsupported-mode": ProblemType(
        422, "Unsupported pixel mode", E.ImageRejected,
        "The image's pixel mode (16-bit, 32-bit integer or floating point) has no 8-bit RGB reading.",
        "Convert the patch to 8-bit RGB before uploading.",
    ),
    "transparent-image": ProblemType(
        422, "Transparent pixels", E.ImageRejected,
        "The image has transparent pixels; compositing them on a background would invent tissue.",
        "Upload the patch without an alpha channel, or with every pixel opaque.",
    ),
    "payload-too-large": ProblemType(
        413, "Payload too large", E.UploadTooLarge,
        "The request body is larger than the service accepts.",
        "Send fewer images per request (see the API description for the limits), or use the tensor "
        "route `/v2/models/pcam/infer`.",
    ),
    "image-too-large": ProblemType(
        413, "Image too large", E.UploadTooLarge,
        "One uploaded file is larger than the per-image byte limit.",
        "A 96x96 patch needs a few tens of kilobytes; re-encode it (PNG or JPEG).",
    ),
    "too-many-files": ProblemType(
        413, "Too many files", E.UploadTooLarge,
        "The request holds more files than one request may carry.",
        "Split the batch into several requests of at most the limit in the API description.",
    ),
    "unsupported-media-type": ProblemType(
        415, "Unsupported media type", E.UnsupportedMediaType,
        "The request's Content-Type is not one this route takes.",
        "Send multipart/form-data with the field the route names, an image content type, or (on /v2) "
        "application/json or the binary tensor extension.",
    ),
    "invalid-content-length": ProblemType(
        400, "Invalid Content-Length", E.MalformedRequest,
        "The Content-Length header is missing where required, not a number, or disagrees with the body.",
        "Let your HTTP client set Content-Length; do not set it by hand.",
    ),
    "malformed-multipart": ProblemType(
        400, "Malformed multipart body", E.MalformedRequest,
        "The multipart body could not be parsed (boundary, headers or parts broken).",
        "Let your HTTP client build the multipart body (for example `files=` in httpx or requests).",
    ),
    "malformed-batch": ProblemType(
        400, "Malformed batch", E.MalformedRequest,
        "A tensor request's shape, datatype or byte length does not match what it declares.",
        "Send uint8 [N, 96, 96, 3] with N x 27,648 bytes of data (`pcam_client` builds these requests).",
    ),
    "invalid-request": ProblemType(
        422, "Invalid request", E.InvalidRequest,
        "A parameter or field has a value the API does not accept; `errors` lists each one.",
        "Correct the fields named in `detail`; the API description lists every parameter.",
    ),
    "missing-file": ProblemType(
        422, "Missing file", E.InvalidRequest,
        "The multipart body has no part with the field name the route reads.",
        "Name the field `file` for /v1/predict and `files` for /v1/predict/batch.",
    ),
    "not-a-file": ProblemType(
        422, "Not a file", E.InvalidRequest,
        "The field holds a plain form value, not an uploaded file.",
        "Send the image as a file part (with a filename), not as a text field.",
    ),
    "batch-size": ProblemType(
        422, "Invalid batch size", E.InvalidRequest,
        "The number of images is zero or above what one request may carry.",
        "Send between one image and the limit in the API description.",
    ),
    "explain-batch-size": ProblemType(
        422, "Too many images to explain", E.InvalidRequest,
        "Occlusion maps cost over a hundred model passes per image, so fewer images per request may ask for them.",
        "Ask for explanations on at most the limit in the API description, or use explain=cam.",
    ),
    "explain-unavailable": ProblemType(
        422, "Explanation not available", E.InvalidRequest,
        "The serving release has no activation maps of the kind asked for.",
        "Ask for explain=occlusion, or serve a release built with activation maps.",
    ),
    "unknown-operating-point": ProblemType(
        422, "Unknown operating point", E.InvalidRequest,
        "The operating point named is not one of the release's (screening, balanced, high_specificity).",
        "Use a name that GET /v1/models lists for the serving release.",
    ),
    "unauthorized": ProblemType(
        401, "Authentication required", E.NotAuthenticated,
        "This gateway requires an API key and the request carried none.",
        "Send the key in the X-API-Key header or as `Authorization: Bearer <key>`.",
        (("WWW-Authenticate", 'Bearer realm="pcam"'),),
    ),
    "forbidden": ProblemType(
        403, "Invalid API key", E.InvalidCredentials,
        "The API key sent is not one this gateway knows (or it was revoked).",
        "Check the key with whoever runs the gateway; failed attempts count against the rate limit.",
    ),
    "rate-limited": ProblemType(
        429, "Too many requests", E.RateLimited,
        "This client (API key, or address without keys) sent more requests this minute than its quota.",
        "Wait Retry-After seconds; the RateLimit and RateLimit-Policy fields on every answer say how "
        "much of the quota is left. Batch patches into fewer requests.",
    ),
    "request-timeout": ProblemType(
        408, "Request timeout", E.UploadTimeout,
        "The upload did not arrive within the request deadline: the client's side was too slow.",
        "Check the network path, or send fewer images per request.",
    ),
    # the platform's side
    "deadline-exceeded": ProblemType(
        504, "Request took too long", E.DeadlineExceeded,
        "The platform could not answer within the request deadline (a slow dependency, or a large batch).",
        _RETRY + " Fewer images per request finish sooner.",
    ),
    "service-unavailable": ProblemType(
        503, "Service temporarily unavailable", E.DependencyUnavailable,
        "A service the answer needs (preprocess, the ensemble, Triton) is down or not ready.", _RETRY,
    ),
    "overloaded": ProblemType(
        503, "Overloaded", E.Overloaded,
        "The service is at its bound of work in flight and refused this request at once rather than "
        "queue it (admission control).", _RETRY,
    ),
    "model-error": ProblemType(
        502, "Model error", E.MemberRefused,
        "A model of the ensemble refused or failed the inference.",
        "Retry later; if it persists, report the request_id to whoever runs the platform.",
    ),
    "bad-gateway": ProblemType(
        502, "Bad gateway", E.BadGateway,
        "A dependency answered in a way the platform did not expect.",
        "Retry later; if it persists, report the request_id to whoever runs the platform.",
    ),
    # the framework's own answers
    "not-found": ProblemType(
        404, "Not Found", None, "No route has this path.", "Check the path against the API description."
    ),
    "method-not-allowed": ProblemType(
        405, "Method Not Allowed", None, "The route exists but not for this HTTP method.",
        "Use the method the API description gives for this path.",
    ),
    "http-error": ProblemType(
        400, "HTTP error", None, "The request broke the HTTP protocol in a way the server refused.",
        "Let a standard HTTP client build the request.",
    ),
    "internal-error": ProblemType(
        500, "Internal error", None, "An unexpected error in the platform; nothing internal is disclosed.",
        "Retry; if it persists, report the request_id to whoever runs the platform.",
    ),
}  # fmt: skip

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
    """The short kind of a problem type URI, whatever its base (e.g. 'wrong-size')."""
    return problem_type.rsplit("/", 1)[-1]


def kind_body(
    kind: str, detail: str, title: str | None = None, base: str = PROBLEM_TYPE_BASE, **extensions: Any
) -> dict[str, Any]:
    """The problem+json body of a kind in the table (without request id, which a response adds)."""
    spec = PROBLEM_TYPES[kind]
    return {
        "type": base + kind,
        "title": spec.title if title is None else title,
        "status": spec.status,
        "detail": detail,
        **extensions,
    }


def problem_body(error: errors.PCamError, base: str = PROBLEM_TYPE_BASE) -> dict[str, Any]:
    """The problem+json body of a domain error (without request id, which a response adds)."""
    return kind_body(error.kind, error.detail, base=base, **error.extensions)


def item_error(error: errors.PCamError, base: str = PROBLEM_TYPE_BASE) -> ItemError:
    """The per-item problem of a batch entry for a domain error."""
    return ItemError.model_validate(problem_body(error, base))


def rebased(item: ItemError, base: str) -> ItemError:
    """An item problem received from another service, its type under this service's base."""
    return item if item.type == base + item.kind else item.model_copy(update={"type": base + item.kind})


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
