"""Preprocess settings (`PCAM_PREPROCESS_*`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common import ports
from services.common.settings import ReadsRelease, ServiceSettings, TakesUploads


class PreprocessSettings(ReadsRelease, TakesUploads, ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PCAM_PREPROCESS_", frozen=True)

    port: int = Field(ports.PREPROCESS, description="Port the server listens on.")
