"""Gateway: the public API. HTTP wiring only; orchestration lives in predict, cache, downstream."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from redis.asyncio import Redis

from services.common.app import create_service_app
from services.common.inference import parse_operating_point
from services.common.problems import Problem
from services.common.release import (
    DEFAULT_OPERATING_POINT,
    OPERATING_POINT_ALIASES,
    OPERATING_POINTS,
    ReleaseSummary,
)
from services.common.request_id import current_request_id
from services.common.uploads import max_multipart_bytes, read_body, read_files
from services.gateway.cache import ResultCache
from services.gateway.downstream import Downstream
from services.gateway.predict import Outcome, predict_uploads
from services.gateway.schemas import BatchResponse, ItemError, Prediction, upload_request_body
from services.gateway.settings import GatewaySettings

RAW_IMAGE_TYPES = ("image/png", "image/jpeg", "image/tiff", "image/bmp")
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"content": {"application/problem+json": {}}, "description": description}
    for status, description in (
        (413, "Upload too large."),
        (415, "Not a supported image."),
        (422, "Wrong size, mode or options."),
        (503, "A dependency is down; retry after Retry-After seconds."),
    )
}


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Build the gateway; the httpx and Redis clients are created once in the lifespan."""
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout = httpx.Timeout(settings.downstream_timeout_s)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
            app.state.cache = ResultCache(redis, settings.cache_ttl_s)
            app.state.downstream = Downstream(
                http,
                settings.preprocess_url,
                settings.ensemble_url,
                settings.release_refresh_s,
                settings.retry_after_s,
            )
            try:
                yield
            finally:
                await redis.aclose()

    app = create_service_app(
        "gateway",
        "PCam tumor detection API",
        "Calibrated tumor probabilities for 96x96 H&E patches (PatchCamelyon task: label 1 iff tumor "
        "lies in the center 32x32 region), with decisions at named operating points.",
        lifespan,
        max_body_bytes=max_multipart_bytes(settings.max_images, settings.max_image_bytes),
    )

    def cache(request: Request) -> ResultCache:
        return request.app.state.cache

    def downstream(request: Request) -> Downstream:
        return request.app.state.downstream

    Cache = Annotated[ResultCache, Depends(cache)]
    Services = Annotated[Downstream, Depends(downstream)]
    OperatingPoint = Annotated[
        str,
        Query(
            description=f"One of {', '.join(OPERATING_POINTS)} (aliases: "
            f"{', '.join(f'{a}={c}' for a, c in OPERATING_POINT_ALIASES.items())}).",
        ),
    ]

    @app.get("/readyz", tags=["operations"], summary="Ready: Redis, preprocess and ensemble answer.")
    async def readyz(results: Cache, services: Services) -> JSONResponse:
        states = {"redis": await results.ping(), **await services.ready()}
        # Redis is optional for correctness (cache misses), so only the model path gates readiness.
        ready = states["preprocess"] and states["ensemble"]
        return JSONResponse(
            {"status": "ready" if ready else "not ready", **states}, status_code=200 if ready else 503
        )

    @app.get("/v1/models", tags=["models"], summary="The serving release: members, operating points, data.")
    async def models(services: Services) -> ReleaseSummary:
        return await services.release()

    @app.post(
        "/v1/predict",
        tags=["predict"],
        summary="Predict one patch: multipart field `file`, or the image as the raw body.",
        responses=PROBLEM_RESPONSES,
        openapi_extra=upload_request_body("file", many=False, raw_media_types=RAW_IMAGE_TYPES),
    )
    async def predict(
        request: Request,
        results: Cache,
        services: Services,
        operating_point: OperatingPoint = DEFAULT_OPERATING_POINT,
    ) -> Prediction:
        point = parse_operating_point(operating_point)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in RAW_IMAGE_TYPES:
            upload = await read_body(request, settings.max_image_bytes)
        else:
            (upload,) = await read_files(request, "file", 1, settings.max_image_bytes)
        (outcome,), (hit,) = await predict_uploads([upload], point, results, services)
        if isinstance(outcome, Problem):
            raise outcome
        return Prediction(**outcome, cached=hit, request_id=current_request_id())

    @app.post(
        "/v1/predict/batch",
        tags=["predict"],
        summary="Predict 1..N patches (multipart field `files`); a bad image gets its own error entry.",
        responses=PROBLEM_RESPONSES,
        openapi_extra=upload_request_body("files", many=True),
    )
    async def predict_batch(
        request: Request,
        results: Cache,
        services: Services,
        operating_point: OperatingPoint = DEFAULT_OPERATING_POINT,
    ) -> BatchResponse:
        point = parse_operating_point(operating_point)
        uploads = await read_files(request, "files", settings.max_images, settings.max_image_bytes)
        outcomes, hits = await predict_uploads(uploads, point, results, services)
        request_id = current_request_id()
        return BatchResponse(
            results=[_entry(outcome, hit, request_id) for outcome, hit in zip(outcomes, hits, strict=True)],
            request_id=request_id,
        )

    return app


def _entry(outcome: Outcome, hit: bool, request_id: str) -> Prediction | ItemError:
    if isinstance(outcome, Problem):
        body = outcome.to_dict()
        return ItemError(type=body["type"], title=body["title"], status=body["status"], detail=body["detail"])
    return Prediction(**outcome, cached=hit, request_id=request_id)
