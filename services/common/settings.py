"""Settings shared by every service; each service subclasses with its own env prefix.

Fields several services must agree on (the upload limits, the model repository and its polling) are
declared once, in an `AgreedSettings` mixin, and one variable `PCAM_<FIELD>` sets them in every service
that has them; a service's own `PCAM_<SERVICE>_<FIELD>` still wins over it.
"""

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from pcam_core import limits
from pcam_core.problems import PROBLEM_TYPE_BASE

DEFAULT_MODEL_REPOSITORY = Path("model_repository")
AGREED_ENV_PREFIX = "PCAM_"


class AgreedSettings(BaseSettings):
    """Base of a mixin whose fields several services must agree on (set together by `PCAM_<FIELD>`)."""


class NamesProblems(AgreedSettings):
    """Where problem `type` URIs point: one base for every service (`PCAM_PROBLEM_TYPE_BASE`), since the
    gateway passes its dependencies' problems on."""

    problem_type_base: str = Field(
        PROBLEM_TYPE_BASE,
        pattern=r"^(/|https?://[^\s/]+/)(\S*/)?$",
        description="Prefix of problem type URIs, ending in '/': the default '/problems/' resolves against "
        "the API's address, where the gateway serves each kind's page; or an absolute URL serving the "
        "same pages (docs, a proxy).",
    )


class ServiceSettings(NamesProblems):
    """Fields every service has; `PCAM_<SERVICE>_<FIELD>` sets them."""

    # hide_input_in_errors: a setting may hold a secret (API key hashes, or a key pasted by mistake).
    model_config = SettingsConfigDict(
        env_prefix="PCAM_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The service's own variables first, then the agreed ones (`PCAM_<FIELD>`)."""
        agreed = AgreedEnvSource(settings_cls)
        return init_settings, env_settings, agreed, dotenv_settings, file_secret_settings

    host: str = Field("127.0.0.1", description="Address the server listens on (0.0.0.0: every address).")
    port: int = Field(ge=1, le=65535, description="Port the server listens on.")
    log_level: str = Field(
        "info", description="Log level of the service and uvicorn: debug, info, warning, error or critical."
    )
    graceful_shutdown_s: float = Field(
        20.0, gt=0, description="In-flight requests get this long after SIGTERM."
    )
    max_in_flight_requests: int = Field(
        64,
        ge=1,
        description="POST requests handled at once; one more is answered at once with 503 overloaded "
        "and Retry-After instead of queueing (probes, metrics and GETs are never refused).",
    )
    overload_retry_after_s: int = Field(1, ge=1, description="Retry-After of an overloaded answer.")


def agreed_fields(settings_cls: type[BaseSettings]) -> frozenset[str]:
    """The fields of a settings class that come from `AgreedSettings` mixins."""
    return frozenset(
        name
        for mixin in settings_cls.__mro__
        if AgreedSettings in mixin.__bases__
        for name in mixin.__annotations__
    )


def field_set_by(settings_cls: type[BaseSettings], variable: str) -> str | None:
    """The field an environment variable sets in a service's settings, or None (a misspelt name)."""
    name, own = variable.upper(), settings_cls.model_config.get("env_prefix", "").upper()
    if name.startswith(own) and (field := name.removeprefix(own).lower()) in settings_cls.model_fields:
        return field
    if (field := name.removeprefix(AGREED_ENV_PREFIX).lower()) in agreed_fields(settings_cls):
        return field
    return None


class AgreedEnvSource(EnvSettingsSource):
    """`PCAM_<FIELD>` for the agreed fields of a settings class, and for nothing else."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls, env_prefix=AGREED_ENV_PREFIX)
        self.agreed = agreed_fields(settings_cls)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name not in self.agreed:
            return None, field_name, False
        return super().get_field_value(field, field_name)


class ReadsRelease(AgreedSettings):
    """Fields of the services that read release.json (preprocess, ensemble): defined once, so they agree."""

    model_repository: Path = Field(DEFAULT_MODEL_REPOSITORY, description="Holds release.json.")
    release_poll_s: float = Field(
        limits.RELEASE_POLL_S, gt=0, description="How often release.json is checked for a new release."
    )


class TakesUploads(AgreedSettings):
    """Fields of the services that take image uploads (gateway, preprocess): defined once, so they agree."""

    max_images: int = Field(limits.MAX_IMAGES_PER_REQUEST, ge=1, description="Images per request.")
    max_image_bytes: int = Field(limits.MAX_IMAGE_BYTES, ge=1024, description="Bytes per uploaded image.")


class ExplainsImages(AgreedSettings):
    """The explain limit of the services that take explain requests (gateway, ensemble): defined once, so
    a computation the gateway shares between concurrent requests (single-flight) never exceeds the
    ensemble's limit."""

    max_explain_images: int = Field(
        limits.MAX_EXPLAIN_IMAGES, ge=1, description="Images per request with explain."
    )
