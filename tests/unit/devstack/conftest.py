"""A LocalStack of stand-in processes: a sleeper for Redis, a tiny HTTP server for the gateway."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import stack as stack_module
from devstack.processes import ManagedProcess
from devstack.stack import LocalStack, StackConfig, StackPorts

# Stands in for a service: answers 200 on its configured port (PCAM_<SERVICE>_PORT, as the stack sets it).
FAKE_SERVICE = """
import http.server, os, sys
port = int(os.environ[f"PCAM_{sys.argv[1].upper()}_PORT"])
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(os.getpid()).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Ok).serve_forever()
"""


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    def fake_redis(
        server: str, port: int, log: Path, name: str, password: str | None = None
    ) -> ManagedProcess:
        return ManagedProcess(name, [sys.executable, "-c", "import time; time.sleep(600)"], log)

    monkeypatch.setattr(stack_module, "start_redis", fake_redis)
    monkeypatch.setattr(stack_module, "service_arguments", lambda service: ["-c", FAKE_SERVICE, service])
    config = StackConfig(
        model_repository=tmp_path / "repository",
        triton_venv=tmp_path / "venv",
        work_dir=tmp_path / "work",
        ports=StackPorts.free(),
        redis_server=sys.executable,  # found on PATH by _start_redis's check; fake_redis runs instead
        startup_timeout_s=30,
    )
    local = LocalStack(config)
    local._start_redis()
    local._start_service("gateway")
    yield local
    local.stop()
