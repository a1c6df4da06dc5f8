from services.gateway.breaker import CircuitBreaker
from services.gateway.ratelimit import RateLimiter
from tests.unit.gateway.fakes import Clock, FakeRedis


def limiter(limit: int = 3, clock: Clock | None = None) -> tuple[RateLimiter, FakeRedis]:
    redis = FakeRedis()
    breaker = CircuitBreaker("redis-rl", failure_threshold=2, reset_after_s=30, clock=clock or Clock())
    return RateLimiter(redis, limit, breaker, clock=clock or Clock(1_000_020.0)), redis


async def test_the_request_over_the_limit_is_refused_until_the_window_ends() -> None:
    clock = Clock(1_000_020.0)  # 1_000_020 = 16667 * 60 + 0: the start of a window, plus 0 s
    clock.now += 43  # 43 s into the window
    rate, redis = limiter(3, clock)
    assert [(await rate.hit("key:alice")).allowed for _ in range(4)] == [True, True, True, False]
    refused = await rate.hit("key:alice")
    assert not refused.allowed and refused.retry_after_s == 17
    assert all(seconds == 120 for seconds in redis.expiry.values())  # counters expire by themselves
    assert (await rate.hit("key:bob")).allowed  # per client
    clock.now += 17  # the next window
    assert (await rate.hit("key:alice")).allowed


async def test_retry_after_is_at_least_one_second() -> None:
    clock = Clock(1_000_020.0 + 59.9)
    rate, _ = limiter(1, clock)
    await rate.hit("ip:10.0.0.1")
    assert (await rate.hit("ip:10.0.0.1")).retry_after_s == 1


async def test_redis_down_fails_open_and_the_breaker_stops_asking() -> None:
    rate, redis = limiter(1)
    redis.down = True
    verdicts = [await rate.hit("key:alice") for _ in range(5)]
    assert all(v.allowed and not v.counted for v in verdicts)
    assert redis.calls == 2  # two failures opened the breaker


async def test_each_counted_verdict_states_quota_remaining_and_reset_as_ratelimit_fields() -> None:
    clock = Clock(1_000_020.0 + 43)
    rate, _ = limiter(3, clock)
    verdicts = [await rate.hit("key:alice") for _ in range(4)]
    assert [v.remaining for v in verdicts] == [2, 1, 0, 0]
    assert dict(verdicts[0].fields()) == {
        b"ratelimit-policy": b'"per-client";q=3;w=60',
        b"ratelimit": b'"per-client";r=2;t=17',
    }
    assert dict(verdicts[3].fields())[b"ratelimit"] == b'"per-client";r=0;t=17'


async def test_an_uncounted_request_states_no_ratelimit_fields() -> None:
    rate, redis = limiter(1)
    redis.down = True
    assert (await rate.hit("key:alice")).fields() == []
