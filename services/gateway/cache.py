"""Result cache in Redis: keys bind the upload hash, the release and every option that changes a result."""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from pcam_core.schemas import InferOptions
from services.gateway.batching import MicroBatcher
from services.gateway.breaker import CircuitBreaker
from services.gateway.metrics import redis_skipped

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
MGET_MAX_KEYS = 1024
MGET_MAX_WAIT_S = 0.005
KEY_PREFIX = "pcam:result:v2"
"""v2: results carry tta/degraded/explanation; bumped so no v1 entry is read as a v2 one."""


def result_key(release_id: str, options: InferOptions, upload_sha256: str) -> str:
    """A cache key; a new release or other options can never hit an old entry.

    `options.operating_point` must be canonical (aliases share the entry of their target).
    """
    return (
        f"{KEY_PREFIX}:{release_id}:{options.operating_point}:tta={int(options.tta)}:"
        f"explain={int(options.explain)}:{upload_sha256}"
    )


@dataclass(frozen=True)
class CacheRead(Generic[M]):
    """One lookup: a value per key (None: absent or unreadable) and how Redis was reached."""

    values: list[M | None]
    state: Literal["read", "bypass", "error"]
    """read: Redis answered; bypass: not asked (breaker open); error: the read failed."""


class ResultCache(Generic[M]):
    """Best-effort cache of `schema` models as JSON: a Redis failure is a miss, never a failed
    request; the breaker skips a dead Redis so each request does not wait for its timeout."""

    def __init__(self, redis: Redis, ttl_s: int, breaker: CircuitBreaker, schema: type[M]) -> None:
        self.redis, self.ttl_s, self.breaker, self.schema = redis, ttl_s, breaker, schema
        # Concurrent lookups share one MGET: while one is out, the keys of the requests arriving meanwhile
        # go together in the next, so under load a hit costs a share of a Redis round trip, not a whole
        # one; a lone lookup goes at once. A slow Redis delays a waiting lookup by at most the wait.
        self._reads: MicroBatcher[None, str, bytes | None] = MicroBatcher(
            self._mget, max_batch=MGET_MAX_KEYS, max_in_flight=1, max_wait_s=MGET_MAX_WAIT_S
        )

    async def _mget(self, _: None, keys: list[str]) -> list[bytes | None]:
        return await self.redis.mget(keys)

    async def get_many(self, keys: Sequence[str]) -> list[M | None]:
        """Cached results for `keys`, None where absent or unreadable."""
        return (await self.read(keys)).values

    async def read(self, keys: Sequence[str]) -> CacheRead[M]:
        """Cached results for `keys` and whether Redis was read, skipped (breaker open) or failed."""
        if not keys:
            return CacheRead([], "read")
        if not self.breaker.allow():
            redis_skipped("cache_read", breaker_open=True)
            return CacheRead([None] * len(keys), "bypass")
        try:
            raw = await self._reads.submit(None, keys)
        except (RedisError, OSError) as exc:
            self.breaker.record_failure()
            redis_skipped("cache_read", breaker_open=False)
            logger.warning("cache read bypassed: %s", exc)
            return CacheRead([None] * len(keys), "error")
        self.breaker.record_success()
        return CacheRead([self._load(value) for value in raw], "read")

    async def set_many(self, entries: Mapping[str, M]) -> None:
        """Store results (successes only: callers never pass errors or degraded answers) with the TTL."""
        if not entries:
            return
        if not self.breaker.allow():
            redis_skipped("cache_write", breaker_open=True)
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, value in entries.items():
                    pipe.set(key, value.model_dump_json(), ex=self.ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self.breaker.record_failure()
            redis_skipped("cache_write", breaker_open=False)
            logger.warning("cache write skipped: %s", exc)
            return
        self.breaker.record_success()

    def _load(self, value: bytes | None) -> M | None:
        """A cached entry parsed and validated in one pass, or None if absent or unreadable (written by an
        older gateway, or damaged): a miss that gets recomputed, never a 500."""
        if value is None:
            return None
        try:
            return self.schema.model_validate_json(value)
        except ValidationError:
            return None

    async def ping(self) -> bool:
        """Whether Redis answers (asked directly: readiness reports the truth, breaker or not)."""
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False
