"""Single-flight: concurrent requests for the same keys in one process share one computation."""

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from services.gateway.metrics import SINGLEFLIGHT_JOINS

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """An in-flight map key -> future: the first caller computes a key, later callers await it.

    The computation runs in its own task, so a caller that is cancelled (client gone, deadline hit)
    never cancels the work the other callers wait for; its result still reaches the cache.
    """

    def __init__(self) -> None:
        self._in_flight: dict[K, asyncio.Future[V]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones

    async def drain(self) -> None:
        """Cancel the computations still running and wait for them (app shutdown: before the clients
        they use are closed); their waiters see the cancellation."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def in_flight(self) -> int:
        """How many keys are being computed now."""
        return len(self._in_flight)

    async def run(self, keys: Sequence[K], compute: Callable[[list[K]], Awaitable[dict[K, V]]]) -> dict[K, V]:
        """A value per key; keys nobody computes yet go to one `compute` call with all of them.

        An exception of `compute` reaches every caller waiting on its keys (errors are shared, never
        remembered: the next call computes again).
        """
        loop = asyncio.get_running_loop()
        wanted = list(dict.fromkeys(keys))
        joined = {k: self._in_flight[k] for k in wanted if k in self._in_flight}
        mine = [k for k in wanted if k not in joined]
        owned: dict[K, asyncio.Future[V]] = {}
        for key in mine:
            owned[key] = self._in_flight[key] = loop.create_future()
            owned[key].add_done_callback(_retrieve)
        if owned:
            task = asyncio.create_task(self._lead(owned, compute))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if joined:
            SINGLEFLIGHT_JOINS.inc(len(joined))
        futures = {**joined, **owned}
        # shield: a cancelled caller must not cancel a future that other callers await.
        return {key: await asyncio.shield(futures[key]) for key in wanted}

    async def _lead(
        self, owned: dict[K, asyncio.Future[V]], compute: Callable[[list[K]], Awaitable[dict[K, V]]]
    ) -> None:
        try:
            values = await compute(list(owned))
        except asyncio.CancelledError:
            for future in owned.values():
                future.cancel()
            raise
        except Exception as exc:
            for future in owned.values():
                future.set_exception(exc)
        else:
            for key, future in owned.items():
                if key in values:
                    future.set_result(values[key])
                else:
                    future.set_exception(RuntimeError(f"computation returned no value for {key!r}"))
        finally:
            for key, future in owned.items():
                if self._in_flight.get(key) is future:
                    del self._in_flight[key]


def _retrieve(future: asyncio.Future[object]) -> None:
    """Mark an exception as seen: when every waiter left, asyncio would log it as never retrieved."""
    if not future.cancelled():
        future.exception()
