"""Adaptive micro-batching: patches submitted concurrently go downstream together.

Batches form the way Triton's dynamic batcher forms them: a batch leaves as soon as the downstream has
room for it (fewer than `max_in_flight` batches out), so a lone request on an idle gateway waits for
nothing; while the downstream is busy, patches queue, and the next batch takes everything queued for
its group (up to `max_batch`) the moment one comes back, or when its oldest patch has waited
`max_wait_s`, whichever is first.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prometheus_client import Histogram

from pcam_core import limits
from services.common.admission import Admission

G = TypeVar("G", bound=Hashable)  # a group: what makes results differ
T = TypeVar("T")  # an item
R = TypeVar("R")  # its result

DEFAULT_MAX_PENDING_PATCHES = 512
"""Uncached patches the gateway holds queued or downstream before it refuses more (admission control)."""


@dataclass(frozen=True)
class Batching:
    """How the gateway batches uncached patches (its settings' batch_* fields)."""

    max_size: int = 64
    max_in_flight: int = 2
    max_wait_s: float = 0.05
    max_explain: int = limits.MAX_EXPLAIN_IMAGES
    """Explain batches are capped at the ensemble's explain limit."""


@dataclass
class _Queued(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    since: float = field(default_factory=time.monotonic)


class MicroBatcher(Generic[G, T, R]):
    """Coalesces items submitted concurrently under one group into calls of `run(group, items)`.

    `run` returns one output per item, in order; an exception it raises reaches every item of that
    batch (and so every request with an item in it). Groups never mix: a group is whatever makes a
    result differ (options, release). The batches run in their own tasks, so a caller that leaves
    does not cancel the work of the others.
    """

    def __init__(
        self,
        run: Callable[[G, list[T]], Awaitable[Sequence[R]]],
        max_batch: int,
        max_in_flight: int,
        max_wait_s: float,
        batch_limit: Callable[[G], int] | None = None,
        sizes: Histogram | None = None,
        waits: Histogram | None = None,
        admission: Admission | None = None,
    ) -> None:
        """`sizes` and `waits`, when given, observe each batch's size and each item's wait. `admission`
        bounds the items held, queued or downstream: an item counts from `submit` until its batch comes
        back (or, its caller gone, it leaves the queue unsent), whether or not its caller still waits."""
        self._run, self.max_batch, self.max_in_flight, self.max_wait_s = (
            run,
            max_batch,
            max_in_flight,
            max_wait_s,
        )
        self._batch_limit = batch_limit or (lambda _: max_batch)
        self._sizes, self._waits, self._admission = sizes, waits, admission
        self._queues: dict[G, list[_Queued[T, R]]] = {}
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None

    async def submit(self, group: G, items: Sequence[T]) -> list[R]:
        """The outputs of `items`, computed in whatever batches form while they wait."""
        if self._admission is not None:
            self._admission.acquire(len(items))  # Overloaded at once, before anything is queued
        loop = asyncio.get_running_loop()
        queued = [_Queued[T, R](item, loop.create_future()) for item in items]
        for entry in queued:
            entry.future.add_done_callback(_retrieve)
        self._queues.setdefault(group, []).extend(queued)
        self._dispatch()
        return list(await asyncio.gather(*(entry.future for entry in queued)))

    def queued(self) -> int:
        """Items waiting for a batch."""
        return sum(len(queue) for queue in self._queues.values())

    async def drain(self) -> None:
        """Cancel the batches downstream and fail the queued items (app shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
        for queue in self._queues.values():
            for entry in queue:
                entry.future.cancel()
            self._release(len(queue))
        self._queues.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _dispatch(self) -> None:
        """Send batches while the downstream has room, or while a queued item is overdue."""
        now = time.monotonic()
        self._forget_abandoned()
        while self._queues:
            group, queue = min(self._queues.items(), key=lambda pair: pair[1][0].since)
            if self._in_flight >= self.max_in_flight and now - queue[0].since < self.max_wait_s:
                break
            size = min(self.max_batch, self._batch_limit(group))
            batch, rest = queue[:size], queue[size:]
            if rest:
                self._queues[group] = rest
            else:
                del self._queues[group]
            self._start(group, batch, now)
        self._arm_timer()

    def _forget_abandoned(self) -> None:
        """Drop queued items whose callers have gone (a deadline passed): no one would read their results."""
        for group, queue in list(self._queues.items()):
            kept = [entry for entry in queue if not entry.future.cancelled()]
            if len(kept) < len(queue):
                self._release(len(queue) - len(kept))
                if kept:
                    self._queues[group] = kept
                else:
                    del self._queues[group]

    def _release(self, count: int) -> None:
        if self._admission is not None and count:
            self._admission.release(count)

    def _start(self, group: G, batch: list[_Queued[T, R]], now: float) -> None:
        if self._sizes is not None:
            self._sizes.observe(len(batch))
        if self._waits is not None:
            for entry in batch:
                self._waits.observe(now - entry.since)
        self._in_flight += 1
        task = asyncio.create_task(self._complete(group, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _complete(self, group: G, batch: list[_Queued[T, R]]) -> None:
        try:
            outputs = await self._run(group, [entry.item for entry in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(f"{len(outputs)} outputs for a batch of {len(batch)}")
        except asyncio.CancelledError:
            for entry in batch:
                entry.future.cancel()
            raise
        except Exception as exc:
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
        else:
            for entry, output in zip(batch, outputs, strict=True):
                if not entry.future.done():  # its caller may have been cancelled meanwhile
                    entry.future.set_result(output)
        finally:
            self._in_flight -= 1
            self._release(len(batch))
            self._dispatch()

    def _arm_timer(self) -> None:
        """Wake up when the oldest queued item becomes overdue (nothing may come back before)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._queues:
            oldest = min(queue[0].since for queue in self._queues.values())
            loop = asyncio.get_running_loop()
            delay = max(0.0, oldest + self.max_wait_s - time.monotonic())
            self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()


def _retrieve(future: asyncio.Future[object]) -> None:
    """Mark an exception as seen: a request that already failed on another item leaves this one unread."""
    if not future.cancelled():
        future.exception()
