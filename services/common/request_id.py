"""The request id: taken from `X-Request-ID` when well-formed, generated otherwise, echoed back."""

import re
import uuid
from contextvars import ContextVar

from starlette.types import Message, Receive, Scope, Send

from services.common.asgi import HttpMiddleware

REQUEST_ID_HEADER = "X-Request-ID"
_VALID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
_request_id: ContextVar[str] = ContextVar("request_id", default="-")


def current_request_id() -> str:
    """The id of the request being handled ('-' outside a request)."""
    return _request_id.get()


class RequestIdMiddleware(HttpMiddleware):
    """Pure ASGI middleware (no body buffering) that binds the request id for the request's life."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = incoming if _VALID.match(incoming) else uuid.uuid4().hex
        token = _request_id.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)
