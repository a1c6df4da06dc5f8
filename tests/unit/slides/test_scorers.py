"""The gateway scorer's failures end a slide run with one line naming the problem."""

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest

from devstack.ports import free_port
from tests.http_server import local_server, serving, url_of
from training.slides.scorers import remote_scorer

PATCHES = np.zeros((2, 96, 96, 3), np.uint8)


class _Refuses(BaseHTTPRequestHandler):
    """Answers every POST with 401 and a problem document, as a gateway with API keys does."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps(
            {"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": "missing X-API-Key"}
        ).encode()
        self.send_response(401)
        self.send_header("content-type", "application/problem+json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_gateway() -> Iterator[str]:
    with serving(local_server(_Refuses)) as httpd:
        yield url_of(httpd)


def test_a_refusal_is_named_with_the_gateway_and_its_problem(refusing_gateway: str) -> None:
    with remote_scorer(refusing_gateway, None, "balanced") as score, pytest.raises(RuntimeError) as raised:
        score(PATCHES)
    assert refusing_gateway in str(raised.value) and "missing X-API-Key" in str(raised.value)


def test_no_gateway_listening_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with remote_scorer(url, None, "balanced") as score, pytest.raises(RuntimeError, match="no answer from"):
        score(PATCHES)
