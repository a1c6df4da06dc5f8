import asyncio

from pydantic import BaseModel
from redis.asyncio import Redis

from devstack.ports import free_port
from pcam_core.schemas import InferOptions
from services.gateway.breaker import CircuitBreaker
from services.gateway.cache import LOCAL_ENTRY_OVERHEAD, ResultCache, result_key
from tests.unit.gateway.fakes import Clock, FakeRedis
from tests.unit.gateway.tasks import settle

SHA = "ab" * 32


class Entry(BaseModel):
    """A stand-in result: the cache stores any model as JSON and reads it back validated."""

    probability: float


def test_key_binds_release_options_and_upload() -> None:
    options = InferOptions(operating_point="screening")
    key = result_key("rel-7", options, SHA)
    assert "rel-7" in key and "screening" in key and key.endswith(SHA)
    assert result_key("rel-8", options, SHA) != key
    others = [
        InferOptions(operating_point="balanced"),
        InferOptions(operating_point="screening", tta=True),
        InferOptions(operating_point="screening", explain=True),
        InferOptions(operating_point="screening", explain="cam"),
        InferOptions(operating_point="screening", tta=True, explain=True),
        InferOptions(operating_point="screening", abstain=True),
    ]
    assert len({key, *(result_key("rel-7", o, SHA) for o in others)}) == 7


async def test_unreachable_redis_is_a_miss_not_an_error() -> None:
    # Built like the app builds it: from_url keeps redis-py's per-connection default of no retries
    # (the Redis() constructor would retry 10 times with backoff, seconds per call).
    redis = Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2, socket_timeout=0.2
    )
    cache = ResultCache(redis, ttl_s=60, breaker=CircuitBreaker("redis-test", 3, 10.0), schema=Entry)
    assert await cache.get_many(["a", "b"]) == [None, None]
    await cache.set_many({"a": Entry(probability=0.5)})
    assert await cache.ping() is False
    await redis.aclose()


async def test_entries_round_trip_with_the_ttl() -> None:
    redis = FakeRedis()
    cache = ResultCache(redis, ttl_s=60, breaker=CircuitBreaker("redis-test", 3, 10.0), schema=Entry)
    await cache.set_many({"a": Entry(probability=0.5)})
    assert await cache.get_many(["a", "b"]) == [Entry(probability=0.5), None]
    assert redis.expiry["a"] == 60
    redis.store["b"] = b"not json"
    redis.store["c"] = b'{"probability": "high"}'  # JSON, but not an entry: written by another version
    assert await cache.get_many(["b", "c"]) == [None, None]


async def test_the_breaker_skips_a_dead_redis_then_tries_it_again() -> None:
    redis, clock = FakeRedis(), Clock()
    cache = ResultCache(
        redis, ttl_s=60, breaker=CircuitBreaker("redis-test", 2, 5.0, clock=clock), schema=Entry
    )
    await cache.set_many({"a": Entry(probability=0.5)})
    redis.down = True
    for _ in range(5):
        assert await cache.get_many(["a"]) == [None]
        await cache.set_many({"b": Entry(probability=0.1)})
    assert redis.calls == 1 + 2  # the write, then two failures open the breaker: Redis is left alone
    redis.down = False
    assert await cache.get_many(["a"]) == [None]  # still open: answers stay correct, just uncached
    clock.now += 5.0
    assert await cache.get_many(["a"]) == [Entry(probability=0.5)]  # the trial succeeds: closed again
    assert await cache.get_many(["a"]) == [Entry(probability=0.5)]


async def test_concurrent_lookups_share_one_mget_and_each_gets_its_own_entries() -> None:
    redis = FakeRedis()
    cache = ResultCache(redis, ttl_s=60, breaker=CircuitBreaker("redis-test", 3, 10.0), schema=Entry)
    await cache.set_many({"a": Entry(probability=0.1), "b": Entry(probability=0.2)})
    redis.gate = asyncio.Event()
    first = asyncio.create_task(cache.get_many(["a"]))  # goes at once, alone
    await settle()
    waiting = [asyncio.create_task(cache.get_many(keys)) for keys in (["b"], ["a", "c"])]
    await settle()
    redis.gate.set()
    assert await first == [Entry(probability=0.1)]
    assert [await task for task in waiting] == [[Entry(probability=0.2)], [Entry(probability=0.1), None]]
    assert redis.mgets == [["a"], ["b", "a", "c"]]


async def test_a_failed_shared_mget_is_a_miss_for_every_lookup_in_it() -> None:
    redis = FakeRedis()
    cache = ResultCache(redis, ttl_s=60, breaker=CircuitBreaker("redis-test", 5, 10.0), schema=Entry)
    redis.gate = asyncio.Event()
    first = asyncio.create_task(cache.read(["a"]))
    await settle()
    waiting = [asyncio.create_task(cache.read([key])) for key in ("b", "c")]
    await settle()
    redis.down = True  # the shared MGET of b and c fails
    redis.gate.set()
    await first
    for task in waiting:
        assert (await task).state == "error" and (await task).values == [None]


def local_cache(redis: FakeRedis, entries: int, clock: Clock | None = None) -> ResultCache[Entry]:
    """A cache whose local tier holds `entries` stand-in results."""
    size = len(Entry(probability=0.5).model_dump_json()) + LOCAL_ENTRY_OVERHEAD
    return ResultCache(
        redis,
        60,
        CircuitBreaker("redis-test", 2, 5.0),
        Entry,
        local_bytes=entries * size,
        clock=clock or Clock(),
    )


async def test_the_local_tier_answers_without_asking_redis_even_while_it_is_down() -> None:
    redis = FakeRedis()
    cache = local_cache(redis, entries=4)
    await cache.set_many({"a": Entry(probability=0.5)})
    assert redis.store["a"]  # written through to Redis as well
    redis.down = True
    found = await cache.read(["a", "b"])
    assert found.values == [Entry(probability=0.5), None]
    assert found.state == "error" and found.lookups() == {"hit": 1, "error": 1}
    calls = redis.calls
    assert (await cache.read(["a"])).lookups() == {"hit": 1, "miss": 0}
    assert redis.calls == calls  # every key found locally: Redis is not asked


async def test_redis_hits_are_kept_locally_and_the_least_recently_used_go_first() -> None:
    redis = FakeRedis()
    cache = local_cache(redis, entries=2)
    for key, probability in (("a", 0.1), ("b", 0.2), ("c", 0.3)):
        redis.store[key] = Entry(probability=probability).model_dump_json().encode()
    assert await cache.get_many(["a", "b"]) == [Entry(probability=0.1), Entry(probability=0.2)]
    assert await cache.get_many(["a"]) == [Entry(probability=0.1)]  # local: a is now the most recent
    assert await cache.get_many(["c"]) == [Entry(probability=0.3)]  # evicts b, the least recent
    redis.mgets.clear()
    assert await cache.get_many(["a", "b", "c"]) == [Entry(probability=p) for p in (0.1, 0.2, 0.3)]
    assert redis.mgets == [["b"]]


async def test_local_entries_expire_with_the_cache_ttl() -> None:
    redis, clock = FakeRedis(), Clock()
    cache = local_cache(redis, entries=4, clock=clock)
    await cache.set_many({"a": Entry(probability=0.5)})
    redis.store.clear()  # gone from Redis: only the local tier could still answer
    clock.now += 59
    assert await cache.get_many(["a"]) == [Entry(probability=0.5)]
    clock.now += 1
    assert await cache.get_many(["a"]) == [None]


async def test_an_entry_larger_than_the_local_tier_is_kept_in_redis_only() -> None:
    redis = FakeRedis()
    cache = ResultCache(
        redis, 60, CircuitBreaker("redis-test", 2, 5.0), Entry, local_bytes=LOCAL_ENTRY_OVERHEAD
    )
    await cache.set_many({"a": Entry(probability=0.5)})  # its JSON does not fit beside the overhead
    assert await cache.get_many(["a"]) == [Entry(probability=0.5)]
    assert redis.mgets == [["a"]]
