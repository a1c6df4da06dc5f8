"""Small pieces the pure ASGI middlewares share."""

from starlette.types import Message, Send


class StatusRecordingSend:
    """Wraps an ASGI `send` and remembers the response status (500 until a response starts)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 500
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status, self.started = message["status"], True
        await self._send(message)
