"""Starting, probing and stopping child processes; nothing is left behind."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx
import psutil

from devstack.groups import group_members
from devstack.ports import bindable

POLL_INTERVAL_S = 0.2
PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process gets when the thread that forked it exits."""


class StartupError(RuntimeError):
    """A process exited or never became ready; the message carries its log tail."""


class PortTakenError(StartupError):
    """A port the stack needs is taken; the message names the process holding it."""


def die_with_parent(signum: int = signal.SIGKILL, parent: int | None = None) -> Callable[[], None]:
    """A hook that makes the calling process get `signum` when its parent dies, however it dies
    (prctl's PR_SET_PDEATHSIG, Linux). Default parent: this process, for a child's `preexec_fn`: no
    child outlives even a SIGKILL of the stack. The signal follows the forking *thread*, so children
    are started from the main thread."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: nothing is loaded in the child
    expected = os.getpid() if parent is None else parent

    def arm() -> None:
        if libc.prctl(PR_SET_PDEATHSIG, signum) != 0:
            os._exit(errno.EPERM)
        if os.getppid() != expected:  # the parent died before prctl took effect
            os._exit(1)

    return arm


def port_holder(port: int) -> str:
    """Who listens on TCP `port`: "pid N (command line)", or "another process" when it cannot be seen."""
    with contextlib.suppress(psutil.Error):
        for connection in psutil.net_connections(kind="tcp"):
            if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_LISTEN:
                if connection.pid is None:
                    break
                with contextlib.suppress(psutil.Error):
                    command = " ".join(psutil.Process(connection.pid).cmdline())[:120]
                    return f"pid {connection.pid} ({command})"
                return f"pid {connection.pid}"
    return "another process"


def check_ports_free(ports: Mapping[str, int], host: str = "127.0.0.1") -> None:
    """Bind each port as its server would; a taken one is a PortTakenError naming it, what it is for and
    who holds it."""
    for name, port in ports.items():
        if not bindable(port, host):
            raise PortTakenError(
                f"port {port} ({name}) is taken by {port_holder(port)}: stop it, or choose another "
                f"port with PCAM_{name.upper()}_PORT"
            )


class ManagedProcess:
    """A child in its own process group, logging to a file, stopped with its whole group."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name, self.log_path = name, log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                list(argv),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        except BaseException:
            self._log.close()
            raise

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the process log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_until(self, probe: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll `probe` until it holds; fail fast if the process dies, or after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise StartupError(
                    f"{self.name} exited with {self.popen.returncode} before {what}:\n{self.log_tail()}"
                )
            if probe():
                return
            time.sleep(POLL_INTERVAL_S)
        raise StartupError(f"{self.name} not {what} after {timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace_s`."""
        try:
            if self.alive():
                self._signal(signal.SIGTERM)
                try:
                    self.popen.wait(grace_s)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
            # Children (e.g. Triton's python backend stubs) may outlive the leader.
            deadline = time.monotonic() + grace_s
            while group_members(self.popen.pid) and time.monotonic() < deadline:
                self._signal(signal.SIGKILL)
                time.sleep(POLL_INTERVAL_S / 4)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace_s)  # reap the leader: no zombie left behind
        finally:
            self._log.close()

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)


def http_ok(url: str) -> Callable[[], bool]:
    """A probe that holds when GET `url` answers 200."""

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    return probe
