"""JSON log lines: one object per line with the request id (and trace id when tracing), never a body or key."""

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider

from devstack.ports import free_port
from services.common.logging_setup import JsonFormatter
from services.gateway.app import create_app
from services.gateway.auth import hash_key
from services.gateway.settings import GatewaySettings

API_KEY = "k3y-" + "s" * 40
MARKER = b"BODY-BYTES-MUST-NOT-BE-LOGGED"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything logged during the test, formatted as the services format it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("gateway"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def parse(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_requests_lines_carry_its_id_and_no_body_or_key(log_lines) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = GatewaySettings(
        preprocess_url=dead,
        ensemble_url=dead,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        api_key_hashes=["client:" + hash_key(API_KEY)],
        retry_after_s=1,
    )
    with TestClient(create_app(settings)) as client:
        body = b"\x89PNG\r\n\x1a\n" + MARKER + bytes(range(256))
        response = client.post(
            "/v1/predict",
            content=body,
            headers={"content-type": "image/png", "x-api-key": API_KEY, "x-request-id": "req-123"},
        )
    assert response.headers["x-request-id"] == "req-123"
    raw = log_lines.getvalue()
    assert MARKER.decode() not in raw and API_KEY not in raw and "\\u0089PNG" not in raw
    lines = parse(log_lines)  # every line is one JSON object
    mine = [line for line in lines if line.get("request_id") == "req-123"]
    assert any(line["logger"] == "services.access" for line in mine), lines
    access = next(line for line in mine if line["logger"] == "services.access")
    assert access["path"] == "/v1/predict" and access["status"] == response.status_code
    assert access["service"] == "gateway" and access["level"] == "INFO" and access["time"].endswith("Z")
    assert all("trace_id" not in line for line in lines)  # tracing is off by default


def test_fields_exception_and_trace_ids(log_lines) -> None:
    logger = logging.getLogger("services.test")
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("work") as span:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed %s", "here")
    (line,) = parse(log_lines)
    assert line["message"] == "failed here" and line["level"] == "ERROR" and line["logger"] == "services.test"
    assert "ValueError: boom" in line["exception"]
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert line["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert "request_id" not in line  # outside a request


def test_uvicorn_loggers_write_json_lines() -> None:
    """In a fresh process (the logging config is process-wide), as `serve` sets it up."""
    code = (
        "import logging, warnings\n"
        "from services.common.logging_setup import configure_logging\n"
        "configure_logging('ensemble', 'info')\n"
        "logging.getLogger('uvicorn.error').info('Started server process')\n"
        "logging.getLogger('uvicorn.access').info('GET / 200')\n"
        "logging.getLogger('services.ensemble.x').debug('hidden at info')\n"
        "warnings.warn('careful')\n"
        "raise RuntimeError('uncaught')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["logger"] for line in lines] == [
        "uvicorn.error",
        "uvicorn.access",
        "py.warnings",
        "services",
    ]
    assert all(line["service"] == "ensemble" for line in lines)
    assert "RuntimeError: uncaught" in lines[-1]["exception"]
