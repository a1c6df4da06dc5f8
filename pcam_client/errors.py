"""What the client raises: the gateway's problem+json answers and transport failures."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

REQUEST_ID_HEADER = "X-Request-ID"


class PCamError(Exception):
    """Base of every error this client raises (also an answer that does not fit the published schema)."""


class PCamConnectionError(PCamError):
    """The gateway could not be reached or gave no answer in time (DNS, refused, reset, timeout)."""


class PCamAPIError(PCamError):
    """The gateway answered with an error (RFC 9457 problem details where it sent them)."""

    def __init__(
        self,
        status: int,
        type: str,
        title: str,
        detail: str,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status, self.type, self.title, self.detail = status, type, title, detail
        self.request_id, self.retry_after = request_id, retry_after
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.status} {self.title}: {self.detail}" if self.detail else f"{self.status} {self.title}"
        return f"{text} (request {self.request_id})" if self.request_id else text

    @property
    def kind(self) -> str:
        """The problem's short name (e.g. 'wrong-size'): the last segment of its type URI."""
        return self.type.rsplit("/", 1)[-1]

    def to_problem(self) -> dict[str, Any]:
        """The problem body (type, title, status, detail), as the gateway puts it in a batch entry."""
        return {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail}

    @classmethod
    def from_response(cls, response: httpx.Response) -> PCamAPIError:
        """The error of a non-2xx answer; a body that is not a problem (e.g. a proxy's page) still yields one."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        request_id = body.get("request_id") or response.headers.get(REQUEST_ID_HEADER)
        return cls(
            status=response.status_code,
            # A relative type (the gateway's default, RFC 9457 3.1.1) resolves against the answer's URL,
            # where the gateway serves the kind's page.
            type=str(response.url.join(str(body["type"]))) if body.get("type") else "about:blank",
            title=str(body.get("title") or response.reason_phrase or "HTTP error"),
            detail=str(body.get("detail") or ("" if body else response.text[:200])),
            request_id=str(request_id) if request_id else None,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date); None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None
