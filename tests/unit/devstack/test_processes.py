import os
import sys

import pytest

from devstack.processes import ManagedProcess, StartupError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): read its state.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


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
