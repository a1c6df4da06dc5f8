"""RFC 9457 problem details: the one error model of every service."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from services.common.asgi import HttpMiddleware, StatusRecordingSend
from services.common.problem_types import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE
from services.common.request_id import current_request_id

logger = logging.getLogger(__name__)


class Problem(Exception):
    """An error the client should see; `kind` becomes the problem type URI."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail
        self.headers = headers or {}
        self.extensions = extensions

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Problem:
        """Rebuild a problem received from another service."""
        known = {"type", "title", "status", "detail", "request_id"}
        extensions = {k: v for k, v in body.items() if k not in known}
        kind = problem_kind(str(body.get("type", "about:blank")))
        return cls(int(body["status"]), kind, str(body["title"]), str(body.get("detail", "")), **extensions)

    def to_dict(self) -> dict[str, Any]:
        """The problem body (without request id, which the response adds)."""
        return {
            "type": PROBLEM_TYPE_BASE + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extensions,
        }


class ServiceUnavailable(Problem):
    """A dependency is down or busy: 503 with Retry-After, so clients back off and retry."""

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(
            503,
            "service-unavailable",
            "Service temporarily unavailable",
            detail,
            headers={"Retry-After": str(retry_after_s)},
        )


def problem_kind(problem_type: str) -> str:
    """The short kind of a problem type URI (e.g. 'wrong-size')."""
    return problem_type.removeprefix(PROBLEM_TYPE_BASE)


def problem_response(problem: Problem) -> JSONResponse:
    """A problem+json response carrying the current request id."""
    body = {**problem.to_dict(), "request_id": current_request_id()}
    return JSONResponse(
        body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_MEDIA_TYPE
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Turn client and framework errors into problem+json (unexpected ones: UnhandledErrorMiddleware)."""

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem_response(Problem(422, "invalid-request", "Invalid request", detail, errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        title = str(exc.detail) if isinstance(exc.detail, str) else "HTTP error"
        return problem_response(Problem(exc.status_code, kind, title, title, headers=exc.headers))


class UnhandledErrorMiddleware(HttpMiddleware):
    """Answers an unexpected exception with a bare 500 problem (nothing internal leaks).

    Sits inside RequestIdMiddleware, so even this answer carries the request id.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        recording = StatusRecordingSend(send)
        try:
            await self.app(scope, receive, recording)
        except Exception:
            logger.exception("unhandled error")
            if not recording.started:
                problem = Problem(500, "internal-error", "Internal error", "An unexpected error occurred.")
                await problem_response(problem)(scope, receive, send)
