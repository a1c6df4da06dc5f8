"""HTTP metrics every service exports, the middleware that records them, and the release-info gauge.

Names, types and labels are declared in services.common.metric_names.
"""

import threading
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.asgi import HttpMiddleware, StatusRecordingSend
from services.common.metric_names import counter, gauge, histogram

HTTP_REQUESTS = counter("pcam_http_requests_total")
HTTP_LATENCY = histogram(
    "pcam_http_request_duration_seconds",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RELEASE_INFO = gauge("pcam_release_info")
UNTIMED_ROUTES = frozenset({"/metrics"})
"""Scrapes are neither counted nor timed: they would swamp the request rate and latency of the API."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Any other method is recorded as OTHER (a client chooses it, so it must not grow the label set)."""
UNMATCHED_ROUTE = "unmatched"


class HttpMetricsMiddleware(HttpMiddleware):
    """Counts and times requests by route template (never by raw path, to bound cardinality)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        super().__init__(app)
        self.service = service

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        start, recording = time.perf_counter(), StatusRecordingSend(send)
        try:
            await self.app(scope, receive, recording)
        finally:
            status = recording.status
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            if route not in UNTIMED_ROUTES:
                method = scope["method"] if scope["method"] in METHODS else "OTHER"
                labels = (self.service, route, method, str(status))
                HTTP_REQUESTS.labels(*labels).inc()
                HTTP_LATENCY.labels(*labels).observe(time.perf_counter() - start)


class ReleaseInfo:
    """pcam_release_info{service, release} = 1 for the serving release; a swap removes the old series
    (a dashboard must never see two releases serving in one process)."""

    _lock = threading.Lock()
    _serving: dict[str, str] = {}  # service -> release with a series (one process, shared by its apps)

    def __init__(self, service: str) -> None:
        self.service = service

    def set(self, release_id: str) -> None:
        with self._lock:
            old = self._serving.get(self.service)
            if old is not None and old != release_id:
                RELEASE_INFO.remove(self.service, old)
            RELEASE_INFO.labels(self.service, release_id).set(1)
            self._serving[self.service] = release_id
