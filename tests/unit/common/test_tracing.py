"""Tracing: off by default; when on, one gateway request is one trace across gateway, preprocess and
ensemble, the context travelling in real HTTP `traceparent` headers (and into Triton's gRPC metadata)."""

import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi.testclient import TestClient
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import services.common.app as common_app
import services.ensemble.app as ensemble_app
from devstack.ports import free_port
from services.common import tracing
from services.ensemble.settings import EnsembleSettings
from services.gateway.app import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.preprocess.app import create_app as create_preprocess
from services.preprocess.settings import PreprocessSettings
from tests.unit.common.release_fixture import write_test_release
from tests.unit.ensemble.fakes import FakeTriton, mean_pixel


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_the_otel_environment_turns_tracing_on(env: dict[str, str], on: bool) -> None:
    assert tracing.tracing_enabled(env) is on


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, None),
        ({"OTEL_TRACES_EXPORTER": "console"}, None),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "http://localhost:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, None),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x",
            },
            "http://t/x",
        ),
    ],
)
def test_the_otlp_traces_url_follows_the_otel_endpoint_rules(env: dict[str, str], url: str | None) -> None:
    """The URL devstack hands Triton: the signal endpoint as is, else <endpoint>/v1/traces."""
    assert tracing.otlp_traces_url(env) == url


def test_off_by_default_no_provider_and_no_thread() -> None:
    threads = threading.active_count()
    assert tracing.setup_tracing("gateway", environ={}) is None
    assert tracing.grpc_trace_headers() is None  # outside any trace: no metadata
    assert threading.active_count() == threads


def test_on_builds_a_named_provider() -> None:
    provider = tracing.setup_tracing("gateway", environ={"OTEL_TRACES_EXPORTER": "otlp"}, set_global=False)
    try:
        assert provider is not None
        assert provider.resource.attributes[SERVICE_NAME] == "pcam-gateway"
    finally:
        provider.shutdown()


class ServerThread:
    """A FastAPI app served by uvicorn on a free port in a thread (real HTTP between the services)."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def traced(monkeypatch) -> Iterator[tuple[InMemorySpanExporter, dict[str, TracerProvider]]]:
    """Each service gets its own provider (as in its own process) exporting to one in-memory exporter."""
    exporter = InMemorySpanExporter()
    providers: dict[str, TracerProvider] = {}

    def setup(service: str) -> TracerProvider:
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"pcam-{service}"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers[service] = provider
        return provider

    monkeypatch.setattr(common_app, "setup_tracing", setup)
    yield exporter, providers
    for provider in providers.values():
        provider.shutdown()


def test_one_request_is_one_trace_across_the_services(tmp_path, patch_paths, traced, monkeypatch) -> None:
    exporter, _ = traced
    write_test_release(tmp_path, "rel-t")
    triton = FakeTriton({"m1": mean_pixel})
    monkeypatch.setattr(ensemble_app, "connect", lambda url, retry: triton)
    preprocess = create_preprocess(PreprocessSettings(model_repository=tmp_path))
    ensemble = ensemble_app.create_app(
        EnsembleSettings(model_repository=tmp_path, triton_grpc_url="127.0.0.1:1")
    )
    with ServerThread(preprocess) as preprocess_url, ServerThread(ensemble) as ensemble_url:
        settings = GatewaySettings(
            preprocess_url=preprocess_url,
            ensemble_url=ensemble_url,
            redis_url=f"redis://127.0.0.1:{free_port()}/0",  # down: a cache miss, still traced
        )
        with TestClient(create_gateway(settings)) as client:
            exporter.clear()  # startup calls (the release fetch) are not this request
            response = client.post(
                "/v1/predict", content=patch_paths[0].read_bytes(), headers={"content-type": "image/png"}
            )
            assert response.status_code == 200, response.text
            assert client.get("/healthz").status_code == 200  # probes make no spans

    spans = exporter.get_finished_spans()
    by_service: dict[str, list] = {}
    for span in spans:
        by_service.setdefault(span.resource.attributes[SERVICE_NAME], []).append(span)
    assert {"pcam-gateway", "pcam-preprocess", "pcam-ensemble"} <= set(by_service)
    assert len({span.context.trace_id for span in spans}) == 1

    # Each downstream server span's parent is a gateway httpx client span: the header crossed the wire.
    gateway_clients = {s.context.span_id for s in by_service["pcam-gateway"] if s.kind is SpanKind.CLIENT}
    for service in ("pcam-preprocess", "pcam-ensemble"):
        servers = [s for s in by_service[service] if s.kind is SpanKind.SERVER]
        assert servers and all(s.parent.is_remote and s.parent.span_id in gateway_clients for s in servers)
    assert not any("healthz" in span.name for span in spans)

    # Triton got the same trace in its gRPC metadata.
    trace_id = f"{spans[0].context.trace_id:032x}"
    assert triton.headers and all(h and h["traceparent"].split("-")[1] == trace_id for h in triton.headers)


def test_queued_spans_are_exported_when_the_app_stops(tmp_path, monkeypatch) -> None:
    """uvicorn re-raises SIGTERM after shutdown (no atexit flush): the lifespan's end exports them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "pcam-preprocess"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=600_000))
    monkeypatch.setattr(common_app, "setup_tracing", lambda service: provider)
    write_test_release(tmp_path, "rel-f")
    with TestClient(create_preprocess(PreprocessSettings(model_repository=tmp_path))) as client:
        assert client.get("/v1/nothing-here").status_code == 404
        assert exporter.get_finished_spans() == ()  # still queued
    assert [span.name for span in exporter.get_finished_spans()] == ["GET"]
