"""Run configs: bundled ones load, mistakes are refused, the resolved config round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from training.config import BUNDLED_DIR, bundled_configs, load_config, save_config
from training.models import check_architecture


@pytest.mark.parametrize("name", ["smoke", "demo"])
def test_bundled_configs_load_and_name_real_architectures(name: str):
    config = load_config(name)
    assert len(config.members) >= 2
    assert len({m.architecture for m in config.members}) == len(config.members)
    for member in config.members:
        check_architecture(member.architecture)


def test_bundled_names_are_listed():
    assert {"smoke", "demo"} <= set(bundled_configs())


def _raw() -> dict:
    return yaml.safe_load((BUNDLED_DIR / "smoke.yaml").read_text())


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["members"][0].update(name="Bad Name"),
        lambda c: c["members"][1].update(name=c["members"][0]["name"]),
        lambda c: c["members"][0].update(epochs=0),
        lambda c: c["members"][0].update(learning_rate=0.1),  # misspelt key
        lambda c: c["data"].update(pcam_dir="/data/pcam"),  # both sources
        lambda c: c.update(release_prefix="-bad"),
        lambda c: c.update(members=[]),
    ],
)
def test_mistakes_are_refused(tmp_path: Path, change):
    raw = _raw()
    change(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError):
        load_config(path)


def test_saved_config_round_trips(tmp_path: Path):
    config = load_config("smoke")
    assert load_config(save_config(config, tmp_path / "config.yaml")) == config


def test_unknown_config_name_says_what_exists():
    with pytest.raises(FileNotFoundError, match="smoke"):
        load_config("no-such-config")
