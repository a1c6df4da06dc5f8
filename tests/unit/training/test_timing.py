"""Sessions timed in turns: every session runs every round, in a rotating order, warm-up untimed."""

import time

import numpy as np
import pytest

from training import timing


class Session:
    """Stands in for an onnxruntime session: sleeps `ms` per run and records the order of runs."""

    def __init__(self, name: str, ms: float, log: list[str]) -> None:
        self.name, self.ms, self.log = name, ms, log

    def run(self, outputs: list[str], feeds: dict) -> list[np.ndarray]:
        self.log.append(self.name)
        time.sleep(self.ms / 1000)
        return [np.zeros(len(next(iter(feeds.values()))))]


def test_sessions_run_in_rotating_turns_each_run_timed_around_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timing, "TIMED_BATCHES", {4: 6})
    log: list[str] = []
    sessions = {name: Session(name, ms, log) for name, ms in (("a", 1.0), ("b", 5.0), ("c", 1.0))}
    timings = timing.timed_in_turns(sessions, np.zeros((2, 96, 96, 3), np.uint8))
    warmup = timing.WARMUP_RUNS * 3
    rounds = [log[i : i + 3] for i in range(warmup, len(log), 3)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]] * 2
    assert {name: len(ms) for name, ms in timings[4].items()} == {"a": 6, "b": 6, "c": 6}
    # A run is timed around the call: never shorter than the session's own sleep.
    assert all((timings[4][name] >= session.ms).all() for name, session in sessions.items())
