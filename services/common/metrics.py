"""HTTP metrics every service exports, and the middleware that records them."""

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "pcam_http_requests_total", "HTTP requests handled.", ["service", "route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "pcam_http_request_duration_seconds",
    "HTTP request latency, from first byte in to last byte out.",
    ["service", "route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UNTIMED_ROUTES = frozenset({"/metrics"})


class HttpMetricsMiddleware:
    """Counts and times requests by route template (never by raw path, to bound cardinality)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            if route not in UNTIMED_ROUTES:
                method = scope["method"]
                HTTP_REQUESTS.labels(self.service, route, method, str(status)).inc()
                HTTP_LATENCY.labels(self.service, route, method).observe(time.perf_counter() - start)
