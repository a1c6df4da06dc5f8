"""OpenTelemetry tracing, off unless the standard `OTEL_*` environment asks for it.

The rule (`tracing_enabled`): tracing is ON when `OTEL_SDK_DISABLED` is not `true` and either
`OTEL_TRACES_EXPORTER` names an exporter other than `none` (`otlp`, or `console` for debugging), or an
OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). Otherwise no
provider, no exporter and no background thread exist, and every helper here is a no-op.

When on, spans go to OTLP over HTTP/protobuf (the exporter reads the usual `OTEL_EXPORTER_OTLP_*`
variables; default `http://localhost:4318/v1/traces`) through a batch processor; `OTEL_SERVICE_NAME`
overrides the service name, `OTEL_RESOURCE_ATTRIBUTES` adds attributes, `OTEL_TRACES_SAMPLER` picks the
sampler (default: parent-based always-on). FastAPI server spans (not for probes and scrapes), httpx client
spans and Redis spans are recorded; W3C `traceparent` travels on every HTTP hop (httpx instrumentation)
and into Triton's gRPC metadata (`grpc_trace_headers`).
"""

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

logger = logging.getLogger(__name__)

EXCLUDED_URLS = "/healthz,/readyz,/metrics"
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the `OTEL_*` environment asks for traces (the rule in the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return any(env.get(name, "").strip() for name in _ENDPOINT_VARIABLES)


def otlp_traces_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The OTLP/HTTP traces URL the `OTEL_*` environment names (spec: signal endpoint as is, else
    `<endpoint>/v1/traces`); None when tracing is off, spans do not go to OTLP, or OTLP is asked for
    over gRPC (this platform's exporters, Triton's included, speak OTLP over HTTP)."""
    env = os.environ if environ is None else environ
    exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    if not tracing_enabled(env) or exporter not in ("", "otlp") or protocol.strip().lower() == "grpc":
        return None
    if signal := env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return signal
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "http://localhost:4318"
    return f"{base.rstrip('/')}/v1/traces"


def _exporter(environ: Mapping[str, str]) -> SpanExporter:
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if n.strip()]
    if names[:1] == ["console"]:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if names[:1] not in ([], ["otlp"]):
        logger.warning("OTEL_TRACES_EXPORTER=%s not supported here; using otlp", ",".join(names))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def setup_tracing(
    service_name: str, environ: Mapping[str, str] | None = None, set_global: bool = True
) -> TracerProvider | None:
    """This service's tracer provider when tracing is enabled (see the module docstring), else None.

    The provider becomes the global one unless `set_global` is false (tests build several in one process).
    """
    env = os.environ if environ is None else environ
    if not tracing_enabled(env):
        return None
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; OTEL_SERVICE_NAME wins.
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: f"pcam-{service_name}"}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(_exporter(env)))
    if set_global:
        trace.set_tracer_provider(provider)
    logger.info("tracing on: service %s", provider.resource.attributes.get(SERVICE_NAME))
    return provider


def flush_on_shutdown(
    lifespan: Callable[[FastAPI], Any], provider: TracerProvider | None
) -> Callable[[FastAPI], Any]:
    """The lifespan, exporting the spans still queued when it ends (unchanged when tracing is off).

    uvicorn re-raises SIGTERM after a graceful shutdown, so the SDK's atexit flush would never run.
    """
    if provider is None:
        return lifespan

    @asynccontextmanager
    async def flushing(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with lifespan(app):
                yield
        finally:
            await asyncio.to_thread(provider.shutdown)

    return flushing


def instrument_app(app: FastAPI, provider: TracerProvider | None) -> None:
    """Server spans for every request but probes and scrapes; the incoming `traceparent` is the parent."""
    if provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # One span per request: no extra spans for each ASGI receive/send message.
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls=EXCLUDED_URLS, exclude_spans=["receive", "send"]
    )


def instrument_httpx(client: object, provider: TracerProvider | None) -> None:
    """Client spans for one httpx client, which then sends `traceparent` on every request."""
    if provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)


def instrument_redis(client: object, provider: TracerProvider | None) -> None:
    """Spans for one Redis client's commands (the statement's arguments are not recorded)."""
    if provider is None:
        return
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor.instrument_client(client, tracer_provider=provider)


def grpc_trace_headers() -> dict[str, str] | None:
    """The current trace context as gRPC metadata (`traceparent`, ...) for Triton; None outside a trace."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None
