"""Per-client rate limit: a fixed one-minute window counted in Redis, shared by every gateway process."""

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from pcam_core.errors import RateLimited
from services.gateway.breaker import CircuitBreaker
from services.gateway.metrics import RATE_LIMITED, redis_skipped

logger = logging.getLogger(__name__)
KEY_PREFIX = "pcam:ratelimit:v1"
WINDOW_S = 60


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0
    """Seconds until the window resets (only when refused)."""
    counted: bool = True
    """False when Redis could not be asked and the request was let through (fail open)."""


class RateLimiter:
    """At most `limit` requests per client per window; a Redis outage lets requests through."""

    def __init__(
        self,
        redis: Redis,
        limit: int,
        breaker: CircuitBreaker,
        window_s: int = WINDOW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis, self.limit, self.breaker, self.window_s = redis, limit, breaker, window_s
        self._clock = clock  # wall clock: every gateway sharing Redis must agree on window boundaries

    async def hit(self, client: str) -> Verdict:
        """Count one request of `client` and say whether it is within the limit."""
        now = self._clock()
        window = int(now // self.window_s)
        if not self.breaker.allow():
            redis_skipped("rate_limit", breaker_open=True)
            return Verdict(allowed=True, counted=False)
        key = f"{KEY_PREFIX}:{client}:{window}"
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                # Twice the window: the key outlives its window even with some clock skew between gateways.
                pipe.expire(key, 2 * self.window_s)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            self.breaker.record_failure()
            redis_skipped("rate_limit", breaker_open=False)
            logger.warning("rate limit not enforced (Redis unavailable: fail open): %s", exc)
            return Verdict(allowed=True, counted=False)
        self.breaker.record_success()
        if int(count) <= self.limit:
            return Verdict(allowed=True)
        retry_after = max(1, math.ceil((window + 1) * self.window_s - now))
        return Verdict(allowed=False, retry_after_s=retry_after)

    async def admit(self, client: str) -> None:
        """Count one request of `client`; RateLimited (with the wait) when over the limit."""
        verdict = await self.hit(client)
        if not verdict.allowed:
            RATE_LIMITED.inc()
            raise RateLimited(
                f"At most {self.limit} requests per minute; retry in {verdict.retry_after_s} s.",
                retry_after_s=verdict.retry_after_s,
            )
