"""Gateway settings (`PCAM_GATEWAY_*`)."""

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.common import ports
from services.common.settings import ExplainsImages, ServiceSettings, TakesUploads
from services.gateway.batching import DEFAULT_MAX_PENDING_PATCHES, Batching

DEFAULT_BATCHING = Batching()


class GatewaySettings(TakesUploads, ExplainsImages, ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PCAM_GATEWAY_", frozen=True)

    port: int = Field(ports.GATEWAY, description="Port the server listens on.")
    preprocess_url: str = Field(f"http://127.0.0.1:{ports.PREPROCESS}", description="Base URL of preprocess.")
    ensemble_url: str = Field(f"http://127.0.0.1:{ports.ENSEMBLE}", description="Base URL of the ensemble.")
    redis_url: str = Field(
        f"redis://127.0.0.1:{ports.REDIS}/0",
        description="redis:// or rediss:// (TLS); keep the password out of it: redis_password(_file).",
    )
    redis_password: SecretStr | None = Field(None, description="Redis AUTH password (e.g. from a Secret).")
    redis_password_file: Path | None = Field(
        None,
        description="A file holding the Redis AUTH password (a mounted secret); trailing newline ignored.",
    )
    cache_ttl_s: int = Field(24 * 3600, ge=1, description="Lifetime of a cached result.")
    cache_local_mb: float = Field(
        32,
        ge=0,
        description="Memory for the most recently used results kept in the gateway process itself, in "
        "front of Redis (0: off). A hit there skips Redis's round trip and survives a Redis outage; "
        "entries never change (the key binds release, options and upload), so none can be stale.",
    )
    redis_timeout_s: float = Field(0.25, gt=0, description="Redis calls slower than this count as misses.")
    redis_max_connections: int = Field(
        64,
        ge=1,
        description="Connections to Redis at most; a call finding them all busy (a slow Redis) fails at "
        "once as a miss instead of opening one more.",
    )
    redis_breaker_failures: int = Field(
        3, ge=1, description="After this many consecutive Redis failures, skip Redis (cache, rate limit)..."
    )
    redis_breaker_reset_s: float = Field(10.0, gt=0, description="...for this long, then try it again.")
    downstream_timeout_s: float = Field(30.0, gt=0, description="Timeout of each preprocess/ensemble call.")
    request_timeout_s: float = Field(
        60.0, gt=0, description="Whole-request deadline of /v1/predict*: exceeding it answers 504."
    )
    release_refresh_s: float = Field(5.0, gt=0, description="How long the serving release id is trusted.")
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent when a dependency is down.")
    api_key_hashes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="API keys as `name:sha256hex` entries (a JSON list or comma-separated); "
        "none here and no api_key_file: authentication is off.",
    )
    api_key_file: Path | None = Field(
        None, description="A file with one `name:sha256hex` per line (# comments allowed)."
    )
    rate_limit_per_minute: int = Field(
        1200, ge=0, description="Requests per minute per API key (per client IP without keys); 0: off."
    )
    max_in_flight_requests: int = Field(
        256,
        ge=1,
        description="POST requests handled at once (cache hits included: they cost little); one more is "
        "answered at once with 503 overloaded and Retry-After.",
    )
    max_pending_patches: int = Field(
        DEFAULT_MAX_PENDING_PATCHES,
        ge=1,
        description="Uncached patches queued for or inside downstream batches. A request whose uncached "
        "patches would pass it is answered at once with 503 overloaded and Retry-After (cache hits never "
        "count; a request larger than the limit runs when nothing else is pending). Size it as the "
        "downstream's patches per second times the queueing delay you accept.",
    )
    batch_max_size: int = Field(
        DEFAULT_BATCHING.max_size,
        ge=1,
        description="Most uncached patches per batch sent to preprocess and the ensemble (max_images "
        "if that is lower); concurrent requests' patches with the same options share batches.",
    )
    batch_max_in_flight: int = Field(
        DEFAULT_BATCHING.max_in_flight,
        ge=1,
        description="Batches downstream at once; while that many are out, patches queue.",
    )
    batch_max_wait_s: float = Field(
        DEFAULT_BATCHING.max_wait_s,
        ge=0,
        description="Longest a queued patch waits for the downstream to be free before its batch goes "
        "anyway. A request on an idle gateway never waits.",
    )

    @model_validator(mode="after")
    def _one_password_source(self) -> "GatewaySettings":
        if self.redis_password is not None and self.redis_password_file is not None:
            raise ValueError("set redis_password or redis_password_file, not both")
        return self

    def batching(self) -> Batching:
        """The batching policy of the gateway's predictor; a batch is one preprocess call, so it holds
        at most max_images patches."""
        return Batching(
            min(self.batch_max_size, self.max_images),
            self.batch_max_in_flight,
            self.batch_max_wait_s,
            self.max_explain_images,
        )

    def redis_auth_password(self) -> str | None:
        """The Redis AUTH password from the environment or its file; None: no AUTH."""
        if self.redis_password_file is not None:
            return self.redis_password_file.read_text().rstrip("\r\n")
        return self.redis_password.get_secret_value() if self.redis_password else None

    @field_validator("api_key_hashes", mode="before")
    @classmethod
    def _split_entries(cls, value: Any) -> Any:
        """Accept a JSON list or a comma-separated string (easier to set from a shell)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [entry.strip() for entry in text.split(",") if entry.strip()]
        return value
