"""The micro-batcher: a lone request goes at once, concurrent ones share batches, groups never mix."""

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY

from pcam_core.errors import Overloaded
from services.common.admission import Admission
from services.gateway.batching import MicroBatcher
from services.gateway.metrics import BATCH_SIZE, BATCH_WAIT
from tests.unit.gateway.tasks import settle


class Downstream:
    """A fake `run`: records each batch; while `hold` is clear, batches wait for it."""

    def __init__(self, fail_on: object = None) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.fail_on = fail_on

    async def run(self, group: str, items: list[int]) -> Sequence[str]:
        self.batches.append((group, list(items)))
        await self.hold.wait()
        if self.fail_on in items:
            raise RuntimeError(f"batch with {self.fail_on} failed")
        return [f"{group}:{item}" for item in items]


def batcher(downstream: Downstream, **kwargs: object) -> MicroBatcher[str, int, str]:
    settings = {"max_batch": 64, "max_in_flight": 1, "max_wait_s": 3600.0, **kwargs}
    return MicroBatcher(downstream.run, **settings)  # type: ignore[arg-type]


async def test_a_lone_request_goes_at_once() -> None:
    downstream = Downstream()
    # An hour's longest wait: were the lone request held for company, this would never answer.
    assert await batcher(downstream).submit("a", [1, 2]) == ["a:1", "a:2"]
    assert downstream.batches == [("a", [1, 2])]


async def test_requests_arriving_while_the_downstream_is_busy_share_the_next_batch() -> None:
    downstream = Downstream()
    batches = batcher(downstream)
    downstream.hold.clear()
    first = asyncio.create_task(batches.submit("a", [1]))
    await settle()
    waiting = [asyncio.create_task(batches.submit("a", [n])) for n in (2, 3, 4)]
    await settle()
    assert downstream.batches == [("a", [1])] and batches.queued() == 3
    downstream.hold.set()
    assert await first == ["a:1"]
    assert [await task for task in waiting] == [["a:2"], ["a:3"], ["a:4"]]  # each gets its own back
    assert downstream.batches == [("a", [1]), ("a", [2, 3, 4])]


async def test_groups_never_share_a_batch() -> None:
    downstream = Downstream()
    batches = batcher(downstream)
    downstream.hold.clear()
    tasks = [asyncio.create_task(batches.submit(group, [n])) for group, n in (("a", 1), ("b", 2), ("a", 3))]
    await settle()
    downstream.hold.set()
    assert [await task for task in tasks] == [["a:1"], ["b:2"], ["a:3"]]
    assert downstream.batches == [("a", [1]), ("b", [2]), ("a", [3])]


async def test_the_oldest_group_goes_first_and_a_batch_holds_at_most_its_limit() -> None:
    downstream = Downstream()
    batches = batcher(downstream, max_batch=3, batch_limit=lambda group: 2 if group == "explain" else 3)
    downstream.hold.clear()
    busy = asyncio.create_task(batches.submit("a", [0]))
    await settle()
    tasks = [
        asyncio.create_task(batches.submit("explain", [1, 2, 3])),
        asyncio.create_task(batches.submit("a", [4, 5, 6, 7])),
    ]
    await settle()
    downstream.hold.set()
    await busy
    assert [await task for task in tasks] == [
        ["explain:1", "explain:2", "explain:3"],
        ["a:4", "a:5", "a:6", "a:7"],
    ]
    # Oldest first: explain's third patch has waited longer than the other group's first.
    assert [batch for _, batch in downstream.batches] == [[0], [1, 2], [3], [4, 5, 6], [7]]


async def test_more_batches_go_out_together_up_to_max_in_flight() -> None:
    downstream = Downstream()
    batches = batcher(downstream, max_in_flight=2)
    downstream.hold.clear()
    tasks = [asyncio.create_task(batches.submit("a", [n])) for n in range(4)]
    await settle()
    # The first two went alone, one each, as soon as they came; the rest waits for a free slot.
    assert downstream.batches == [("a", [0]), ("a", [1])] and batches.queued() == 2
    downstream.hold.set()
    await asyncio.gather(*tasks)
    assert downstream.batches[2:] == [("a", [2, 3])]


async def test_an_overdue_item_goes_even_while_the_downstream_is_busy() -> None:
    downstream = Downstream()
    batches = batcher(downstream, max_wait_s=0.01)
    downstream.hold.clear()
    asyncio.create_task(batches.submit("a", [1]))
    await settle()
    late = asyncio.create_task(batches.submit("a", [2]))
    while len(downstream.batches) < 2:  # the first batch is still out: only the wait can send it
        await asyncio.sleep(0.005)
    assert downstream.batches == [("a", [1]), ("a", [2])]
    downstream.hold.set()
    assert await late == ["a:2"]


async def test_a_failed_batch_fails_its_items_only() -> None:
    downstream = Downstream(fail_on=2)
    batches = batcher(downstream)
    downstream.hold.clear()
    busy = asyncio.create_task(batches.submit("a", [1]))
    await settle()
    failing = [asyncio.create_task(batches.submit("a", [n])) for n in (2, 3)]
    other_group = asyncio.create_task(batches.submit("b", [4]))
    await settle()
    downstream.hold.set()
    assert await busy == ["a:1"] and await other_group == ["b:4"]
    for task in failing:  # 3 shared the batch of 2: the same error reaches both
        with pytest.raises(RuntimeError, match="batch with 2 failed"):
            await task


async def test_a_caller_that_leaves_does_not_cancel_the_batch_of_the_others() -> None:
    downstream = Downstream()
    batches = batcher(downstream)
    downstream.hold.clear()
    busy = asyncio.create_task(batches.submit("a", [0]))
    await settle()
    leaving, staying = (asyncio.create_task(batches.submit("a", [n])) for n in (1, 2))
    await settle()
    leaving.cancel()
    await settle()
    downstream.hold.set()
    await busy
    assert await staying == ["a:2"]
    assert downstream.batches == [("a", [0]), ("a", [2])]  # the leaver's queued item is not sent


async def test_drain_cancels_what_is_queued_and_downstream() -> None:
    downstream = Downstream()
    batches = batcher(downstream)
    downstream.hold.clear()
    out = asyncio.create_task(batches.submit("a", [1]))
    await settle()
    queued = asyncio.create_task(batches.submit("a", [2]))
    await settle()
    await batches.drain()
    for task in (out, queued):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert batches.queued() == 0


async def test_formed_batch_sizes_and_waits_are_metrics() -> None:
    def count(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    sizes, waits = count("pcam_gateway_batch_size_count"), count("pcam_gateway_batch_wait_seconds_count")
    patches = count("pcam_gateway_batch_size_sum")
    downstream = Downstream()
    batches = batcher(downstream, sizes=BATCH_SIZE, waits=BATCH_WAIT)
    downstream.hold.clear()
    tasks = [asyncio.create_task(batches.submit("a", [n, n + 10])) for n in range(3)]
    await settle()
    downstream.hold.set()
    await asyncio.gather(*tasks)
    assert count("pcam_gateway_batch_size_count") - sizes == 2  # [0, 10], then [1, 11, 2, 12]
    assert count("pcam_gateway_batch_size_sum") - patches == 6
    assert count("pcam_gateway_batch_wait_seconds_count") - waits == 6  # one per patch


async def test_admitted_items_count_until_their_batch_returns_even_when_their_caller_left() -> None:
    downstream = Downstream()
    pending = Admission("batching-test", "patches", limit=3, retry_after_s=1)
    batches = batcher(downstream, admission=pending)
    downstream.hold.clear()
    sent = asyncio.create_task(batches.submit("a", [1, 2]))
    await settle()
    sent.cancel()  # its deadline passed: the batch it is in still runs downstream
    await settle()
    assert downstream.batches == [("a", [1, 2])] and pending.held == 2
    with pytest.raises(Overloaded):
        await batches.submit("a", [3, 4])
    downstream.hold.set()
    await settle()
    assert pending.held == 0


async def test_queued_items_of_a_caller_that_left_are_dropped_unsent_and_released() -> None:
    downstream = Downstream()
    pending = Admission("batching-test", "patches", limit=8, retry_after_s=1)
    batches = batcher(downstream, admission=pending)
    downstream.hold.clear()
    first = asyncio.create_task(batches.submit("a", [1]))
    await settle()
    abandoned = asyncio.create_task(batches.submit("a", [2, 3]))
    kept = asyncio.create_task(batches.submit("a", [4]))
    await settle()
    assert pending.held == 4
    abandoned.cancel()
    await settle()
    downstream.hold.set()
    assert await first == ["a:1"] and await kept == ["a:4"]
    assert downstream.batches == [("a", [1]), ("a", [4])] and pending.held == 0
