"""Ensemble service: HTTP wiring only; calibration and Triton calls live in their own modules."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse

from services.common import wire
from services.common.app import create_service_app
from services.common.inference import InferOptions, InferResponse, parse_operating_point
from services.common.openapi import BINARY, problem_responses
from services.common.problems import Problem, ServiceUnavailable
from services.common.release import (
    ReleaseManifest,
    ReleaseSummary,
    load_release,
    summarize,
)
from services.common.release_watch import ReleaseWatcher, watching
from services.common.uploads import read_body
from services.ensemble import pipeline
from services.ensemble.releases import ReleaseRegistry
from services.ensemble.settings import EnsembleSettings
from services.ensemble.triton import TritonMembers, connect


def create_app(settings: EnsembleSettings | None = None) -> FastAPI:
    """Build the ensemble app; the Triton client is created once in the lifespan."""
    settings = settings or EnsembleSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        release = load_release(settings.model_repository)
        retry = settings.retry_policy()
        client = connect(settings.triton_grpc_url, retry)
        members = app.state.triton = TritonMembers(
            client, settings.triton_timeout_s, retry, settings.max_concurrent_chunks
        )

        async def members_ready(manifest: ReleaseManifest) -> bool:
            return all((await members.ready(manifest.members)).values())

        registry = app.state.releases = ReleaseRegistry(
            release, members_ready, settings.release_ready_timeout_s
        )
        watcher = app.state.watcher = ReleaseWatcher(
            settings.model_repository, release, registry.take_up, settings.release_poll_s
        )
        try:
            async with watching(watcher):
                yield
        finally:
            await client.close()

    app = create_service_app(
        "ensemble",
        "PCam ensemble service",
        "Runs every ensemble member on Triton, applies per-member temperatures, averages, rescales the "
        "mean by the ensemble temperature, and decides at the release's operating points. Internal: takes the binary `application/vnd.pcam.batch`.",
        lifespan,
        max_body_bytes=wire.max_frame_bytes(settings.max_images),
    )

    # async: a plain `def` dependency would run in FastAPI's thread pool, a thread hop per request.
    async def release(request: Request) -> ReleaseManifest:
        return request.app.state.releases.current

    async def triton(request: Request) -> TritonMembers:
        return request.app.state.triton

    Release = Annotated[ReleaseManifest, Depends(release)]
    Triton = Annotated[TritonMembers, Depends(triton)]

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Ready: every member is ready on Triton.",
        responses={503: {"description": "A member is not ready on Triton (the body says which)."}},
    )
    async def readyz(manifest: Release, members: Triton) -> JSONResponse:
        states = await members.ready(manifest.members)
        ready = all(states.values())
        body = {
            "status": "ready" if ready else "not ready",
            "release": manifest.release_id,
            "members": states,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/v1/release", tags=["release"], summary="The serving release.")
    async def get_release(manifest: Release) -> ReleaseSummary:
        return summarize(manifest)

    @app.post(
        "/v1/infer",
        tags=["inference"],
        summary="Calibrated ensemble predictions for a binary batch.",
        description="Every member gets one batch per request (split at its max batch size): the patches, "
        "their 8 dihedral views with `tta`, and with `explain` one copy per occluding window "
        f"({settings.occlusion_window} px, stride {settings.occlusion_stride}) filled with the patch's "
        f"mean colour (at most {settings.max_explain_images} patches). A member that fails after retries "
        "fails the request (503 + Retry-After) unless `min_members` allows a degraded answer.",
        openapi_extra={"requestBody": {"content": {wire.MEDIA_TYPE: {"schema": BINARY}}, "required": True}},
        responses=problem_responses(400, 413, 422, 502, 503),
    )
    async def infer(
        request: Request,
        manifest: Release,
        members: Triton,
        options: Annotated[InferOptions, Query()],
    ) -> InferResponse:
        point_name = parse_operating_point(options.operating_point)
        try:
            batch = wire.decode(await read_body(request, wire.max_frame_bytes(settings.max_images)))
        except wire.WireFormatError as exc:
            raise Problem(400, "malformed-batch", "Malformed batch", str(exc)) from exc
        if not 0 < len(batch.images) <= settings.max_images:
            raise Problem(
                422,
                "batch-size",
                "Invalid batch size",
                f"Received {len(batch.images)} patches; 1..{settings.max_images}.",
            )
        # The release whose stain reference normalized the batch: current, previous, or just rolled in.
        served_under = str(batch.meta.get("release", ""))
        found = await request.app.state.releases.resolve(served_under, request.app.state.watcher.check)
        if found is None:
            raise ServiceUnavailable(
                f"Batch prepared for release {served_under!r}; serving {manifest.release_id!r}.",
                retry_after_s=1,
            )
        manifest = found
        if options.explain and len(batch.images) > settings.max_explain_images:
            raise Problem(
                422,
                "explain-batch-size",
                "Too many patches to explain",
                f"Received {len(batch.images)} patches with explain; at most {settings.max_explain_images}.",
                max_explain_images=settings.max_explain_images,
            )
        try:
            return await pipeline.infer(
                members,
                manifest,
                batch.images,
                point_name,
                tta=options.tta,
                explain=settings.occlusion() if options.explain else None,
                min_members=settings.min_members,
            )
        except pipeline.NotEnoughMembers as exc:
            if exc.unavailable:
                raise ServiceUnavailable(f"Model server unavailable: {exc}", settings.retry_after_s) from exc
            # Not down: a member refused the call or answered outside the contract; a retry would not help.
            raise Problem(502, "model-error", "Model error", str(exc)) from exc

    return app
