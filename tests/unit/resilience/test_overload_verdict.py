"""The overload scenario's verdict on recorded runs: each of the issue's bars can fail on its own."""

import numpy as np

from benchmarks.load import OpenLoopRun
from resilience.overload import Overload

MIB = 2**20


def overload(
    status, seconds, retry_after=None, capacity=10.0, unloaded_ms=40.0, memory_after=100 * MIB
) -> Overload:
    status = np.asarray(status)
    run = OpenLoopRun(
        due_s=np.arange(len(status)) / 30.0,
        seconds=np.asarray(seconds, float),
        status=status,
        retry_after=retry_after or ["1" if s in (429, 503) else "" for s in status.tolist()],
        wall_s=1.0,
        client_cpu_s=0.01,
    )
    return Overload(
        unloaded_ms, capacity, 3 * capacity, run, {"gateway": 100 * MIB}, {"gateway": memory_after}
    )


GOOD = [200] * 9 + [503] * 21
FAST = [0.05] * 9 + [0.01] * 21


def test_a_run_meeting_every_bar_passes() -> None:
    assert overload(GOOD, FAST).verdict().passed


def test_too_little_goodput_fails() -> None:
    (missed,) = overload(GOOD, FAST, capacity=20.0).verdict().missed
    assert missed.startswith("goodput 9.0/s < 80% of 20.0/s")


def test_slow_accepted_answers_fail() -> None:
    (missed,) = overload(GOOD, [0.2] * 9 + [0.01] * 21).verdict().missed
    assert missed.startswith("accepted p99 200 ms > 3x unloaded 40 ms")


def test_other_statuses_and_refusals_without_retry_after_fail() -> None:
    status = [200] * 9 + [503] * 19 + [500, 504]
    retry_after = [""] * 9 + ["1"] * 18 + ["", "", ""]
    missed = overload(status, FAST, retry_after).refusal_faults()
    assert missed == [
        "1 answers with status 500",
        "1 answers with status 504",
        "1 refusals without a Retry-After in seconds",
    ]


def test_slow_refusals_and_memory_growth_fail() -> None:
    missed = overload(GOOD, [0.05] * 9 + [0.5] * 21, memory_after=200 * MIB).verdict().missed
    assert [m.split(" ")[0] for m in missed] == ["refusals'", "gateway:"]
