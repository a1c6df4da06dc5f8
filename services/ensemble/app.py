"""Ensemble service: assembles settings, lifespan, middleware and routes; the work lives elsewhere."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from pcam_core import wire
from pcam_core.contract import PATCH_BYTES
from pcam_core.release import ReleaseManifest, load_release
from services.common.app import create_service_app
from services.common.release_watch import ReleaseWatcher, watching
from services.ensemble.releases import ReleaseRegistry
from services.ensemble.routes import router
from services.ensemble.settings import EnsembleSettings
from services.ensemble.shm import SharedMemorySlots
from services.ensemble.triton import TritonMembers, connect


def create_app(settings: EnsembleSettings | None = None) -> FastAPI:
    """Build the ensemble app; the Triton client is created once in the lifespan."""
    settings = settings or EnsembleSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        release = load_release(settings.model_repository)
        retry = settings.retry_policy()
        client = connect(settings.triton_grpc_url, retry)
        slots = (
            SharedMemorySlots(
                settings.triton_shared_memory_slots, settings.triton_shared_memory_slot_patches * PATCH_BYTES
            )
            if settings.triton_shared_memory
            else None
        )
        members = app.state.triton = TritonMembers(
            client, settings.triton_timeout_s, retry, settings.max_concurrent_chunks, slots
        )

        async def members_ready(manifest: ReleaseManifest) -> bool:
            return all((await members.ready(manifest.members)).values())

        registry = app.state.releases = ReleaseRegistry(
            release, members_ready, settings.release_ready_timeout_s
        )
        watcher = app.state.watcher = ReleaseWatcher(
            settings.model_repository, release, registry.take_up, settings.release_poll_s, service="ensemble"
        )
        try:
            async with watching(watcher):
                yield
        finally:
            if slots is not None:
                await slots.close(client)
            await client.close()

    app = create_service_app(
        "ensemble",
        "PCam ensemble service",
        "Runs every ensemble member on Triton, applies per-member temperatures, averages, rescales the "
        "mean by the ensemble temperature, and decides at the release's operating points. Internal: "
        "takes the binary `application/vnd.pcam.batch`.",
        lifespan,
        max_body_bytes=wire.max_frame_bytes(settings.max_images),
        settings=settings,
    )
    app.include_router(router(settings))
    return app
