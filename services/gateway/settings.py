"""Gateway settings (`PCAM_GATEWAY_*`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common import ports
from services.common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PCAM_GATEWAY_", frozen=True)

    port: int = ports.GATEWAY
    preprocess_url: str = f"http://127.0.0.1:{ports.PREPROCESS}"
    ensemble_url: str = f"http://127.0.0.1:{ports.ENSEMBLE}"
    redis_url: str = f"redis://127.0.0.1:{ports.REDIS}/0"
    cache_ttl_s: int = Field(24 * 3600, ge=1, description="Lifetime of a cached result.")
    redis_timeout_s: float = Field(0.25, gt=0, description="Redis calls slower than this count as misses.")
    downstream_timeout_s: float = Field(30.0, gt=0, description="Timeout of each preprocess/ensemble call.")
    release_refresh_s: float = Field(5.0, gt=0, description="How long the serving release id is trusted.")
    max_images: int = Field(256, ge=1, description="Images per batch request.")
    max_image_bytes: int = Field(1 << 20, ge=1024, description="Bytes per uploaded image.")
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent when a dependency is down.")
