"""Preprocess service: HTTP wiring only; the work lives in decode, stain and pipeline."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Query, Request, Response

from services.common import wire
from services.common.app import create_service_app
from services.common.openapi import problem_responses, upload_request_body
from services.common.release import ReleaseManifest, load_release
from services.common.release_watch import LastTwo, ReleaseWatcher, watching
from services.common.uploads import max_multipart_bytes, read_files
from services.preprocess.metrics import BATCH_LATENCY, RELEASE, record_batch
from services.preprocess.pipeline import Serving, prepare, preprocess_uploads
from services.preprocess.settings import PreprocessSettings


def create_app(settings: PreprocessSettings | None = None) -> FastAPI:
    """Build the preprocess app; a new release.json is picked up while it runs (hot reload)."""
    settings = settings or PreprocessSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        release = load_release(settings.model_repository)
        releases = app.state.releases = LastTwo(release.release_id, await prepare(release))
        RELEASE.set(release.release_id)

        async def take_up(new: ReleaseManifest) -> None:
            releases.push(new.release_id, await prepare(new))
            RELEASE.set(new.release_id)

        watcher = app.state.watcher = ReleaseWatcher(
            settings.model_repository, release, take_up, settings.release_poll_s
        )
        async with watching(watcher):
            yield

    app = create_service_app(
        "preprocess",
        "PCam preprocess service",
        "Decodes and validates 96x96 H&E patches and Macenko-normalizes them to the release's stain "
        "reference. Internal: returns the batch in the binary `application/vnd.pcam.batch` format.",
        lifespan,
        max_body_bytes=max_multipart_bytes(settings.max_images, settings.max_image_bytes),
    )

    @app.get("/readyz", tags=["operations"], summary="Ready: the stain reference is loaded.")
    async def readyz(request: Request) -> dict[str, str]:
        return {"status": "ready", "release": request.app.state.releases.current[0]}

    @app.post(
        "/v1/preprocess",
        tags=["preprocess"],
        summary="Decode, validate and normalize 1..N patches (multipart field `files`).",
        response_class=Response,
        responses={
            200: {"content": {wire.MEDIA_TYPE: {}}, "description": "The normalized batch."},
            **problem_responses(400, 413, 415, 422),
        },
        openapi_extra=upload_request_body("files", many=True, max_items=settings.max_images),
    )
    async def preprocess(
        request: Request,
        release: Annotated[
            str | None,
            Query(
                description="Normalize with this release's stain reference (the one the ensemble serves) "
                "if held; default and otherwise: the newest."
            ),
        ] = None,
    ) -> Response:
        uploads = await read_files(request, "files", settings.max_images, settings.max_image_bytes)
        start = time.perf_counter()
        serving = await _serving(request, release)  # read once: a swap mid-request cannot mix releases
        # Decoding and Macenko are CPU-bound: keep the event loop free for other requests.
        batch = await asyncio.to_thread(preprocess_uploads, uploads, serving.normalizer, serving.release_id)
        BATCH_LATENCY.observe(time.perf_counter() - start)
        record_batch(batch)
        return Response(wire.encode(batch), media_type=wire.MEDIA_TYPE)

    return app


async def _serving(request: Request, release: str | None) -> Serving:
    """The asked-for release's normalizer if held (after one look for a newer release.json), else the newest."""
    releases: LastTwo[Serving] = request.app.state.releases
    if release is not None and releases.get(release) is None:
        await request.app.state.watcher.check()
    return (releases.get(release) if release else None) or releases.current[1]
