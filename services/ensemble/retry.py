"""Retrying Triton calls: which errors are transient, exponential backoff with full jitter, bounded.

Inference is idempotent, so a repeated request is safe; what decides a retry is whether a repeat can
succeed and what it costs:
- UNAVAILABLE is retried: gRPC fails fast with it when no connection can be made (server down or
  restarting), and Triton answers it for a model not (yet) loaded; all transient.
- UNAVAILABLE from the dynamic batcher's queue policy (queue full, or a request queued past its
  timeout) is not retried: the server is overloaded, and a repeat would add load where there is too
  much. The ensemble answers 503 overloaded with Retry-After instead.
- DEADLINE_EXCEEDED is not retried by default: the attempt spent its whole deadline, the server may
  still be running it (overload), and a repeat would add load at the worst moment and cost another
  full deadline. `retry_deadline_exceeded` opts in.
- Everything else is not retried: INVALID_ARGUMENT, INTERNAL (the model raised), RESOURCE_EXHAUSTED
  (a message over the size limit, which a repeat cannot fix), CANCELLED, and local client errors
  (no status) give the same answer every time.
"""

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from tritonclient.utils import InferenceServerException

T = TypeVar("T")
logger = logging.getLogger(__name__)

# tritonclient puts str(grpc.StatusCode.X) ("StatusCode.X") into InferenceServerException.status().
UNAVAILABLE = str(grpc.StatusCode.UNAVAILABLE)
DEADLINE_EXCEEDED = str(grpc.StatusCode.DEADLINE_EXCEEDED)
QUEUE_REJECTIONS = ("Exceeds maximum queue size", "Request timeout expired")
"""Triton's messages for a request its queue policy refused (max_queue_size, timeout_action REJECT)."""


def rejected_by_queue(error: InferenceServerException) -> bool:
    """Whether Triton refused the request because the model's queue was full or it waited too long."""
    message = error.message() or ""
    return error.status() == UNAVAILABLE and any(reason in message for reason in QUEUE_REJECTIONS)


@dataclass(frozen=True)
class RetryPolicy:
    """How one Triton call is repeated: at most `attempts` tries within `budget_s` seconds in all."""

    attempts: int = 3
    """Tries per call, the first included (1: never retry)."""
    backoff_s: float = 0.1
    """Backoff before retry k (1-based) is uniform in [0, min(max_backoff_s, backoff_s * 2**(k-1)))."""
    max_backoff_s: float = 2.0
    budget_s: float = 15.0
    """Wall time of the call, retries and backoff included; each attempt's deadline is cut to what is left."""
    retry_deadline_exceeded: bool = False

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or self.max_backoff_s < 0 or self.budget_s <= 0:
            raise ValueError(f"invalid retry policy: {self}")

    def retryable(self, error: InferenceServerException) -> bool:
        """True for the transient statuses only (see the module docstring)."""
        status = error.status()
        if status == UNAVAILABLE:
            return not rejected_by_queue(error)
        return self.retry_deadline_exceeded and status == DEADLINE_EXCEEDED

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry `retry` (1-based): full jitter, so callers that failed together spread out."""
        cap = min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1))
        return (rng or random).uniform(0.0, cap)


class CallFailed(RuntimeError):
    """A call failed for good: a non-transient error, or attempts or time budget used up."""

    def __init__(self, error: InferenceServerException, attempts: int) -> None:
        super().__init__(f"{error.message()} ({attempts} attempt{'s' * (attempts > 1)})")
        self.error, self.attempts = error, attempts

    @property
    def transient(self) -> bool:
        """Whether the server was unreachable or too slow (worth a later try), not refusing the call."""
        return self.error.status() in (UNAVAILABLE, DEADLINE_EXCEEDED)

    @property
    def overloaded(self) -> bool:
        """Whether the server refused the call for want of capacity (its queue policy)."""
        return rejected_by_queue(self.error)


async def call_with_retry(
    call: Callable[[float], Awaitable[T]],
    policy: RetryPolicy,
    timeout_s: float,
    *,
    what: str = "triton call",
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> T:
    """`await call(deadline_s)` until it succeeds, retrying transient errors per `policy`.

    `deadline_s` is the attempt's client timeout: `timeout_s`, or less when the budget has less left.
    Raises CallFailed carrying the last error.
    """
    start = clock()
    attempt = 0
    while True:
        attempt += 1
        remaining = policy.budget_s - (clock() - start)
        try:
            return await call(min(timeout_s, remaining))
        except InferenceServerException as error:
            if not policy.retryable(error) or attempt >= policy.attempts:
                raise CallFailed(error, attempt) from error
            delay = policy.backoff(attempt, rng)
            # No retry that could not start before the budget runs out: the total time stays bounded.
            if clock() - start + delay >= policy.budget_s:
                raise CallFailed(error, attempt) from error
            logger.warning(
                "%s failed (%s); retry %d/%d in %.3f s", what, error, attempt, policy.attempts - 1, delay
            )
            await sleep(delay)
