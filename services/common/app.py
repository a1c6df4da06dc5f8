"""The FastAPI skeleton every service shares: request ids, problem+json, metrics, liveness."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.common.admission import Admission, AdmissionMiddleware
from services.common.logging_setup import AccessLogMiddleware
from services.common.metrics import HttpMetricsMiddleware
from services.common.problems import UnhandledErrorMiddleware, install_problem_handlers
from services.common.request_id import RequestIdMiddleware
from services.common.settings import ServiceSettings
from services.common.tracing import flush_on_shutdown, instrument_app, setup_tracing
from services.common.uploads import BodyLimitMiddleware

RESEARCH_USE_NOTICE = "**Research use only.** Not a medical device; not for diagnosis or treatment decisions."

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None] | AsyncIterator[None]]


def create_service_app(
    service: str,
    title: str,
    description: str,
    lifespan: Lifespan,
    max_body_bytes: int,
    settings: ServiceSettings,
) -> FastAPI:
    """A FastAPI app with the shared middleware, error model, body cap, bound on requests in flight,
    `/healthz` and `/metrics`."""
    tracer_provider = setup_tracing(service)  # None unless OTEL_* asks for traces
    app = FastAPI(
        title=title,
        description=f"{RESEARCH_USE_NOTICE}\n\n{description}",
        version="0.1.0",
        lifespan=flush_on_shutdown(lifespan, tracer_provider),
    )
    # Added innermost first; from the outside in: (trace span when tracing is on,) request id, access
    # log, 500 catch-all, metrics, admission (refusals are logged and counted), body cap.
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    requests = Admission(
        service, "requests", settings.max_in_flight_requests, settings.overload_retry_after_s
    )
    base = settings.problem_type_base
    app.add_middleware(AdmissionMiddleware, admission=requests, router=app.router, problem_base=base)
    app.add_middleware(HttpMetricsMiddleware, service=service)
    app.add_middleware(UnhandledErrorMiddleware, base=base)
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.state.tracer_provider = tracer_provider  # lifespans instrument their clients with it
    instrument_app(app, tracer_provider)
    install_problem_handlers(app, base)

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process is up.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics.", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
