"""Preprocess's dependencies: the objects its lifespan created, handed to routes by FastAPI."""

from typing import Annotated

from fastapi import Depends, Request

from services.common.release_watch import LastTwo, ReleaseWatcher
from services.preprocess.pipeline import Serving
from services.preprocess.settings import PreprocessSettings


# async: a plain `def` dependency would run in FastAPI's thread pool, a thread hop per request.
async def _settings(request: Request) -> PreprocessSettings:
    return request.app.state.settings


async def _releases(request: Request) -> LastTwo[Serving]:
    return request.app.state.releases


async def _watcher(request: Request) -> ReleaseWatcher:
    return request.app.state.watcher


Settings = Annotated[PreprocessSettings, Depends(_settings)]
Releases = Annotated[LastTwo[Serving], Depends(_releases)]
Watcher = Annotated[ReleaseWatcher, Depends(_watcher)]
