import os
import platform
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from devstack.groups import group_members

SYS_EXIT = {"x86_64": 60, "aarch64": 93}.get(platform.machine())
# The main thread ends alone (exit(2), not exit_group(2)) while a second thread keeps the process and its
# listening socket: the state a SIGKILLed multi-threaded process passes through.
LEADER_EXITS_FIRST = f"""
import ctypes, socket, threading, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print(server.getsockname()[1], flush=True)
threading.Thread(target=time.sleep, args=(600,)).start()
ctypes.CDLL(None).syscall({SYS_EXIT}, 0)
"""


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(SYS_EXIT is None, reason=f"exit(2)'s number on {platform.machine()} is not known here")
def test_a_zombie_leader_whose_threads_still_run_is_a_member_until_they_end() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", LEADER_EXITS_FIRST], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        port = int(process.stdout.readline())
        deadline = time.monotonic() + 30
        while psutil.Process(process.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the main thread never ended"
            time.sleep(0.05)
        assert accepts(port)  # the zombie's remaining thread still holds its files
        assert group_members(process.pid) == [process.pid]
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        process.stdout.close()
    assert not group_members(process.pid)
    assert not accepts(port)
