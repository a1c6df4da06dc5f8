"""Domain errors as RFC 9457 problem+json responses, through the one table in pcam_core.problems."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from pcam_core.errors import InvalidRequest, PCamError
from pcam_core.problems import (
    KIND_OF_STATUS,
    PROBLEM_MEDIA_TYPE,
    PROBLEM_TYPE_BASE,
    PROBLEM_TYPES,
    kind_body,
    problem_body,
)
from services.common.asgi import HttpMiddleware, StatusRecordingSend
from services.common.request_id import current_request_id

logger = logging.getLogger(__name__)


OIP_PATHS = "/v2"
"""Routes of the Open Inference Protocol (KServe v2): their problems also carry `error`, the member
KServe v2 clients (tritonclient) read the message from."""


def problem_response(error: PCamError, path: str = "", base: str = PROBLEM_TYPE_BASE) -> JSONResponse:
    """The problem+json response of a domain error, carrying the current request id; its type under
    `base` (the service's problem_type_base)."""
    spec = PROBLEM_TYPES[error.kind]
    headers = dict(spec.headers)
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    body = {**problem_body(error, base), "request_id": current_request_id(), **_oip_error(path, error.detail)}
    return JSONResponse(body, status_code=spec.status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _oip_error(path: str, detail: str) -> dict[str, str]:
    return {"error": detail} if path == OIP_PATHS or path.startswith(OIP_PATHS + "/") else {}


def _framework_problem(
    kind: str,
    detail: str,
    title: str | None = None,
    status: int | None = None,
    headers: dict | None = None,
    base: str = PROBLEM_TYPE_BASE,
    **extensions: str,
) -> JSONResponse:
    """An answer of the framework itself (routing, an unexpected error) in the same shape.

    `status` is the framework's own where the table's kind stands for several (http-error).
    """
    body = kind_body(kind, detail, title, base, request_id=current_request_id(), **extensions)
    if status is not None:
        body["status"] = status
    return JSONResponse(body, status_code=body["status"], headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def install_problem_handlers(app: FastAPI, base: str = PROBLEM_TYPE_BASE) -> None:
    """Turn domain and framework errors into problem+json, types under `base` (unexpected errors:
    UnhandledErrorMiddleware)."""

    @app.exception_handler(PCamError)
    async def _domain(request: Request, exc: PCamError) -> JSONResponse:
        return problem_response(exc, request.url.path, base)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem_response(
            InvalidRequest(detail, kind="invalid-request", errors=errors), request.url.path, base
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = KIND_OF_STATUS.get(exc.status_code, "http-error")
        title = str(exc.detail) if isinstance(exc.detail, str) else PROBLEM_TYPES[kind].title
        return _framework_problem(
            kind, title, title, exc.status_code, exc.headers, base, **_oip_error(request.url.path, title)
        )


class UnhandledErrorMiddleware(HttpMiddleware):
    """Answers an unexpected exception with a bare 500 problem (nothing internal leaks).

    Sits inside RequestIdMiddleware, so even this answer carries the request id.
    """

    def __init__(self, app: ASGIApp, base: str = PROBLEM_TYPE_BASE) -> None:
        super().__init__(app)
        self.base = base

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        recording = StatusRecordingSend(send)
        try:
            await self.app(scope, receive, recording)
        except Exception:
            logger.exception("unhandled error")
            if not recording.started:
                response = _framework_problem(
                    "internal-error", "An unexpected error occurred.", base=self.base
                )
                await response(scope, receive, send)
