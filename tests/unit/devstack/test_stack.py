"""LocalStack.restart and its port check with stand-in processes (conftest): no redis-server, Triton or
services needed."""

import os
import signal
import socket

import httpx
import pytest

from devstack.groups import group_members
from devstack.processes import PortTakenError
from devstack.stack import LocalStack, StackConfig, StackPorts


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


def test_a_taken_port_is_refused_by_name_before_anything_starts(tmp_path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        ports = StackPorts.free()
        ports = StackPorts(**{**vars(ports), "preprocess": holder.getsockname()[1]})
        config = StackConfig(tmp_path / "repository", tmp_path / "venv", tmp_path / "work", ports)
        stack = LocalStack(config)
        with pytest.raises(PortTakenError) as refused:
            stack.__enter__()
    message = str(refused.value)
    assert f"port {ports.preprocess} (preprocess) is taken by pid {os.getpid()}" in message
    assert "PCAM_PREPROCESS_PORT" in message and stack.processes == {}
