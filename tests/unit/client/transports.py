"""httpx transports for the client's unit tests: a handler stands in for the gateway, requests are kept."""

from collections.abc import Callable

import httpx

Handler = Callable[[httpx.Request], httpx.Response]


def recording(handler: Handler) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport answering with `handler`, and the list of the requests it received."""
    requests: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return handler(request)

    return httpx.MockTransport(record), requests
