"""LocalStack.restart with stand-in processes: no redis-server, Triton or services needed."""

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack import stack as stack_module
from devstack.processes import ManagedProcess, group_members
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


def test_restart_brings_a_killed_process_back_on_its_port_in_its_place(local: LocalStack) -> None:
    old = local.processes["gateway"]
    os.killpg(old.popen.pid, signal.SIGKILL)
    old.popen.wait(10)
    with pytest.raises(httpx.ConnectError):
        httpx.get(local.config.url("gateway"), timeout=2)

    new = local.restart("gateway")

    assert new is local.processes["gateway"] and new.popen.pid != old.popen.pid and new.alive()
    answer = httpx.get(f"{local.config.url('gateway')}/readyz", timeout=2)  # ready: restart waited for it
    assert answer.status_code == 200 and int(answer.text) == new.popen.pid
    assert list(local.processes) == ["redis", "gateway"]  # still stopped first, started last


def test_restart_stops_a_running_process_first(local: LocalStack) -> None:
    old = local.processes["redis"]
    new = local.restart("redis")
    assert not old.alive() and not group_members(old.popen.pid)
    assert new.alive() and local.processes["redis"] is new
    assert list(local.processes) == ["redis", "gateway"]


def test_restart_refuses_a_name_the_stack_did_not_start(local: LocalStack) -> None:
    for name in ("triton", "postgres"):
        with pytest.raises(ValueError, match="not a process of this stack"):
            local.restart(name)
