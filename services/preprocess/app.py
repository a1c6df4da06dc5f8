"""Preprocess service: assembles settings, lifespan, middleware and routes; the work lives elsewhere."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from pcam_core.release import ReleaseManifest, load_release
from services.common.app import create_service_app
from services.common.release_watch import LastTwo, ReleaseWatcher, watching
from services.common.uploads import max_multipart_bytes
from services.preprocess.metrics import RELEASE
from services.preprocess.pipeline import prepare
from services.preprocess.routes import router
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
            settings.model_repository, release, take_up, settings.release_poll_s, service="preprocess"
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
        settings=settings,
    )
    app.include_router(router(settings))
    return app
