"""Result cache in Redis, fronted by a tier in the gateway's own memory: keys bind the upload hash, the
release and every option that changes a result, so an entry never changes and the local tier cannot
serve a stale answer."""

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, NamedTuple, TypeVar

from cachetools import TTLCache
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from pcam_core.schemas import InferOptions
from services.gateway.batching import MicroBatcher
from services.gateway.breaker import CircuitBreaker
from services.gateway.metrics import LOCAL_HITS, redis_skipped

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
MGET_MAX_KEYS = 1024
MGET_MAX_WAIT_S = 0.005
KEY_PREFIX = "pcam:result:v5"
"""v5: explain names its method (occlusion or cam) and explanations say which; bumped so no entry
written before is read as a v5 one (v4: flags, needs_review and the abstain option)."""
LOCAL_ENTRY_OVERHEAD = 2048
"""Bytes a local entry takes beyond its JSON: a parsed result's objects and its key (about 2.3 KB for a
422-byte result, measured with tracemalloc)."""


def result_key(release_id: str, options: InferOptions, upload_sha256: str) -> str:
    """A cache key; a new release or other options can never hit an old entry.

    `options.operating_point` must be canonical (aliases share the entry of their target).
    """
    return (
        f"{KEY_PREFIX}:{release_id}:{options.operating_point}:tta={int(options.tta)}:"
        f"explain={options.explain or 'none'}:abstain={int(options.abstain)}:{upload_sha256}"
    )


@dataclass(frozen=True)
class CacheRead(Generic[M]):
    """One lookup: a value per key (None: absent or unreadable) and how Redis was reached."""

    values: list[M | None]
    state: Literal["read", "bypass", "error"]
    """For the keys not in the local tier: read: Redis answered (or was not needed); bypass: not
    asked (breaker open); error: the read failed."""
    local_hits: int = 0
    """Values found in the gateway's own memory, without asking Redis."""

    def lookups(self) -> dict[str, int]:
        """Keys by lookup result (hit, miss, bypass, error), as pcam_gateway_cache_lookups_total counts."""
        if self.state != "read":
            return {"hit": self.local_hits, self.state: len(self.values) - self.local_hits}
        hits = sum(value is not None for value in self.values)
        return {"hit": hits, "miss": len(self.values) - hits}


class _Local(NamedTuple, Generic[M]):
    value: M
    size: int


class ResultCache(Generic[M]):
    """Best-effort cache of `schema` models as JSON: a Redis failure is a miss, never a failed
    request; the breaker skips a dead Redis so each request does not wait for its timeout.

    The most recently used entries, up to `local_bytes`, are also kept parsed in this process: a hit
    there costs no Redis round trip, and still answers while Redis is down.
    """

    def __init__(
        self,
        redis: Redis,
        ttl_s: int,
        breaker: CircuitBreaker,
        schema: type[M],
        local_bytes: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis, self.ttl_s, self.breaker, self.schema = redis, ttl_s, breaker, schema
        self._local: TTLCache[str, _Local[M]] | None = (
            TTLCache(maxsize=local_bytes, ttl=ttl_s, timer=clock, getsizeof=lambda entry: entry.size)
            if local_bytes
            else None
        )
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
        """Cached results for `keys`, from this process's memory or else Redis, and whether Redis was
        read, skipped (breaker open) or failed for the keys it was asked."""
        values = [self._recall(key) for key in keys]
        remote = [i for i, value in enumerate(values) if value is None]
        local_hits = len(keys) - len(remote)
        if local_hits:
            LOCAL_HITS.inc(local_hits)
        if not remote:
            return CacheRead(values, "read", local_hits)
        if not self.breaker.allow():
            redis_skipped("cache_read", breaker_open=True)
            return CacheRead(values, "bypass", local_hits)
        try:
            raw = await self._reads.submit(None, [keys[i] for i in remote])
        except (RedisError, OSError) as exc:
            self.breaker.record_failure()
            redis_skipped("cache_read", breaker_open=False)
            logger.warning("cache read bypassed: %s", exc)
            return CacheRead(values, "error", local_hits)
        self.breaker.record_success()
        for i, data in zip(remote, raw, strict=True):
            if data is not None and (value := self._load(data)) is not None:
                values[i] = value
                self._remember(keys[i], value, len(data))
        return CacheRead(values, "read", local_hits)

    async def set_many(self, entries: Mapping[str, M]) -> None:
        """Store results (successes only: callers never pass errors or degraded answers) with the TTL."""
        if not entries:
            return
        payloads = {key: value.model_dump_json() for key, value in entries.items()}
        for key, value in entries.items():
            self._remember(key, value, len(payloads[key]))
        if not self.breaker.allow():
            redis_skipped("cache_write", breaker_open=True)
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, payload in payloads.items():
                    pipe.set(key, payload, ex=self.ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self.breaker.record_failure()
            redis_skipped("cache_write", breaker_open=False)
            logger.warning("cache write skipped: %s", exc)
            return
        self.breaker.record_success()

    def _recall(self, key: str) -> M | None:
        entry = self._local.get(key) if self._local is not None else None
        return entry.value if entry is not None else None

    def _remember(self, key: str, value: M, json_size: int) -> None:
        size = json_size + LOCAL_ENTRY_OVERHEAD
        if self._local is not None and size <= self._local.maxsize:  # cachetools refuses larger ones
            self._local[key] = _Local(value, size)

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
