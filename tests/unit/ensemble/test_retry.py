"""The retry policy: only transient gRPC statuses are retried, within attempts and a time budget."""

import asyncio
import random
import socket

import grpc
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from pcam_core.release import Member
from services.ensemble.retry import CallFailed, RetryPolicy, call_with_retry
from services.ensemble.triton import TritonMembers, TritonRefused, TritonUnavailable
from tests.unit.ensemble.fakes import FakeTriton, mean_pixel

UNAVAILABLE, DEADLINE = str(grpc.StatusCode.UNAVAILABLE), str(grpc.StatusCode.DEADLINE_EXCEEDED)
NEVER_RETRIED = [
    str(grpc.StatusCode.INVALID_ARGUMENT),
    str(grpc.StatusCode.INTERNAL),
    str(grpc.StatusCode.RESOURCE_EXHAUSTED),
    str(grpc.StatusCode.CANCELLED),
    str(grpc.StatusCode.NOT_FOUND),
    None,  # a local client error
]


class Clock:
    """A fake monotonic clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    """Fails its first `failures` calls with `status`; each costs `cost_s` of the fake clock, or its deadline."""

    def __init__(self, clock: Clock, status: str | None, failures: int, cost_s: float = 0.0) -> None:
        self.clock, self.status, self.failures, self.cost_s = clock, status, failures, cost_s
        self.timeouts: list[float] = []

    async def __call__(self, timeout_s: float) -> str:
        self.timeouts.append(timeout_s)
        self.clock.now += min(self.cost_s, timeout_s)
        if len(self.timeouts) <= self.failures:
            raise InferenceServerException("boom", status=self.status)
        return "ok"


async def run(policy: RetryPolicy, call: Flaky, clock: Clock, timeout_s: float = 1.0) -> str:
    return await call_with_retry(
        call, policy, timeout_s, sleep=clock.sleep, clock=clock, rng=random.Random(0)
    )


def test_only_transient_statuses_are_retryable() -> None:
    policy = RetryPolicy()
    assert policy.retryable(InferenceServerException("x", status=UNAVAILABLE))
    assert not policy.retryable(InferenceServerException("x", status=DEADLINE))
    assert RetryPolicy(retry_deadline_exceeded=True).retryable(InferenceServerException("x", status=DEADLINE))
    for status in NEVER_RETRIED:
        assert not RetryPolicy(retry_deadline_exceeded=True).retryable(InferenceServerException("x", status))


async def test_unavailable_is_retried_until_it_succeeds() -> None:
    clock = Clock()
    call = Flaky(clock, UNAVAILABLE, failures=2)
    assert await run(RetryPolicy(attempts=3), call, clock) == "ok"
    assert len(call.timeouts) == 3 and len(clock.sleeps) == 2


async def test_attempts_are_bounded() -> None:
    clock = Clock()
    call = Flaky(clock, UNAVAILABLE, failures=99)
    with pytest.raises(CallFailed) as caught:
        await run(RetryPolicy(attempts=4), call, clock)
    assert len(call.timeouts) == 4 and caught.value.attempts == 4 and "4 attempts" in str(caught.value)
    assert caught.value.error.status() == UNAVAILABLE


@pytest.mark.parametrize("status", [*NEVER_RETRIED, DEADLINE])
async def test_non_transient_errors_are_never_retried(status) -> None:
    clock = Clock()
    call = Flaky(clock, status, failures=99)
    with pytest.raises(CallFailed):
        await run(RetryPolicy(attempts=5), call, clock)
    assert len(call.timeouts) == 1 and clock.sleeps == []


def test_backoff_is_exponential_jittered_and_capped() -> None:
    policy = RetryPolicy(backoff_s=0.1, max_backoff_s=0.5)
    rng = random.Random(1)
    for retry, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (10, 0.5)]:
        delays = [policy.backoff(retry, rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= cap
        assert max(delays) > 0.8 * cap and len(set(delays)) > 100  # jittered over the whole range


async def test_total_time_is_bounded_by_the_budget() -> None:
    clock = Clock()
    # Every attempt costs 0.4 s; the budget of 1 s allows no retry that would start after it.
    call = Flaky(clock, UNAVAILABLE, failures=99, cost_s=0.4)
    policy = RetryPolicy(attempts=100, backoff_s=0.05, max_backoff_s=0.05, budget_s=1.0)
    with pytest.raises(CallFailed):
        await run(policy, call, clock, timeout_s=0.6)
    assert clock.now <= 1.0 + 1e-9 and len(call.timeouts) == 3
    assert call.timeouts[0] == 0.6 and all(t <= 1.0 - 0.4 for t in call.timeouts[2:])
    # Each attempt's deadline is what is left of the budget when it starts.
    assert call.timeouts[1] == pytest.approx(min(0.6, 1.0 - 0.4 - clock.sleeps[0]))


MEMBERS = tuple(Member(name=n, architecture="x", sha256="0" * 64, temperature=1.0) for n in ("a", "b"))
FAST = RetryPolicy(attempts=3, backoff_s=0.001, max_backoff_s=0.002)


async def test_members_retry_transient_failures_through_the_client() -> None:
    client = FakeTriton({"a": mean_pixel, "b": mean_pixel}, failures={"b": (UNAVAILABLE, 2)})
    logits = await TritonMembers(client, 1.0, FAST).logits(MEMBERS, np.zeros((2, 96, 96, 3), np.uint8))
    assert logits.shape == (2, 2) and client.requests("a") == [2] and client.requests("b") == [2, 2, 2]


async def test_members_give_up_after_the_attempts() -> None:
    client = FakeTriton({"a": mean_pixel, "b": mean_pixel}, failures={"b": (UNAVAILABLE, -1)})
    with pytest.raises(TritonUnavailable, match="b: b failed .3 attempts"):
        await TritonMembers(client, 1.0, FAST).logits(MEMBERS, np.zeros((2, 96, 96, 3), np.uint8))
    assert len(client.requests("b")) == 3


async def test_members_never_retry_an_invalid_argument_and_report_it_as_refused() -> None:
    client = FakeTriton({"a": mean_pixel, "b": mean_pixel}, failures={"b": (NEVER_RETRIED[0], -1)})
    with pytest.raises(TritonRefused, match="1 attempt"):
        await TritonMembers(client, 1.0, FAST).logits(MEMBERS, np.zeros((2, 96, 96, 3), np.uint8))
    assert len(client.requests("b")) == 1


async def test_the_channel_reconnects_on_the_retry_time_scale() -> None:
    # gRPC's default reconnect backoff would keep answering the cached "connection refused" for seconds.
    from devstack.ports import free_port
    from services.ensemble.triton import connect

    port = free_port()
    client = connect(f"127.0.0.1:{port}", RetryPolicy(backoff_s=0.05))
    try:
        with pytest.raises(InferenceServerException, match="refused"):
            await client.is_server_live(client_timeout=0.5)
        listener = socket.create_server(("127.0.0.1", port))  # accepts, but speaks no HTTP/2
        try:
            await asyncio.sleep(0.3)
            with pytest.raises(InferenceServerException) as caught:
                await client.is_server_live(client_timeout=0.5)
            assert "refused" not in caught.value.message()
        finally:
            listener.close()
    finally:
        await client.close()
