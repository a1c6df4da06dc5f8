"""Running a service under uvicorn with its own settings (`python -m services.<name>`)."""

import signal
from types import FrameType
from typing import NoReturn

import uvicorn

from services.common.logging_setup import configure_logging
from services.common.settings import ServiceSettings


def _exit_0(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(0)


def serve(app_factory: str, settings: ServiceSettings, service: str | None = None) -> None:
    """Serve `module:create_app` on the settings' host and port until SIGINT/SIGTERM.

    Every log line, uvicorn's included, is JSON on stderr (services.common.logging_setup); `service`
    defaults to the package name in `app_factory` (`services.<service>.app:create_app`).

    SIGTERM (docker stop, Kubernetes) drains in-flight requests for `graceful_shutdown_s`, then the
    process exits 0. uvicorn re-raises the signal after its shutdown, to the handler installed before
    it started: without this one, the default handler would end a clean shutdown with status 143, the
    same as a process that never drained.
    """
    service = service or app_factory.split(":")[0].split(".")[-2]
    log_config = configure_logging(service, settings.log_level)  # before uvicorn, so startup lines are JSON
    signal.signal(signal.SIGTERM, _exit_0)
    uvicorn.run(
        app_factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=log_config,
        access_log=False,  # services.common.logging_setup.AccessLogMiddleware logs requests, with their id
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
    )
