"""Preprocess service: HTTP wiring only; the work lives in decode, stain and pipeline."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, Request, Response

from services.common import wire
from services.common.app import create_service_app
from services.common.contract import INPUT_SHAPE
from services.common.problems import problem_kind
from services.common.release import load_release
from services.common.uploads import max_multipart_bytes, read_files
from services.preprocess.metrics import BATCH_LATENCY, NORMALIZATIONS, REJECTED_IMAGES
from services.preprocess.pipeline import preprocess_uploads
from services.preprocess.settings import PreprocessSettings
from services.preprocess.stain import MacenkoNormalizer


def create_app(settings: PreprocessSettings | None = None) -> FastAPI:
    """Build the preprocess app; the release manifest is read once at startup."""
    settings = settings or PreprocessSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        release = load_release(settings.model_repository)
        app.state.release_id = release.release_id
        app.state.normalizer = MacenkoNormalizer(release.stain_reference)
        # Compile (or load from numba's cache) the kernels now, not on the first request.
        await asyncio.to_thread(app.state.normalizer.normalize, np.zeros((1, *INPUT_SHAPE), np.uint8))
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
        return {"status": "ready", "release": request.app.state.release_id}

    @app.post(
        "/v1/preprocess",
        tags=["preprocess"],
        summary="Decode, validate and normalize 1..N patches (multipart field `files`).",
        response_class=Response,
        responses={200: {"content": {wire.MEDIA_TYPE: {}}, "description": "The normalized batch."}},
    )
    async def preprocess(request: Request) -> Response:
        uploads = await read_files(request, "files", settings.max_images, settings.max_image_bytes)
        start = time.perf_counter()
        # Decoding and Macenko are CPU-bound: keep the event loop free for other requests.
        batch = await asyncio.to_thread(
            preprocess_uploads, uploads, request.app.state.normalizer, request.app.state.release_id
        )
        BATCH_LATENCY.observe(time.perf_counter() - start)
        _count(batch)
        return Response(wire.encode(batch), media_type=wire.MEDIA_TYPE)

    return app


def _count(batch: wire.Batch) -> None:
    for item in batch.items:
        if not item["ok"]:
            REJECTED_IMAGES.labels(problem_kind(item["error"]["type"])).inc()
        elif item["stain_normalized"]:
            NORMALIZATIONS.labels("applied", "").inc()
        else:
            NORMALIZATIONS.labels("skipped", item["stain_skip_reason"]).inc()
