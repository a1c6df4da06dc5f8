import asyncio

import pytest

from services.gateway.singleflight import SingleFlight


class Counter:
    def __init__(self, delay_s: float = 0.05, fail: Exception | None = None) -> None:
        self.calls: list[list[str]] = []
        self.delay_s, self.fail = delay_s, fail

    async def __call__(self, keys: list[str]) -> dict[str, str]:
        self.calls.append(keys)
        call = len(self.calls)
        await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return {k: f"value-{k}-{call}" for k in keys}


async def test_concurrent_callers_of_one_key_share_one_computation() -> None:
    flights, compute = SingleFlight[str, str](), Counter()
    results = await asyncio.gather(*(flights.run(["a"], compute) for _ in range(10)))
    assert compute.calls == [["a"]]
    assert all(r == {"a": "value-a-1"} for r in results)
    assert flights.in_flight() == 0
    assert await flights.run(["a"], compute) == {"a": "value-a-2"}  # done flights are not remembered


async def test_overlapping_key_sets_compute_each_key_once() -> None:
    flights, compute = SingleFlight[str, str](), Counter()
    first = asyncio.create_task(flights.run(["a", "b"], compute))
    await asyncio.sleep(0)
    second = await flights.run(["b", "c", "c"], compute)
    assert compute.calls == [["a", "b"], ["c"]]
    assert second == {"b": "value-b-1", "c": "value-c-2"}
    assert (await first)["b"] == second["b"]


async def test_an_error_reaches_every_waiter_and_is_not_remembered() -> None:
    flights, compute = SingleFlight[str, str](), Counter(fail=ValueError("down"))
    results = await asyncio.gather(*(flights.run(["a"], compute) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results) and len(compute.calls) == 1
    compute.fail = None
    assert await flights.run(["a"], compute) == {"a": "value-a-2"}


async def test_a_cancelled_caller_does_not_cancel_the_others() -> None:
    flights, compute = SingleFlight[str, str](), Counter(delay_s=0.1)
    leader = asyncio.create_task(flights.run(["a"], compute))
    await asyncio.sleep(0)
    follower = asyncio.create_task(flights.run(["a"], compute))
    await asyncio.sleep(0.01)
    leader.cancel()  # e.g. the leader's client went away or hit its deadline
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert await follower == {"a": "value-a-1"}
    assert len(compute.calls) == 1


async def test_drain_cancels_the_computations_in_flight_and_waits_for_them() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    started, finished = asyncio.Event(), []

    async def slow(keys: list[str]) -> dict[str, int]:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            finished.append(keys)
        return {}

    waiter = asyncio.create_task(flights.run(["a"], slow))
    await started.wait()
    await flights.drain()
    assert finished == [["a"]] and flights.in_flight() == 0
    with pytest.raises(asyncio.CancelledError):
        await waiter
