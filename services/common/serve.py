"""Running a service under uvicorn with its own settings (`python -m services.<name>`)."""

import uvicorn

from services.common.logging_setup import configure_logging
from services.common.settings import ServiceSettings


def serve(app_factory: str, settings: ServiceSettings, service: str | None = None) -> None:
    """Serve `module:create_app` on the settings' host and port until SIGINT/SIGTERM.

    Every log line, uvicorn's included, is JSON on stderr (services.common.logging_setup); `service`
    defaults to the package name in `app_factory` (`services.<service>.app:create_app`).
    """
    service = service or app_factory.split(":")[0].split(".")[-2]
    log_config = configure_logging(service, settings.log_level)  # before uvicorn, so startup lines are JSON
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
