from redis.asyncio import Redis

from devstack.processes import free_port
from services.gateway.cache import ResultCache, result_key


def test_key_binds_release_options_and_upload() -> None:
    key = result_key("rel-7", "screening", "ab" * 32)
    assert "rel-7" in key and "screening" in key and key.endswith("ab" * 32)
    assert result_key("rel-8", "screening", "ab" * 32) != key


async def test_unreachable_redis_is_a_miss_not_an_error() -> None:
    redis = Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    cache = ResultCache(redis, ttl_s=60)
    assert await cache.get_many(["a", "b"]) == [None, None]
    await cache.set_many({"a": {"probability": 0.5}})
    assert await cache.ping() is False
    await redis.aclose()
