"""`make run`'s process (python -m devstack) as the cluster behaves: a killed process comes back, a
SIGKILL of the stack leaves nothing behind, and a taken port is refused by name."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack.groups import group_members
from devstack.processes import check_ports_free
from devstack.stack import StackPorts

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def devstack(model_repository: Path, work: Path, ports: StackPorts) -> subprocess.Popen[str]:
    """`python -m devstack` on `ports`, in a process group of its own (as `make run` in a terminal)."""
    env = {**os.environ, **{f"PCAM_{name.upper()}_PORT": str(port) for name, port in vars(ports).items()}}
    return subprocess.Popen(
        [sys.executable, "-m", "devstack", "--model-repository", str(model_repository), "--work-dir", str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip


def read_until(process: subprocess.Popen[str], pattern: str) -> tuple[str, re.Match[str]]:
    """Lines of the process's output up to the first matching `pattern` (fails if it exits first)."""
    seen = []
    while line := process.stdout.readline():
        seen.append(line)
        if match := re.search(pattern, line):
            return "".join(seen), match
    pytest.fail(f"devstack exited ({process.wait()}) before {pattern!r}:\n{''.join(seen)[-3000:]}")


def gone(pid: int, timeout_s: float = 30) -> bool:
    """Whether process group `pid` has no live member within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while group_members(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not group_members(pid)


def test_a_killed_process_comes_back_and_a_sigkill_of_the_stack_leaves_nothing(
    model_repository: Path, tmp_path: Path
) -> None:
    ports = StackPorts.free()
    process = devstack(model_repository, tmp_path / "work", ports)
    pids: dict[str, int] = {}
    try:
        banner, _ = read_until(process, r"Ctrl-C stops everything")
        pids.update((name, int(pid)) for name, pid in re.findall(r"^\s+(\w+)\s.*pid (\d+)\)", banner, re.M))
        assert set(pids) == {"gateway", "preprocess", "ensemble", "triton", "redis"}, banner
        os.kill(pids["redis"], signal.SIGKILL)  # as an OOM kill would
        _, back = read_until(process, r"redis is back \(restart 1, pid (\d+)\)")
        pids["redis"] = int(back.group(1))
        assert group_members(pids["redis"])  # the new one runs
        os.killpg(process.pid, signal.SIGKILL)  # the terminal closed: no chance to stop anything
        process.wait(10)
        survivors = {name: group_members(pid) for name, pid in pids.items() if not gone(pid)}
        assert survivors == {}, f"left behind: {survivors}"
        check_ports_free(vars(ports))  # every port free again
    finally:  # whatever the test left running, however it failed
        for pid in (process.pid, *pids.values()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        process.stdout.close()


def test_a_taken_port_is_refused_by_name(model_repository: Path, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ports = StackPorts(**{**vars(StackPorts.free()), "gateway": port})
        process = devstack(model_repository, tmp_path / "work", ports)
        output, _ = process.communicate(timeout=120)
    assert process.returncode == 1, output
    assert f"port {port} (gateway) is taken by pid {os.getpid()}" in output
    assert "PCam platform is up" not in output and not (tmp_path / "work" / "logs").exists()
