"""Gateway: the public API. Assembles settings, clients, middleware and routes; the logic lives in
predict, cache, auth, ratelimit, singleflight, breaker, deadline and downstream."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from httpx_aiohttp import AiohttpTransport
from redis.asyncio import Redis

from pcam_core.schemas import PatchResult
from services.common.admission import Admission
from services.common.app import create_service_app
from services.common.tracing import instrument_httpx, instrument_redis
from services.common.uploads import max_multipart_bytes
from services.gateway import routes_problems, routes_v2
from services.gateway.auth import ApiKeys
from services.gateway.breaker import CircuitBreaker
from services.gateway.cache import ResultCache
from services.gateway.deps import API_KEY_HEADER
from services.gateway.downstream import Downstream
from services.gateway.predict import Predictor
from services.gateway.ratelimit import RateLimiter, RateLimitFieldsMiddleware
from services.gateway.routes import routers
from services.gateway.settings import GatewaySettings


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Build the gateway; the httpx and Redis clients are created once in the lifespan."""
    settings = settings or GatewaySettings()
    keys = ApiKeys.load(settings.api_key_hashes, settings.api_key_file)  # a bad entry fails startup
    redis_password = settings.redis_auth_password()  # an unreadable password file fails startup too

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout = httpx.Timeout(settings.downstream_timeout_s)
        # httpx's API over aiohttp's connection pool: httpcore's pool scans every connection (with a
        # poll syscall each) on every request, 2.2 ms of CPU per request at 32 concurrent connections
        # on this project's 2-core machine against 0.1 ms for aiohttp (docs/benchmarks.md).
        transport = AiohttpTransport(limits=httpx.Limits(max_connections=200, keepalive_expiry=30))
        # from_url: connections retry nothing (the Redis() constructor would retry 10 times with
        # backoff); a failure is a cache miss at once, and the breaker handles a lasting outage.
        redis = Redis.from_url(
            settings.redis_url,
            password=redis_password,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
            max_connections=settings.redis_max_connections,
        )
        # One breaker for both uses of Redis: if the cache cannot reach it, neither can the limiter.
        breaker = CircuitBreaker("redis", settings.redis_breaker_failures, settings.redis_breaker_reset_s)
        instrument_redis(redis, app.state.tracer_provider)  # both no-ops unless tracing is on
        async with httpx.AsyncClient(timeout=timeout, transport=transport) as http:
            instrument_httpx(http, app.state.tracer_provider)  # sends traceparent downstream
            app.state.cache = ResultCache(
                redis, settings.cache_ttl_s, breaker, PatchResult, int(settings.cache_local_mb * 2**20)
            )
            app.state.downstream = Downstream(
                http,
                settings.preprocess_url,
                settings.ensemble_url,
                settings.release_refresh_s,
                settings.retry_after_s,
            )
            pending = Admission(
                "gateway", "patches", settings.max_pending_patches, settings.overload_retry_after_s
            )
            predictor = Predictor(app.state.cache, app.state.downstream, settings.batching(), pending)
            app.state.predictor = predictor
            app.state.limiter = (
                RateLimiter(redis, settings.rate_limit_per_minute, breaker)
                if settings.rate_limit_per_minute
                else None
            )
            try:
                yield
            finally:
                await predictor.drain()  # before the clients the computations use are closed
                await redis.aclose()

    app = create_service_app(
        "gateway",
        "PCam tumor detection API",
        api_description(settings, keys.enabled),
        lifespan,
        max_body_bytes=max_multipart_bytes(settings.max_images, settings.max_image_bytes),
        settings=settings,
    )
    for routes in (
        *routers(settings, keys),
        routes_v2.router(settings, keys),
        routes_problems.router(settings),
    ):
        app.include_router(routes)
    if settings.rate_limit_per_minute:  # no limit, no fields: no layer on the hot path
        app.add_middleware(RateLimitFieldsMiddleware)
    return app


def api_description(settings: GatewaySettings, keys_enabled: bool) -> str:
    """The API description users read: the task, then authentication, limits and errors as configured."""
    return (
        "Calibrated tumor probabilities for 96x96 H&E patches (PatchCamelyon task: label 1 iff tumor "
        "lies in the center 32x32 region), with decisions at named operating points.\n\n"
        + (
            f"Authentication: an API key in the `{API_KEY_HEADER}` header or as `Authorization: Bearer "
            "<key>` (401 without one, 403 with an invalid one). "
            if keys_enabled
            else ""
        )
        + (
            f"Rate limit: {settings.rate_limit_per_minute} requests per minute per "
            f"{'API key' if keys_enabled else 'client address'} (429 with Retry-After; each counted answer carries the IETF `RateLimit` and `RateLimit-Policy` fields). "
            if settings.rate_limit_per_minute
            else ""
        )
        + f"Each prediction request must finish within {settings.request_timeout_s:g} s (else 504). "
        "Errors are application/problem+json (RFC 9457)."
    )
