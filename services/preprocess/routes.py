"""Preprocess's routes: readiness and the batch preprocessing of uploads."""

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from pcam_core import wire
from services.common.openapi import problem_responses, upload_request_body
from services.common.release_watch import LastTwo, ReleaseWatcher
from services.common.uploads import media_type, read_batch_frame, read_files, read_upload_frame
from services.preprocess.deps import Releases, Watcher
from services.preprocess.metrics import BATCH_LATENCY, record_batch
from services.preprocess.pipeline import Serving, preprocess_patches, preprocess_uploads
from services.preprocess.settings import PreprocessSettings


def router(settings: PreprocessSettings) -> APIRouter:
    """The routes, their descriptions quoting the limits these settings set."""
    routes = APIRouter()

    @routes.get("/readyz", tags=["operations"], summary="Ready: the stain reference is loaded.")
    async def readyz(releases: Releases) -> dict[str, str]:
        return {"status": "ready", "release": releases.current[0]}

    @routes.post(
        "/v1/preprocess",
        tags=["preprocess"],
        summary="Decode, validate and normalize 1..N patches (multipart field `files`, or the same images "
        f"in the `{wire.UPLOADS_MEDIA_TYPE}` frame); patches sent as pixels in the `{wire.MEDIA_TYPE}` "
        "frame are normalized only.",
        response_class=Response,
        responses={
            200: {"content": {wire.MEDIA_TYPE: {}}, "description": "The normalized batch."},
            **problem_responses(400, 413, 415, 422),
        },
        openapi_extra=upload_request_body(
            "files",
            many=True,
            max_items=settings.max_images,
            raw_media_types=(wire.UPLOADS_MEDIA_TYPE, wire.MEDIA_TYPE),
        ),
    )
    async def preprocess(
        request: Request,
        releases: Releases,
        watcher: Watcher,
        release: Annotated[
            str | None,
            Query(
                description="Normalize with this release's stain reference (the one the ensemble serves) "
                "if held; default and otherwise: the newest."
            ),
        ] = None,
    ) -> Response:
        kind = media_type(request)
        if kind == wire.MEDIA_TYPE:  # pixels (the tensor input): nothing to decode
            work, prepare = (await read_batch_frame(request, settings.max_images)).images, preprocess_patches
        elif kind == wire.UPLOADS_MEDIA_TYPE:  # the gateway's encoded uploads: no multipart to parse
            work = await read_upload_frame(request, "files", settings.max_images, settings.max_image_bytes)
            prepare = preprocess_uploads
        else:
            work = await read_files(request, "files", settings.max_images, settings.max_image_bytes)
            prepare = preprocess_uploads
        start = time.perf_counter()
        serving = await _serving(releases, watcher, release)  # once: a swap mid-request cannot mix releases
        # Decoding and Macenko are CPU-bound: keep the event loop free for other requests.
        batch = await asyncio.to_thread(prepare, work, serving)
        BATCH_LATENCY.observe(time.perf_counter() - start)
        record_batch(batch)
        return Response(wire.encode(batch), media_type=wire.MEDIA_TYPE)

    return routes


async def _serving(releases: LastTwo[Serving], watcher: ReleaseWatcher, release: str | None) -> Serving:
    """The asked-for release's normalizer if held (after one look for a newer release.json), else the newest."""
    if release is not None and releases.get(release) is None:
        await watcher.check()
    return (releases.get(release) if release else None) or releases.current[1]
