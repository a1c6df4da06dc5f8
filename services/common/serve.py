"""Running a service under uvicorn with its own settings (`python -m services.<name>`)."""

import uvicorn

from services.common.settings import ServiceSettings


def serve(app_factory: str, settings: ServiceSettings) -> None:
    """Serve `module:create_app` on the settings' host and port until SIGINT/SIGTERM."""
    uvicorn.run(
        app_factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
    )
