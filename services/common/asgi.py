"""Small pieces the pure ASGI middlewares share."""

from http import HTTPStatus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_NO_RESPONSE = int(HTTPStatus.INTERNAL_SERVER_ERROR)  # an enum member lookup costs microseconds per request


class StatusRecordingSend:
    """Wraps an ASGI `send` and remembers the response status (500 until a response starts)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status: int = _NO_RESPONSE
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status, self.started = message["status"], True
        await self._send(message)


class HttpMiddleware:
    """A pure ASGI middleware for HTTP requests: other scopes (lifespan) pass straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One HTTP request."""
        raise NotImplementedError
