"""devstack.guard: the grandchildren of the stack (Triton's stubs) die with it too, and the shared
memory they leave is removed; an ordinary stop still stops the command and reports its status."""

import os
import signal
import sys
import time
import uuid
from pathlib import Path

import psutil

from devstack.groups import group_members
from devstack.processes import ManagedProcess

SHM = Path("/dev/shm")
# A command with a child of its own that ignores SIGTERM, as Triton's python-backend stubs outlive it.
PARENT_OF_A_STUBBORN_CHILD = (
    "import pathlib, subprocess, sys, time;"
    "c = subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)']);"
    "pathlib.Path(sys.argv[1]).write_text(str(c.pid));"
    "time.sleep(600)"
)  # fmt: skip


def _alive(pid: int) -> bool:
    """Running, and not a zombie (which still answers kill(0))."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_group_and_its_shared_memory_go_when_the_stack_is_killed(tmp_path: Path) -> None:
    prefix = f"pcam-guard-test-{uuid.uuid4().hex[:8]}-"
    region = SHM / f"{prefix}region"
    region.write_bytes(b"left by a stub")
    pid_file = tmp_path / "grandchild.pid"
    guarded = [sys.executable, "-m", "devstack.guard", "--shm-prefix", prefix,
               sys.executable, "-c", PARENT_OF_A_STUBBORN_CHILD, str(pid_file)]  # fmt: skip
    stack_script = (
        "import pathlib, sys, time; from devstack.processes import ManagedProcess;"
        f"ManagedProcess('triton', {guarded!r}, pathlib.Path({str(tmp_path / 'triton.log')!r}));"
        "time.sleep(600)"
    )
    stack = ManagedProcess("stack", [sys.executable, "-c", stack_script], tmp_path / "stack.log")
    try:
        stack.wait_until(pid_file.exists, 60, "starting the guarded command")
        grandchild = int(pid_file.read_text())
        os.kill(stack.popen.pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while (_alive(grandchild) or region.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(grandchild), "a grandchild of the stack outlived it"
        assert not region.exists(), "the shared memory was left behind"
    finally:
        stack.stop(grace_s=2)
        region.unlink(missing_ok=True)


def test_an_ordinary_stop_stops_the_command_and_keeps_its_status(tmp_path: Path) -> None:
    guarded = ManagedProcess(
        "guarded", [sys.executable, "-m", "devstack.guard", sys.executable, "-c", "import time; time.sleep(600)"],
        tmp_path / "g.log",
    )  # fmt: skip
    guarded.wait_until(lambda: len(group_members(guarded.popen.pid)) == 2, 30, "running its command")
    guarded.stop(grace_s=10)
    assert guarded.popen.returncode == 128 + signal.SIGTERM  # the command's own end, passed on
    done = ManagedProcess("done", [sys.executable, "-m", "devstack.guard", sys.executable, "-c", "raise SystemExit(3)"],
                          tmp_path / "d.log")  # fmt: skip
    assert done.popen.wait(30) == 3
    done.stop()
