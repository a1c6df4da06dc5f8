import os
import signal
import socket
import sys
import time

import psutil
import pytest

from devstack.ports import free_port
from devstack.processes import ManagedProcess, PortTakenError, StartupError, check_ports_free


def _alive(pid: int) -> bool:
    """Running, and not a zombie (which still answers kill(0))."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_stop_takes_down_the_whole_group(tmp_path) -> None:
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time, pathlib;"
        "c = subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)']);"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(c.pid));"
        "time.sleep(600)"
    )
    process = ManagedProcess("parent", [sys.executable, "-c", script], tmp_path / "parent.log")
    process.wait_until(pid_file.exists, 30, "writing its child's pid")
    child = int(pid_file.read_text())
    process.stop(grace_s=2)
    assert not process.alive()
    assert not _alive(child)


def test_a_process_that_dies_fails_fast_with_its_log(tmp_path) -> None:
    process = ManagedProcess(
        "crasher", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], tmp_path / "c.log"
    )
    with pytest.raises(StartupError, match="boom"):
        process.wait_until(lambda: False, 30, "ready")
    process.stop()


def test_a_child_dies_with_the_process_that_started_it_even_on_sigkill(tmp_path) -> None:
    """The stack's children get SIGKILL when the stack dies, however it dies: no orphans."""
    pid_file = tmp_path / "child.pid"
    starter = (
        "import pathlib, sys, time;"
        "from devstack.processes import ManagedProcess;"
        f"child = ManagedProcess('sleeper', [sys.executable, '-c', 'import time; time.sleep(600)'], pathlib.Path({str(tmp_path / 'c.log')!r}));"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(child.popen.pid));"
        "time.sleep(600)"
    )  # fmt: skip
    stack = ManagedProcess("stack", [sys.executable, "-c", starter], tmp_path / "stack.log")
    try:
        stack.wait_until(pid_file.exists, 60, "starting its child")
        child = int(pid_file.read_text())
        assert _alive(child)
        os.kill(stack.popen.pid, signal.SIGKILL)  # no chance to stop anything
        stack.popen.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the child outlived the process that started it"
    finally:
        stack.stop(grace_s=2)


def test_check_ports_free_names_the_port_and_who_holds_it() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(
            PortTakenError, match=rf"port {port} \(gateway\) is taken by pid {os.getpid()} \("
        ):
            check_ports_free({"redis": free_port(), "gateway": port})
    check_ports_free({"gateway": port})  # free again once closed
