"""Keeping the local stack up as the cluster would: a process that exits is started again, with
backoff, and the event logged (Kubernetes' CrashLoopBackOff: 10 s doubling to 5 min; shorter here)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from devstack.processes import StartupError
from devstack.stack import LocalStack

logger = logging.getLogger(__name__)

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
STABLE_S = 60.0
"""A process up this long after a restart has recovered: its next exit starts the backoff over."""


@dataclass
class Backoff:
    """One process's restart schedule: the delay doubles per failed try, up to MAX_DELAY_S."""

    delay_s: float = FIRST_DELAY_S
    due: float | None = None
    """When the next start is due (monotonic clock); None while the process runs."""
    restarts: int = 0
    up_since: float | None = None


@dataclass
class Supervisor:
    """Watches a started LocalStack; `watch` restarts the processes that exited, once their delay passed."""

    stack: LocalStack
    clock: Callable[[], float] = time.monotonic
    schedules: dict[str, Backoff] = field(default_factory=dict)

    def watch(self) -> list[str]:
        """One look at every process: schedule the ones that exited, restart the ones that are due.
        Returns the names started again."""
        now = self.clock()
        started = []
        for name, process in list(self.stack.processes.items()):
            schedule = self.schedules.setdefault(name, Backoff(up_since=now))
            if process.alive():
                if schedule.up_since is not None and now - schedule.up_since >= STABLE_S:
                    schedule.delay_s = FIRST_DELAY_S  # recovered: a later exit starts the backoff over
                continue
            if schedule.due is None:
                schedule.due = now + schedule.delay_s
                logger.warning(
                    "%s exited with %s; starting it again in %.0f s (logs: %s)",
                    name, process.popen.returncode, schedule.delay_s, process.log_path,
                )  # fmt: skip
            if now < schedule.due:
                continue
            schedule.restarts += 1
            try:
                self.stack.restart(name)
            except StartupError as exc:
                schedule.delay_s = min(schedule.delay_s * 2, MAX_DELAY_S)
                schedule.due = self.clock() + schedule.delay_s
                logger.error("%s failed to start again (restart %d): %s", name, schedule.restarts, exc)
                continue
            schedule.due, schedule.up_since = None, self.clock()
            schedule.delay_s = min(schedule.delay_s * 2, MAX_DELAY_S)
            logger.warning(
                "%s is back (restart %d, pid %d)",
                name,
                schedule.restarts,
                self.stack.processes[name].popen.pid,
            )
            started.append(name)
        return started
