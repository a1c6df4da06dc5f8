"""Settings shared by every service; each service subclasses with its own env prefix."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pcam_core import limits

DEFAULT_MODEL_REPOSITORY = Path("model_repository")


class ServiceSettings(BaseSettings):
    """Fields every service has; `PCAM_<SERVICE>_<FIELD>` sets them."""

    # hide_input_in_errors: a setting may hold a secret (API key hashes, or a key pasted by mistake).
    model_config = SettingsConfigDict(
        env_prefix="PCAM_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    log_level: str = "info"
    graceful_shutdown_s: float = Field(
        20.0, gt=0, description="In-flight requests get this long after SIGTERM."
    )


class ReadsRelease(BaseSettings):
    """Fields of the services that read release.json (preprocess, ensemble): defined once, so they agree."""

    model_repository: Path = Field(DEFAULT_MODEL_REPOSITORY, description="Holds release.json.")
    release_poll_s: float = Field(
        limits.RELEASE_POLL_S, gt=0, description="How often release.json is checked for a new release."
    )


class TakesUploads(BaseSettings):
    """Fields of the services that take image uploads (gateway, preprocess): defined once, so they agree."""

    max_images: int = Field(limits.MAX_IMAGES_PER_REQUEST, ge=1, description="Images per request.")
    max_image_bytes: int = Field(limits.MAX_IMAGE_BYTES, ge=1024, description="Bytes per uploaded image.")
