"""Ensemble service: HTTP wiring only; calibration and Triton calls live in their own modules."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import tritonclient.grpc.aio as grpcclient
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse

from services.common import wire
from services.common.app import create_service_app
from services.common.inference import InferResponse, parse_operating_point
from services.common.problems import Problem, ServiceUnavailable
from services.common.release import (
    DEFAULT_OPERATING_POINT,
    ReleaseManifest,
    ReleaseSummary,
    load_release,
    summarize,
)
from services.common.uploads import read_body
from services.ensemble.answer import answer
from services.ensemble.settings import EnsembleSettings
from services.ensemble.triton import ModelOutputError, TritonMembers, TritonUnavailable


def create_app(settings: EnsembleSettings | None = None) -> FastAPI:
    """Build the ensemble app; the Triton client is created once in the lifespan."""
    settings = settings or EnsembleSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.release = load_release(settings.model_repository)
        client = grpcclient.InferenceServerClient(settings.triton_grpc_url)
        app.state.triton = TritonMembers(client, settings.triton_timeout_s)
        try:
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

    def release(request: Request) -> ReleaseManifest:
        return request.app.state.release

    def triton(request: Request) -> TritonMembers:
        return request.app.state.triton

    Release = Annotated[ReleaseManifest, Depends(release)]
    Triton = Annotated[TritonMembers, Depends(triton)]

    @app.get("/readyz", tags=["operations"], summary="Ready: every member is ready on Triton.")
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
        openapi_extra={"requestBody": {"content": {wire.MEDIA_TYPE: {}}, "required": True}},
    )
    async def infer(
        request: Request,
        manifest: Release,
        members: Triton,
        operating_point: Annotated[str, Query()] = DEFAULT_OPERATING_POINT,
    ) -> InferResponse:
        point_name = parse_operating_point(operating_point)
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
        served_under = batch.meta.get("release")
        if served_under != manifest.release_id:
            # Normalized with another release's stain reference: mid-swap, the caller should retry.
            raise ServiceUnavailable(
                f"Batch prepared for release {served_under!r}; serving {manifest.release_id!r}.",
                retry_after_s=1,
            )
        try:
            logits = await members.logits(manifest.members, batch.images)
        except TritonUnavailable as exc:
            raise ServiceUnavailable(f"Model server unavailable: {exc}", settings.retry_after_s) from exc
        except ModelOutputError as exc:
            raise Problem(502, "bad-model-output", "Bad model output", str(exc)) from exc
        return answer(logits, manifest, point_name)

    return app
