"""The supervisor starts an exited process again after its backoff, as the cluster would (stand-in
processes from conftest; a clock the test moves)."""

import os
import signal

import httpx

from devstack.processes import StartupError
from devstack.stack import LocalStack
from devstack.supervisor import FIRST_DELAY_S, MAX_DELAY_S, STABLE_S, Supervisor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def kill(local: LocalStack, name: str) -> int:
    process = local.processes[name]
    os.killpg(process.popen.pid, signal.SIGKILL)
    process.popen.wait(10)
    return process.popen.pid


def test_an_exited_process_is_started_again_after_its_delay(local: LocalStack) -> None:
    clock = Clock()
    supervisor = Supervisor(local, clock)
    assert supervisor.watch() == []  # everything up
    old = kill(local, "gateway")
    assert supervisor.watch() == []  # noticed, scheduled: not yet due
    clock.now += FIRST_DELAY_S
    assert supervisor.watch() == ["gateway"]
    new = local.processes["gateway"]
    assert new.alive() and new.popen.pid != old
    answer = httpx.get(f"{local.config.url('gateway')}/readyz", timeout=2)
    assert int(answer.text) == new.popen.pid and local.processes["redis"].alive()


def test_the_delay_doubles_while_it_keeps_exiting_and_starts_over_once_stable(local: LocalStack) -> None:
    clock = Clock()
    supervisor = Supervisor(local, clock)
    delays = []
    for _ in range(7):
        kill(local, "redis")
        supervisor.watch()
        due = supervisor.schedules["redis"].due
        delays.append(due - clock.now)
        clock.now = due
        assert supervisor.watch() == ["redis"]
    assert delays == [min(FIRST_DELAY_S * 2**i, MAX_DELAY_S) for i in range(7)]
    clock.now += STABLE_S
    supervisor.watch()  # up a while: recovered
    kill(local, "redis")
    supervisor.watch()
    assert supervisor.schedules["redis"].due - clock.now == FIRST_DELAY_S
    assert supervisor.schedules["redis"].restarts == 7


def test_a_failed_start_is_tried_again_later(local: LocalStack, monkeypatch) -> None:
    clock = Clock()
    supervisor = Supervisor(local, clock)
    kill(local, "gateway")
    supervisor.watch()
    restart = local.restart
    monkeypatch.setattr(local, "restart", lambda name: (_ for _ in ()).throw(StartupError("port taken")))
    clock.now += FIRST_DELAY_S
    assert supervisor.watch() == []
    assert supervisor.schedules["gateway"].due == clock.now + 2 * FIRST_DELAY_S  # backed off
    monkeypatch.setattr(local, "restart", restart)
    clock.now += 2 * FIRST_DELAY_S
    assert supervisor.watch() == ["gateway"] and local.processes["gateway"].alive()
