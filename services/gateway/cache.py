"""Result cache in Redis: keys bind the upload hash, the release and the options."""

import json
import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)
KEY_PREFIX = "pcam:result:v1"


def result_key(release_id: str, operating_point: str, upload_sha256: str) -> str:
    """A cache key; a new release or other options can never hit an old entry."""
    return f"{KEY_PREFIX}:{release_id}:{operating_point}:{upload_sha256}"


class ResultCache:
    """Best-effort cache: a Redis failure is a miss, never a failed request."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis, self.ttl_s = redis, ttl_s

    async def get_many(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """Cached results for `keys`, None where absent or unreadable."""
        try:
            raw = await self.redis.mget(keys)
        except (RedisError, OSError) as exc:
            logger.warning("cache read bypassed: %s", exc)
            return [None] * len(keys)
        return [_load(value) for value in raw]

    async def set_many(self, entries: dict[str, dict[str, Any]]) -> None:
        """Store results (successes only: callers never pass errors) with the TTL."""
        if not entries:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, value in entries.items():
                    pipe.set(key, json.dumps(value, separators=(",", ":")), ex=self.ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            logger.warning("cache write skipped: %s", exc)

    async def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False


def _load(value: bytes | None) -> dict[str, Any] | None:
    """A cached result, or None if absent or unreadable (an unreadable entry is just a miss)."""
    if value is None:
        return None
    try:
        result = json.loads(value)
    except ValueError:
        return None
    return result if isinstance(result, dict) else None
