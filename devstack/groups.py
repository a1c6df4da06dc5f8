"""What a process group holds (its live members, their CPU time, memory and open files), from psutil.

A service runs as a group (Triton with its backend stubs, uvicorn with its workers), so the stack,
its benchmarks and its resilience checks measure groups, never a single pid.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import psutil


def group_processes(pgid: int) -> list[psutil.Process]:
    """Live processes of process group `pgid` (a zombie counts while its other threads still exit)."""
    members = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            if os.getpgid(process.pid) == pgid and (
                process.info["status"] != psutil.STATUS_ZOMBIE or _threads_left(process.pid)
            ):
                members.append(process)
    return members


def _threads_left(pid: int) -> bool:
    """Whether a zombie leader's other threads are still exiting. A killed multi-threaded process (Triton)
    shows its leader as a zombie first; its files, listening sockets included, close with its last
    thread, measured here as a port still accepting after its group looked empty."""
    with contextlib.suppress(FileNotFoundError):
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    return False


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes of group `pgid`."""
    return [process.pid for process in group_processes(pgid)]


def _summed(pgid: int, measure: Callable[[psutil.Process], float]) -> float:
    """A per-process measure summed over the group; a process that exits meanwhile counts 0."""
    total = 0.0
    for process in group_processes(pgid):
        with contextlib.suppress(psutil.Error):
            total += measure(process)
    return total


def cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds used so far by the group's live processes."""
    return _summed(pgid, lambda process: sum(process.cpu_times()[:2]))


def resident_bytes(pgid: int) -> int:
    """Resident memory (RSS) of the group's live processes, summed."""
    return int(_summed(pgid, lambda process: process.memory_info().rss))


def open_fds(pgid: int) -> int:
    """File descriptors (sockets included) open in the group's live processes."""
    return int(_summed(pgid, lambda process: process.num_fds()))
