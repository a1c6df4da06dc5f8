"""Gateway: the public API. HTTP wiring only; the logic lives in predict, cache, auth, ratelimit,
singleflight, breaker, deadline and downstream."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from httpx_aiohttp import AiohttpTransport
from redis.asyncio import Redis

from services.common.app import create_service_app
from services.common.inference import parse_operating_point
from services.common.openapi import ok_response, problem_responses, upload_request_body
from services.common.problems import Problem
from services.common.release import ReleaseSummary
from services.common.request_id import current_request_id
from services.common.tracing import instrument_httpx, instrument_redis
from services.common.uploads import max_multipart_bytes, read_body, read_files
from services.gateway.auth import ApiKeys
from services.gateway.breaker import CircuitBreaker
from services.gateway.cache import ResultCache
from services.gateway.deadline import deadline
from services.gateway.downstream import Downstream
from services.gateway.metrics import AUTH_FAILURES
from services.gateway.predict import Outcome, Predictor
from services.gateway.ratelimit import RateLimiter
from services.gateway.schemas import PREDICTION_EXAMPLE, BatchResponse, ItemError, Prediction, PredictOptions
from services.gateway.settings import GatewaySettings
from services.gateway.singleflight import SingleFlight

RAW_IMAGE_TYPES = ("image/png", "image/jpeg", "image/tiff", "image/bmp")
API_KEY_HEADER = "X-API-Key"
MODELS_EXAMPLE: dict[str, Any] = {
    "release_id": "pcam-2024-06-01",
    "created_at": "2024-06-01T12:00:00Z",
    "research_use_only": True,
    "data": {"source": "pcam", "checksums": {"camelyonpatch_level_2_split_train_x.h5": "ab12..."}},
    "members": [
        {
            "name": "seresnet50",
            "architecture": "seresnet50",
            "version": 1,
            "sha256": "c0ffee" + "0" * 58,
            "temperature": 1.31,
            "weight": 1.0,
            "metrics": {"auroc": 0.95},
        }
    ],
    "ensemble_rule": "weighted_mean",
    "operating_points": {
        "balanced": {"threshold": 0.47, "sensitivity": 0.89, "specificity": 0.9, "criterion": "youden_j"}
    },
    "operating_point_aliases": {"conservative": "screening", "aggressive": "high_specificity"},
    "default_operating_point": "balanced",
}


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
        )
        # One breaker for both uses of Redis: if the cache cannot reach it, neither can the limiter.
        breaker = CircuitBreaker("redis", settings.redis_breaker_failures, settings.redis_breaker_reset_s)
        instrument_redis(redis, app.state.tracer_provider)  # both no-ops unless tracing is on
        async with httpx.AsyncClient(timeout=timeout, transport=transport) as http:
            instrument_httpx(http, app.state.tracer_provider)  # sends traceparent downstream
            app.state.cache = ResultCache(redis, settings.cache_ttl_s, breaker)
            app.state.downstream = Downstream(
                http,
                settings.preprocess_url,
                settings.ensemble_url,
                settings.release_refresh_s,
                settings.retry_after_s,
            )
            flights: SingleFlight[str, Outcome] = SingleFlight()
            app.state.predictor = Predictor(app.state.cache, app.state.downstream, flights)
            app.state.limiter = (
                RateLimiter(redis, settings.rate_limit_per_minute, breaker)
                if settings.rate_limit_per_minute
                else None
            )
            try:
                yield
            finally:
                await flights.drain()  # before the clients the computations use are closed
                await redis.aclose()

    app = create_service_app(
        "gateway",
        "PCam tumor detection API",
        "Calibrated tumor probabilities for 96x96 H&E patches (PatchCamelyon task: label 1 iff tumor "
        "lies in the center 32x32 region), with decisions at named operating points.\n\n"
        + (
            f"Authentication: an API key in the `{API_KEY_HEADER}` header or as `Authorization: Bearer "
            "<key>` (401 without one, 403 with an invalid one). "
            if keys.enabled
            else ""
        )
        + (
            f"Rate limit: {settings.rate_limit_per_minute} requests per minute per "
            f"{'API key' if keys.enabled else 'client address'} (429 with Retry-After). "
            if settings.rate_limit_per_minute
            else ""
        )
        + f"Each prediction request must finish within {settings.request_timeout_s:g} s (else 504). "
        "Errors are application/problem+json (RFC 9457).",
        lifespan,
        max_body_bytes=max_multipart_bytes(settings.max_images, settings.max_image_bytes),
    )

    # Dependencies are `async def` although they only read app state: FastAPI runs a plain `def`
    # dependency in its thread pool, a thread hop per dependency per request (docs/benchmarks.md).
    async def cache(request: Request) -> ResultCache:
        return request.app.state.cache

    async def downstream(request: Request) -> Downstream:
        return request.app.state.downstream

    async def predictor(request: Request) -> Predictor:
        return request.app.state.predictor

    async def limiter(request: Request) -> RateLimiter | None:
        return request.app.state.limiter

    Cache = Annotated[ResultCache, Depends(cache)]
    Services = Annotated[Downstream, Depends(downstream)]
    Predict = Annotated[Predictor, Depends(predictor)]
    Options = Annotated[PredictOptions, Query()]

    if keys.enabled:
        api_key_scheme = APIKeyHeader(
            name=API_KEY_HEADER, auto_error=False, scheme_name="ApiKey", description="An API key."
        )
        bearer_scheme = HTTPBearer(
            auto_error=False, scheme_name="Bearer", description="The same API key as a bearer token."
        )

        async def identify(
            request: Request,
            api_key: Annotated[str | None, Security(api_key_scheme)],
            bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
            limits: Annotated[RateLimiter | None, Depends(limiter)],
        ) -> str:
            try:
                return "key:" + keys.authenticate(api_key, bearer.credentials if bearer else None)
            except Problem as problem:
                AUTH_FAILURES.labels(problem.kind).inc()
                if limits is not None:  # failed attempts count too: guessing keys is rate limited
                    await limits.admit("unauthenticated:" + _address(request))
                raise

    else:

        async def identify(request: Request) -> str:
            # Without keys, clients are told apart by address (the proxy's, behind a proxy).
            return "ip:" + _address(request)

    async def guard(
        client: Annotated[str, Depends(identify)], limits: Annotated[RateLimiter | None, Depends(limiter)]
    ) -> None:
        """Authenticate, then count the request against its client's rate limit."""
        if limits is not None:
            await limits.admit(client)

    guarded = tuple(
        status
        for status, on in (
            (401, keys.enabled),
            (403, keys.enabled),
            (429, bool(settings.rate_limit_per_minute)),
        )
        if on
    )
    predict_problems = problem_responses(400, *guarded, 408, 413, 415, 422, 502, 503, 504)
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(guard)])

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Ready: Redis, preprocess and ensemble answer.",
        responses={
            200: {
                "description": "Preprocess and ensemble are ready (Redis is reported, not required).",
                "content": {
                    "application/json": {
                        "example": {"status": "ready", "redis": True, "preprocess": True, "ensemble": True}
                    }
                },
            },
            503: {
                "description": "A dependency on the model path is not ready.",
                "content": {
                    "application/json": {
                        "example": {
                            "status": "not ready",
                            "redis": True,
                            "preprocess": True,
                            "ensemble": False,
                        }
                    }
                },
            },
        },
    )
    async def readyz(results: Cache, services: Services) -> JSONResponse:
        states = {"redis": await results.ping(), **await services.ready()}
        # Redis is optional for correctness (cache misses), so only the model path gates readiness.
        ready = states["preprocess"] and states["ensemble"]
        return JSONResponse(
            {"status": "ready" if ready else "not ready", **states}, status_code=200 if ready else 503
        )

    @v1.get(
        "/models",
        tags=["models"],
        summary="The serving release: members, operating points, data.",
        responses={
            **ok_response("The serving release.", MODELS_EXAMPLE),
            **problem_responses(*guarded, 502, 503),
        },
    )
    async def models(services: Services) -> ReleaseSummary:
        return await services.release()

    @v1.post(
        "/predict",
        tags=["predict"],
        summary="Predict one patch: multipart field `file`, or the image as the raw body.",
        responses={**ok_response("The patch's result.", PREDICTION_EXAMPLE), **predict_problems},
        openapi_extra=upload_request_body("file", many=False, raw_media_types=RAW_IMAGE_TYPES),
    )
    async def predict(request: Request, predictions: Predict, options: Options) -> Prediction:
        point = parse_operating_point(options.operating_point)  # refused before any upload is read
        async with deadline(settings.request_timeout_s, settings.retry_after_s) as budget:
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            with budget.upload():
                if content_type in RAW_IMAGE_TYPES:
                    upload = await read_body(request, settings.max_image_bytes)
                else:
                    (upload,) = await read_files(request, "file", 1, settings.max_image_bytes)
            (outcome,), (hit,) = await predictions.predict(
                [upload], options.infer_options(point), read_cache=options.cache
            )
        if isinstance(outcome, Problem):
            raise outcome
        return Prediction(**outcome, cached=hit, request_id=current_request_id())

    @v1.post(
        "/predict/batch",
        tags=["predict"],
        summary="Predict 1..N patches (multipart field `files`); a bad image gets its own error entry.",
        responses={
            **ok_response(
                "One entry per file, in order: a result or that file's problem.",
                {
                    "results": [
                        PREDICTION_EXAMPLE,
                        {
                            "type": "https://pcam.example/problems/wrong-size",
                            "title": "Wrong image size",
                            "status": 422,
                            "detail": "Received 128x64; 96x96 is required.",
                        },
                    ],
                    "request_id": PREDICTION_EXAMPLE["request_id"],
                },
            ),
            **predict_problems,
        },
        openapi_extra=upload_request_body("files", many=True, max_items=settings.max_images),
    )
    async def predict_batch(request: Request, predictions: Predict, options: Options) -> BatchResponse:
        point = parse_operating_point(options.operating_point)
        async with deadline(settings.request_timeout_s, settings.retry_after_s) as budget:
            with budget.upload():
                uploads = await read_files(request, "files", settings.max_images, settings.max_image_bytes)
            if options.explain and len(uploads) > settings.max_explain_images:
                raise Problem(
                    422,
                    "explain-batch-size",
                    "Too many images to explain",
                    f"Received {len(uploads)} images with explain; at most {settings.max_explain_images}.",
                )
            outcomes, hits = await predictions.predict(
                uploads, options.infer_options(point), read_cache=options.cache
            )
        request_id = current_request_id()
        return BatchResponse(
            results=[_entry(outcome, hit, request_id) for outcome, hit in zip(outcomes, hits, strict=True)],
            request_id=request_id,
        )

    app.include_router(v1)
    return app


def _entry(outcome: Outcome, hit: bool, request_id: str) -> Prediction | ItemError:
    if isinstance(outcome, Problem):
        body = outcome.to_dict()
        return ItemError(type=body["type"], title=body["title"], status=body["status"], detail=body["detail"])
    return Prediction(**outcome, cached=hit, request_id=request_id)


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
