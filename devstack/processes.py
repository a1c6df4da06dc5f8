"""Starting, probing and stopping child processes; nothing is left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

POLL_INTERVAL_S = 0.2


class StartupError(RuntimeError):
    """A process exited or never became ready; the message carries its log tail."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def http_ok(url: str) -> Callable[[], bool]:
    """A probe that holds when GET `url` answers 200."""

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    return probe
