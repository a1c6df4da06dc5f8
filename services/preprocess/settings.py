"""Preprocess settings (`PCAM_PREPROCESS_*`)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common import ports
from services.common.settings import DEFAULT_MODEL_REPOSITORY, ServiceSettings


class PreprocessSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PCAM_PREPROCESS_", frozen=True)

    port: int = ports.PREPROCESS
    model_repository: Path = Field(DEFAULT_MODEL_REPOSITORY, description="Holds release.json.")
    max_images: int = Field(256, ge=1, description="Images per request.")
    max_image_bytes: int = Field(1 << 20, ge=1024, description="Bytes per uploaded image.")
    release_poll_s: float = Field(
        2.0, gt=0, description="How often release.json is checked for a new release."
    )
