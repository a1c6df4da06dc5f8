"""Gateway settings: where the Redis AUTH password comes from, and that it is never echoed."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.gateway.settings import GatewaySettings

PASSWORD = "s3cret-Redis-pass"


def test_no_password_means_no_auth() -> None:
    assert GatewaySettings().redis_auth_password() is None


def test_password_from_the_environment_is_hidden_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCAM_GATEWAY_REDIS_PASSWORD", PASSWORD)
    settings = GatewaySettings()
    assert settings.redis_auth_password() == PASSWORD
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())


def test_password_file_keeps_inner_whitespace_and_drops_the_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text(f" {PASSWORD} \n")
    assert GatewaySettings(redis_password_file=secret).redis_auth_password() == f" {PASSWORD} "


def test_both_sources_are_refused_without_echoing_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PCAM_GATEWAY_REDIS_PASSWORD", PASSWORD)
    monkeypatch.setenv("PCAM_GATEWAY_REDIS_PASSWORD_FILE", str(tmp_path / "redis-password"))
    with pytest.raises(ValidationError, match="not both") as raised:
        GatewaySettings()
    assert PASSWORD not in str(raised.value)
