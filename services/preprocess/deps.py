"""Preprocess's dependencies: the objects its lifespan created, handed to routes by FastAPI."""

from typing import Annotated

from fastapi import Depends, Request

from services.common.release_watch import LastTwo, ReleaseWatcher
from services.preprocess.pipeline import Serving


# async: a plain `def` dependency would run in FastAPI's thread pool, a thread hop per request.
async def _releases(request: Request) -> LastTwo[Serving]:
    return request.app.state.releases


async def _watcher(request: Request) -> ReleaseWatcher:
    return request.app.state.watcher


Releases = Annotated[LastTwo[Serving], Depends(_releases)]
Watcher = Annotated[ReleaseWatcher, Depends(_watcher)]
