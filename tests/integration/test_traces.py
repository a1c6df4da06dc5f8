"""One request, one trace, across real processes: gateway, preprocess, ensemble and Triton.

Its own stack with the standard `OTEL_*` variables pointing at an OTLP/HTTP receiver in this test;
`devstack` then starts Triton with its OpenTelemetry trace config (the same flags compose and Helm
pass), so Triton's spans must join the trace through the W3C `traceparent` in the gRPC metadata.
"""

import json
import re
import secrets
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from devstack.ports import free_port
from devstack.stack import LocalStack
from pcam_core.release import ReleaseManifest
from tests.http_server import serving
from tests.integration.conftest import own_stack
from tests.integration.test_predict import unique_png

pytestmark = pytest.mark.integration


class OtlpReceiver(ThreadingHTTPServer):
    """Collects OTLP/HTTP protobuf exports: span names by (service, trace id), and exports it could not read."""

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _ExportHandler)
        self.spans: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.unreadable: list[str] = []
        self.lock = threading.Lock()

    def services_in(self, trace_id: str) -> set[str]:
        with self.lock:
            return {service for service, trace in self.spans if trace == trace_id}


def _spans(body: bytes, content_type: str) -> Iterator[tuple[str, str, str]]:
    """(service name, hex trace id, span name) of an OTLP export: protobuf (the Python SDK) or JSON
    (Triton's C++ exporter, whose JSON carries ids as hex strings)."""
    if content_type.startswith("application/json"):
        for resource in json.loads(body)["resourceSpans"]:
            attributes = {a["key"]: a["value"].get("stringValue") for a in resource["resource"]["attributes"]}
            for scope in resource.get("scopeSpans", []):
                for span in scope.get("spans", []):
                    yield attributes.get("service.name", "?"), span["traceId"].lower(), span["name"]
        return
    for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
        attributes = {a.key: a.value.string_value for a in resource.resource.attributes}
        for scope in resource.scope_spans:
            for span in scope.spans:
                yield attributes.get("service.name", "?"), span.trace_id.hex(), span.name


class _ExportHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        receiver: OtlpReceiver = self.server  # type: ignore[assignment]
        try:
            spans = list(_spans(body, self.headers.get("content-type", "")))
        except Exception as exc:  # reported by the test: an export lost here is not the platform's fault
            with receiver.lock:
                receiver.unreadable.append(f"{self.headers.get('content-type')} {len(body)} B: {exc!r}")
            spans = []
        with receiver.lock:
            for service, trace_id, name in spans:
                receiver.spans[(service, trace_id)].append(name)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with serving(OtlpReceiver(free_port())) as server:
        yield server


@pytest.fixture(scope="module")
def traced_stack(
    model_repository: Path, receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """A stack whose every process exports spans to `receiver`."""
    environment = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s instead of 5 s
    }
    with own_stack(model_repository, tmp_path_factory.mktemp("traced-stack"), environment) as stack:
        yield stack


def triton_traces(receiver: OtlpReceiver) -> dict[str, list[str]]:
    """Every trace id Triton exported spans under, with their names (a member's spans under another id
    would mean its call lost the request's context)."""
    with receiver.lock:
        return {trace: names for (service, trace), names in receiver.spans.items() if service == "triton"}


def logged_trouble(stack: LocalStack) -> list[str]:
    """Triton's exporter lines (a batch it fails to send is dropped), its warnings and errors, and the
    services' warnings and errors (a member call retried, say)."""
    found = []
    for name, process in stack.processes.items():
        for line in process.log_path.read_text(errors="replace").splitlines():
            if re.search(
                r"otlp|export|^[EW]\d{4} |\"level\": ?\"(WARNING|ERROR|CRITICAL)\"", line, re.IGNORECASE
            ):
                found.append(f"{name}: {line[:300]}")
    return found


ATTEMPTS = 5
"""Requests sent until one is traced whole (see `test_one_request_...`): a call Triton detaches is its bug."""
SERVICES = {"pcam-gateway", "pcam-preprocess", "pcam-ensemble", "triton"}


def member_spans(receiver: OtlpReceiver, members: set[str]) -> Counter[str]:
    """How many spans named for each member Triton has exported, under any trace id."""
    return Counter(name for names in triton_traces(receiver).values() for name in names if name in members)


def exported(receiver: OtlpReceiver, trace_id: str, members: set[str], before: Counter[str]) -> bool:
    """Every service's spans of the request `trace_id`, and a span of every member's Triton call since
    `before`, under any trace id."""
    return (
        receiver.services_in(trace_id) >= SERVICES
        and set(member_spans(receiver, members) - before) >= members
    )


def test_one_request_is_one_trace_from_the_gateway_into_triton(
    traced_stack: LocalStack, receiver: OtlpReceiver, release: ReleaseManifest, patch_paths: list[Path]
) -> None:
    """Gateway, preprocess, ensemble and each member's Triton call under the caller's trace id.

    Triton's gRPC frontend reads the `traceparent` metadata as a C string (`GrpcServerCarrier::Get`
    returns `string_ref::data()`, which is not NUL-terminated), so now and then it reads past the value,
    rejects it, and starts a trace of its own for that member call (seen here: a member's spans under a
    random trace id, the other member's under the caller's). Requests are sent until one is traced
    whole, at most ATTEMPTS; the detached calls are printed.
    """
    members = {member.name for member in release.members}
    detached: list[dict[str, list[str]]] = []
    for attempt in range(ATTEMPTS):
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        before = member_spans(receiver, members)
        response = httpx.post(
            f"{traced_stack.config.url('gateway')}/v1/predict",
            files={"file": ("p.png", unique_png(patch_paths[3], 7001 + attempt), "image/png")},
            headers={"traceparent": f"00-{trace_id}-{parent}-01"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        # Exporters flush on their own schedule, Triton's per member call: wait for all of it, bounded.
        deadline = time.monotonic() + 30
        while not exported(receiver, trace_id, members, before) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert receiver.services_in(trace_id) >= SERVICES, (dict(receiver.spans), receiver.unreadable)
        assert exported(receiver, trace_id, members, before), (
            triton_traces(receiver), receiver.unreadable, logged_trouble(traced_stack)
        )  # fmt: skip
        spans = triton_traces(receiver).get(trace_id, [])
        # Triton's spans: one InferRequest per member call, under it the model's own span and its compute.
        if members <= set(spans) and spans.count("InferRequest") >= len(members):
            break
        detached.append(triton_traces(receiver))
    else:
        pytest.fail(f"no request of {ATTEMPTS} traced whole into Triton: {detached}")
    print(f"traced whole at attempt {attempt + 1}; member calls Triton detached before: {detached}")
