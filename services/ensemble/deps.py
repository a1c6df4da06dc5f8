"""The ensemble's dependencies: the objects its lifespan created, handed to routes by FastAPI."""

from typing import Annotated

from fastapi import Depends, Request

from pcam_core.release import ReleaseManifest
from services.common.release_watch import ReleaseWatcher
from services.ensemble.releases import ReleaseRegistry
from services.ensemble.triton import TritonMembers


# async: a plain `def` dependency would run in FastAPI's thread pool, a thread hop per request.
async def _registry(request: Request) -> ReleaseRegistry:
    return request.app.state.releases


async def _watcher(request: Request) -> ReleaseWatcher:
    return request.app.state.watcher


async def _triton(request: Request) -> TritonMembers:
    return request.app.state.triton


async def _current(registry: Annotated[ReleaseRegistry, Depends(_registry)]) -> ReleaseManifest:
    return registry.current


Registry = Annotated[ReleaseRegistry, Depends(_registry)]
Watcher = Annotated[ReleaseWatcher, Depends(_watcher)]
Triton = Annotated[TritonMembers, Depends(_triton)]
CurrentRelease = Annotated[ReleaseManifest, Depends(_current)]
