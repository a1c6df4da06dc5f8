"""Gateway metrics: cache lookups by result, Redis calls skipped by use and reason, single-flight joins,
and /metrics neither rate limited nor counted."""

import asyncio

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from pcam_core.schemas import InferOptions, PatchResult
from services.gateway.app import create_app
from services.gateway.breaker import CircuitBreaker
from services.gateway.cache import ResultCache
from services.gateway.predict import Predictor
from services.gateway.ratelimit import RateLimiter
from services.gateway.singleflight import SingleFlight
from tests.unit.gateway.fakes import FakeRedis, unreachable_settings
from tests.unit.gateway.test_predict import FakeDownstream

BALANCED = InferOptions(operating_point="balanced")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def lookups(result: str) -> float:
    return sample("pcam_gateway_cache_lookups_total", result=result)


def skipped(use: str, reason: str) -> float:
    return sample("pcam_gateway_redis_skipped_total", use=use, reason=reason)


class Delta:
    """The change of each cache lookup result since construction."""

    def __init__(self) -> None:
        self.start = {r: lookups(r) for r in ("hit", "miss", "bypass", "error")}

    def __call__(self) -> dict[str, float]:
        return {r: lookups(r) - v for r, v in self.start.items() if lookups(r) != v}


def predictor(redis: FakeRedis, name: str, **kw) -> Predictor:
    return Predictor(ResultCache(redis, 60, CircuitBreaker(name, 1, 60), PatchResult), FakeDownstream(), **kw)


async def test_hits_and_misses_count_distinct_images() -> None:
    redis = FakeRedis()
    predict = predictor(redis, "redis-metrics-hits")
    delta = Delta()
    await predict.predict([b"ok-1", b"ok-22", b"ok-1"], BALANCED)
    assert delta() == {"miss": 2}
    await predict.predict([b"ok-1", b"ok-333"], BALANCED)
    assert delta() == {"miss": 3, "hit": 1}


async def test_local_hits_are_hits_and_counted_apart_even_while_redis_is_down() -> None:
    redis = FakeRedis()
    cache = ResultCache(
        redis, 60, CircuitBreaker("redis-metrics-local", 1, 60), PatchResult, local_bytes=2**20
    )
    predict = Predictor(cache, FakeDownstream())
    await predict.predict([b"ok-1"], BALANCED)
    local = sample("pcam_gateway_cache_local_hits_total")
    redis.down = True
    delta = Delta()
    _, cached = await predict.predict([b"ok-1", b"ok-22"], BALANCED)
    assert cached == [True, False]
    assert delta() == {"hit": 1, "error": 1}
    assert sample("pcam_gateway_cache_local_hits_total") == local + 1


async def test_cache_false_is_a_bypass() -> None:
    delta = Delta()
    await predictor(FakeRedis(), "redis-metrics-bypass").predict([b"ok-1"], BALANCED, read_cache=False)
    assert delta() == {"bypass": 1}


async def test_a_failed_read_is_an_error_then_the_open_breaker_a_bypass() -> None:
    redis = FakeRedis()
    redis.down = True
    predict = predictor(redis, "redis-metrics-down")
    delta = Delta()
    read_error, read_open = skipped("cache_read", "error"), skipped("cache_read", "breaker_open")
    write_open = skipped("cache_write", "breaker_open")
    await predict.predict([b"ok-1", b"ok-22"], BALANCED)  # the read fails and opens the breaker
    assert delta() == {"error": 2}
    await predict.predict([b"ok-1"], BALANCED)
    assert delta() == {"error": 2, "bypass": 1}
    assert skipped("cache_read", "error") == read_error + 1
    assert skipped("cache_read", "breaker_open") == read_open + 1
    assert skipped("cache_write", "breaker_open") == write_open + 2  # the answers were not stored


async def test_rate_limit_redis_skips_are_counted_by_reason() -> None:
    redis = FakeRedis()
    redis.down = True
    limiter = RateLimiter(redis, 5, CircuitBreaker("redis-metrics-limit", 1, 60))
    error, open_ = skipped("rate_limit", "error"), skipped("rate_limit", "breaker_open")
    await limiter.admit("ip:1")
    await limiter.admit("ip:1")
    assert skipped("rate_limit", "error") == error + 1
    assert skipped("rate_limit", "breaker_open") == open_ + 1


async def test_joining_a_computation_in_flight_counts_each_joined_image() -> None:
    before = sample("pcam_gateway_singleflight_joins_total")
    flights: SingleFlight[str, str] = SingleFlight()

    async def compute(keys: list[str]) -> dict[str, str]:
        await asyncio.sleep(0.05)
        return {k: k for k in keys}

    first = asyncio.create_task(flights.run(["a", "b"], compute))
    await asyncio.sleep(0)
    await flights.run(["a", "b", "c"], compute)
    await first
    assert sample("pcam_gateway_singleflight_joins_total") == before + 2


@pytest.fixture
def limited_client():
    settings = unreachable_settings(rate_limit_per_minute=1)
    with TestClient(create_app(settings)) as client:
        client.app.state.limiter = RateLimiter(FakeRedis(), 1, CircuitBreaker("redis-metrics-app", 3, 10))
        yield client


def test_metrics_is_not_rate_limited_counted_or_timed(limited_client) -> None:
    labels = {"service": "gateway", "route": "/metrics", "method": "GET", "status": "200"}
    limited = sample("pcam_gateway_rate_limited_total")
    for _ in range(5):
        response = limited_client.get("/metrics")
        assert response.status_code == 200
        assert "pcam_gateway_cache_lookups_total" in response.text
    assert sample("pcam_gateway_rate_limited_total") == limited
    assert REGISTRY.get_sample_value("pcam_http_requests_total", labels) is None
    assert REGISTRY.get_sample_value("pcam_http_request_duration_seconds_count", labels) is None
    # The guard does apply to the API: the second call in the minute is refused.
    assert [limited_client.get("/v1/models").status_code for _ in range(2)][1] == 429
    assert sample("pcam_gateway_rate_limited_total") == limited + 1
