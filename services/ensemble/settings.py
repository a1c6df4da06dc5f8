"""Ensemble settings (`PCAM_ENSEMBLE_*`)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common import ports
from services.common.settings import DEFAULT_MODEL_REPOSITORY, ServiceSettings


class EnsembleSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PCAM_ENSEMBLE_", frozen=True)

    port: int = ports.ENSEMBLE
    model_repository: Path = Field(DEFAULT_MODEL_REPOSITORY, description="Holds release.json.")
    triton_grpc_url: str = f"127.0.0.1:{ports.TRITON_GRPC}"
    triton_timeout_s: float = Field(10.0, gt=0, description="Deadline of each Triton call.")
    max_images: int = Field(1024, ge=1, description="Patches per request.")
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent when Triton is unavailable.")
