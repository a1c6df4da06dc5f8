"""`python -m services.common.healthcheck <service>` (the images' HEALTHCHECK) against a tiny local HTTP server."""

import socket
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devstack.ports import free_port
from services.common import healthcheck
from services.common.settings import ServiceSettings
from tests.http_server import local_server, serving

ROOT = Path(__file__).parents[3]
SERVICES = tuple(healthcheck.SETTINGS)


class _Handler(BaseHTTPRequestHandler):
    status = 200  # what /healthz answers; every other path is 404

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    """A local HTTP server on a free loopback port; set `server.RequestHandlerClass.status`."""
    with serving(local_server(type("Handler", (_Handler,), {}))) as httpd:
        yield httpd


@pytest.mark.parametrize("service", SERVICES)
def test_healthy_service_exits_0(server, service, monkeypatch):
    monkeypatch.setenv(f"PCAM_{service.upper()}_PORT", str(server.server_address[1]))
    monkeypatch.setenv(f"PCAM_{service.upper()}_HOST", "0.0.0.0")  # as in the images: probed on loopback
    assert healthcheck.main([service]) == 0


@pytest.mark.parametrize("status", [500, 503])
def test_unhealthy_answer_exits_1(server, status, monkeypatch):
    server.RequestHandlerClass.status = status
    monkeypatch.setenv("PCAM_GATEWAY_PORT", str(server.server_address[1]))
    assert healthcheck.main(["gateway"]) == 1


def test_nothing_listening_exits_1(monkeypatch):
    monkeypatch.setenv("PCAM_PREPROCESS_PORT", str(free_port()))
    assert healthcheck.main(["preprocess"]) == 1


def test_the_port_comes_from_the_service_settings(server, monkeypatch):
    """Another service's port variable does not move the probe: only PCAM_<SERVICE>_PORT does."""
    monkeypatch.setenv("PCAM_GATEWAY_PORT", str(server.server_address[1]))
    monkeypatch.setenv("PCAM_ENSEMBLE_PORT", str(free_port()))
    assert healthcheck.main(["gateway"]) == 0
    assert healthcheck.main(["ensemble"]) == 1


def test_a_server_that_never_answers_times_out(monkeypatch):
    """A listening socket that never accepts: the probe gives up after its timeout instead of hanging."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/healthz"
        assert healthcheck.check(url, timeout_s=0.2) is False


@pytest.mark.parametrize("argv", [[], ["redis"], ["gateway", "extra"]])
def test_bad_arguments_exit_2(argv):
    assert healthcheck.main(argv) == 2


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:9/healthz"),
        ("127.0.0.1", "http://127.0.0.1:9/healthz"),
        ("::", "http://[::1]:9/healthz"),
        ("10.1.2.3", "http://10.1.2.3:9/healthz"),
    ],
)
def test_healthz_url(host, url):
    assert healthcheck.healthz_url(ServiceSettings(host=host, port=9)) == url


def test_runs_as_a_module(server):
    """The exact form the Dockerfile's HEALTHCHECK uses."""
    env = {"PCAM_ENSEMBLE_PORT": str(server.server_address[1]), "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, "-m", "services.common.healthcheck", "ensemble"]
    assert subprocess.run(argv, cwd=ROOT, env=env, timeout=60).returncode == 0
    server.RequestHandlerClass.status = 500
    assert subprocess.run(argv, cwd=ROOT, env=env, timeout=60, capture_output=True).returncode == 1
