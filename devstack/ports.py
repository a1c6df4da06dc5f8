"""Free ports for stacks and servers started by tests, never handed out twice while their taker lives.

A port from bind(0) is free only for a moment: its server may bind it many seconds later (Triton does so
after loading its models), and meanwhile any other bind(0) or outgoing connection on the machine may get
the same number. Ports here are drawn below the kernel's ephemeral range, where neither lands, and each is
reserved by an flock(2) on a file named for it: another process (or a second pick in this one) skips it
until the kernel drops the lock when the reserving process exits, so no reservation goes stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path

RESERVATIONS = Path(tempfile.gettempdir()) / "pcam-ports"
LOWEST = 10_000
"""Ports below this are left to the services people run by hand (`make run`'s own, databases, ...)."""

_held: dict[int, int] = {}
"""Reserved port -> the open file whose lock holds it, kept for this process's lifetime."""


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> range:
    """The kernel's ephemeral ports: where bind(0) and outgoing connections take theirs."""
    low, high = (int(value) for value in path.read_text().split())
    return range(low, high + 1)


def reserve(port: int) -> bool:
    """Reserve `port` for this process if no live process holds it (this one included)."""
    RESERVATIONS.mkdir(exist_ok=True)
    descriptor = os.open(RESERVATIONS / str(port), os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return False
    _held[port] = descriptor
    return True


def free_ports(count: int, rng: random.Random | None = None) -> list[int]:
    """`count` distinct TCP ports, free on 127.0.0.1 now and reserved for as long as this process lives."""
    rng = rng or random.SystemRandom()
    candidates = range(LOWEST, ephemeral_range().start)
    ports: list[int] = []
    for _ in range(100 * count if candidates else 0):
        port = rng.choice(candidates)
        # A port some server already holds stays reserved, unused: this process never tries it again.
        if port not in _held and reserve(port) and bindable(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"no {count} free ports in {candidates.start}-{candidates.stop - 1}")


def free_port() -> int:
    """One TCP port, free on 127.0.0.1 now and reserved for as long as this process lives."""
    return free_ports(1)[0]


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind `port` now (SO_REUSEADDR, as servers bind: TIME_WAIT is no obstacle)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):
            sock.bind((host, port))
            return True
    return False
