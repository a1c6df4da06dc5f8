"""Per-client rate limit: a fixed one-minute window counted in Redis, shared by every gateway process.

Every counted answer says where its client stands in the IETF RateLimit fields
(draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy: "per-client";q=<limit>;w=60` and
`RateLimit: "per-client";r=<remaining>;t=<seconds to the window's end>`.
"""

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import Message, Receive, Scope, Send

from pcam_core.errors import RateLimited
from services.common.asgi import HttpMiddleware
from services.gateway.breaker import CircuitBreaker
from services.gateway.metrics import RATE_LIMITED, redis_skipped

logger = logging.getLogger(__name__)
KEY_PREFIX = "pcam:ratelimit:v1"
WINDOW_S = 60
POLICY = "per-client"
"""The policy's name in the RateLimit fields: one quota per client (API key, or address without keys)."""
STATE_KEY = "rate_limit"
"""Where the guard leaves a request's Verdict (request.state) for RateLimitFieldsMiddleware."""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0
    """Seconds until the window resets (only when refused)."""
    counted: bool = True
    """False when Redis could not be asked and the request was let through (fail open)."""
    limit: int = 0
    remaining: int = 0
    """Requests left in the window after this one."""
    reset_s: int = 0
    """Seconds until the window ends."""
    window_s: int = WINDOW_S

    def fields(self) -> list[tuple[bytes, bytes]]:
        """The RateLimit and RateLimit-Policy header fields of a counted request (none if uncounted)."""
        if not self.counted:
            return []
        policy = f'"{POLICY}";q={self.limit};w={self.window_s}'
        state = f'"{POLICY}";r={self.remaining};t={self.reset_s}'
        return [(b"ratelimit-policy", policy.encode()), (b"ratelimit", state.encode())]


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
        reset = max(1, math.ceil((window + 1) * self.window_s - now))
        allowed = int(count) <= self.limit
        return Verdict(
            allowed=allowed,
            retry_after_s=0 if allowed else reset,
            limit=self.limit,
            remaining=max(0, self.limit - int(count)),
            reset_s=reset,
            window_s=self.window_s,
        )

    async def admit(self, client: str, state: Any | None = None) -> Verdict:
        """Count one request of `client` (the verdict left on `state`, a request's state, for the
        RateLimit fields); RateLimited (with the wait) when over the limit."""
        verdict = await self.hit(client)
        if state is not None:
            setattr(state, STATE_KEY, verdict)
        if not verdict.allowed:
            RATE_LIMITED.inc()
            raise RateLimited(
                f"At most {self.limit} requests per minute; retry in {verdict.retry_after_s} s.",
                retry_after_s=verdict.retry_after_s,
            )
        return verdict


class RateLimitFieldsMiddleware(HttpMiddleware):
    """Adds the RateLimit fields of the request's verdict (left by the guard) to its answer, whatever
    the route returns: routes answer with Response objects, which a dependency's headers never reach."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_fields(message: Message) -> None:
            if message["type"] == "http.response.start":
                verdict = scope.get("state", {}).get(STATE_KEY)
                if verdict is not None:
                    message["headers"] = [*message.get("headers", ()), *verdict.fields()]
            await send(message)

        await self.app(scope, receive, send_with_fields)
