"""Domain errors: what went wrong, in the platform's words; `pcam_core.problems` says what HTTP makes of it.

Each error has a `kind` (the stable name clients see as the problem type) and a `detail` naming what
was wrong. Code that serves HTTP maps them through the one table in `pcam_core.problems`; offline
tools (`pcam predict`) report `kind: detail` without any HTTP vocabulary.
"""

from __future__ import annotations

from typing import Any, ClassVar


class PCamError(Exception):
    """Base of every domain error; `kind` names it (one of `KINDS` of its class)."""

    KINDS: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, detail: str, *, kind: str | None = None, retry_after_s: int | None = None, **extensions: Any
    ) -> None:
        if kind is None and len(self.KINDS) == 1:
            kind = self.KINDS[0]
        if kind not in self.KINDS:
            raise ValueError(f"{type(self).__name__} has no kind {kind!r}; one of {self.KINDS}")
        super().__init__(detail)
        self.kind, self.detail, self.extensions = kind, detail, extensions
        self.retry_after_s = retry_after_s
        """Set where the caller may retry after that many seconds (rate limits, outages)."""

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


# --- the caller's input -------------------------------------------------------------------------------


class ImageRejected(PCamError):
    """An upload that is not a usable patch (not decodable, wrong size or mode, transparent, a bomb)."""

    KINDS = (
        "empty-image",
        "unsupported-image",
        "corrupt-image",
        "decompression-bomb",
        "wrong-size",
        "multi-frame-image",
        "unsupported-mode",
        "transparent-image",
    )


class UploadTooLarge(PCamError):
    """A body, an image or a number of files over the configured limits."""

    KINDS = ("payload-too-large", "image-too-large", "too-many-files")


class UnsupportedMediaType(PCamError):
    """A request body in a content type the endpoint does not take."""

    KINDS = ("unsupported-media-type",)


class MalformedRequest(PCamError):
    """A request whose framing cannot be read (headers, multipart body, binary batch frame)."""

    KINDS = ("invalid-content-length", "malformed-multipart", "malformed-batch")


class InvalidRequest(PCamError):
    """A well-formed request asking for something not allowed (a missing file, an unknown option)."""

    KINDS = (
        "invalid-request",
        "missing-file",
        "not-a-file",
        "batch-size",
        "explain-batch-size",
        "explain-unavailable",
        "unknown-operating-point",
    )


class NotAuthenticated(PCamError):
    """No credentials where they are required."""

    KINDS = ("unauthorized",)


class InvalidCredentials(PCamError):
    """Credentials that match no key."""

    KINDS = ("forbidden",)


class RateLimited(PCamError):
    """The caller sent more requests than its limit allows in the current window."""

    KINDS = ("rate-limited",)


class UploadTimeout(PCamError):
    """The upload did not arrive within the request deadline (the client's side was slow)."""

    KINDS = ("request-timeout",)


# --- the platform's side --------------------------------------------------------------------------------


class DeadlineExceeded(PCamError):
    """No answer within the request deadline (a large request, a slow dependency)."""

    KINDS = ("deadline-exceeded",)


class DependencyUnavailable(PCamError):
    """A service the answer needs is down or restarting."""

    KINDS = ("service-unavailable",)


class Overloaded(PCamError):
    """The service holds as much work as it is allowed to (admission control): refused at once, to be
    retried after Retry-After, instead of queued behind work that would miss its deadline."""

    KINDS = ("overloaded",)


class MemberUnavailable(DependencyUnavailable):
    """Too few ensemble members answered because the model server is unavailable."""


class ReleaseMismatch(DependencyUnavailable):
    """A batch was prepared for a release this process does not (or no longer) serve."""


class MemberRefused(PCamError):
    """A member refused the call or answered outside the model contract: a retry would not help."""

    KINDS = ("model-error",)


class BadGateway(PCamError):
    """A dependency answered in a way that breaks its contract."""

    KINDS = ("bad-gateway",)
