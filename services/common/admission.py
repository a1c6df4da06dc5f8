"""Admission control: each process bounds the work it holds, and beyond the bound refuses at once (503
`overloaded` with Retry-After) instead of queueing work that would only miss its deadline.

A queue in front of a saturated server grows with the overload and delays everyone; a refusal costs the
refused client one round trip and keeps the accepted ones' latency near the unloaded latency.
"""

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from pcam_core.errors import Overloaded
from pcam_core.problems import PROBLEM_TYPE_BASE
from services.common.asgi import HttpMiddleware
from services.common.metric_names import counter, gauge
from services.common.problems import problem_response

IN_FLIGHT = gauge("pcam_admission_in_flight")
LIMIT = gauge("pcam_admission_limit")
REFUSED = counter("pcam_admission_refused_total")
ADMITTED_METHODS = frozenset({"POST"})
"""Only POSTs are work (predictions, preprocessing, inference); probes, metrics and metadata GETs never
wait behind them and are never refused."""


class Admission:
    """Holds at most `limit` units of work (requests, patches) of one scope in one process."""

    def __init__(self, service: str, scope: str, limit: int, retry_after_s: int) -> None:
        if limit < 1:
            raise ValueError(f"admission limit must be at least 1, got {limit}")
        self.scope, self.limit, self.retry_after_s = scope, limit, retry_after_s
        self.held = 0
        self._gauge, self._refused = IN_FLIGHT.labels(service, scope), REFUSED.labels(service, scope)
        LIMIT.labels(service, scope).set(limit)
        self._gauge.set(0)

    def acquire(self, units: int = 1) -> None:
        """Hold `units` more, or raise Overloaded at once. Work larger than the whole limit is admitted
        when nothing else is held, so that it runs alone rather than never."""
        if self.held and self.held + units > self.limit:
            self._refused.inc()
            raise Overloaded(
                f"This service holds {self.held} {self.scope} in flight and may hold {self.limit}; "
                f"retry after {self.retry_after_s} s.",
                retry_after_s=self.retry_after_s,
            )
        self.held += units
        self._gauge.set(self.held)

    def release(self, units: int = 1) -> None:
        self.held -= units
        self._gauge.set(self.held)


class AdmissionMiddleware(HttpMiddleware):
    """Bounds the POST requests a service handles at once; one more is answered 503 `overloaded`."""

    def __init__(
        self, app: ASGIApp, admission: Admission, router: Router, problem_base: str = PROBLEM_TYPE_BASE
    ) -> None:
        super().__init__(app)
        self.admission, self.router, self.problem_base = admission, router, problem_base

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ADMITTED_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            self.admission.acquire()
        except Overloaded as refused:
            self._name_route(scope)
            await problem_response(refused, scope["path"], self.problem_base)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.release()

    def _name_route(self, scope: Scope) -> None:
        """Set the route a refused request was for, as routing would have (the HTTP metrics' label)."""
        for route in self.router.routes:
            if route.matches(scope)[0] == Match.FULL:
                scope["route"] = route
                return
