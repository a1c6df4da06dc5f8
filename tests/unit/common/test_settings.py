"""Settings several services must agree on: declared once, one PCAM_<FIELD> sets them everywhere."""

import os
from pathlib import Path

import pytest

from pcam_core import limits
from services.common.settings import agreed_fields, field_set_by
from services.ensemble.settings import EnsembleSettings
from services.gateway.settings import GatewaySettings
from services.preprocess.settings import PreprocessSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("PCAM_")]:
        monkeypatch.delenv(name)


def test_each_service_agrees_on_the_fields_of_its_mixins() -> None:
    uploads, release, explain, every = (
        {"max_images", "max_image_bytes"},
        {"model_repository", "release_poll_s"},
        {"max_explain_images"},
        {"problem_type_base"},
    )
    assert agreed_fields(GatewaySettings) == uploads | explain | every
    assert agreed_fields(PreprocessSettings) == uploads | release | every
    assert agreed_fields(EnsembleSettings) == release | explain | every


def test_one_variable_sets_an_agreed_field_in_every_service_that_has_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PCAM_MAX_IMAGE_BYTES", "5000")
    monkeypatch.setenv("PCAM_MODEL_REPOSITORY", "/models")
    gateway, preprocess, ensemble = GatewaySettings(), PreprocessSettings(), EnsembleSettings()
    assert gateway.max_image_bytes == preprocess.max_image_bytes == 5000
    assert preprocess.model_repository == ensemble.model_repository == Path("/models")
    monkeypatch.setenv("PCAM_MAX_EXPLAIN_IMAGES", "4")
    assert GatewaySettings().max_explain_images == EnsembleSettings().max_explain_images == 4


def test_a_services_own_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCAM_MAX_IMAGES", "9")
    monkeypatch.setenv("PCAM_GATEWAY_MAX_IMAGES", "3")
    assert GatewaySettings().max_images == 3
    assert PreprocessSettings().max_images == 9


def test_the_shared_prefix_reaches_no_other_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """PCAM_PORT would otherwise move every service to one port."""
    monkeypatch.setenv("PCAM_PORT", "1")
    monkeypatch.setenv("PCAM_LOG_LEVEL", "debug")
    gateway = GatewaySettings()
    assert gateway.port != 1 and gateway.log_level == "info"
    assert GatewaySettings().max_images == limits.MAX_IMAGES_PER_REQUEST


def test_an_invalid_shared_value_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCAM_MAX_IMAGE_BYTES", "12")  # below the 1 KiB floor
    with pytest.raises(ValueError, match="max_image_bytes"):
        PreprocessSettings()


@pytest.mark.parametrize(
    ("settings", "variable", "field"),
    [
        (GatewaySettings, "PCAM_GATEWAY_MAX_IMAGES", "max_images"),
        (GatewaySettings, "PCAM_MAX_IMAGES", "max_images"),
        (GatewaySettings, "pcam_gateway_port", "port"),
        (EnsembleSettings, "PCAM_MAX_IMAGES", None),  # its max_images is its own, not the upload limit
        (EnsembleSettings, "PCAM_ENSEMBLE_MAX_IMAGES", "max_images"),
        (EnsembleSettings, "PCAM_PORT", None),  # not agreed: only PCAM_ENSEMBLE_PORT sets it
        (GatewaySettings, "PCAM_GATEWAY_RATELIMIT", None),
        (PreprocessSettings, "PCAM_RELEASE_POLL_S", "release_poll_s"),
    ],
)
def test_field_set_by(settings: type, variable: str, field: str | None) -> None:
    assert field_set_by(settings, variable) == field
