"""benchmarks.training reports, per member of a config, its training step against its CPU augmentation."""

import json
from pathlib import Path

import pytest

from benchmarks import training
from training.config import load_config, resolve_config


def test_every_member_gets_its_step_and_augmentation_rates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # the report goes to build/bench/ under the working directory
    training.main(["--config", "smoke", "--steps", "1", "--batch", "4"])
    report = json.loads((tmp_path / "build" / "bench" / "training.json").read_text())
    members = [member.name for member in load_config(resolve_config("smoke")).members]
    assert [row[0] for row in report["rows"]] == members
    for _, batch, step_ms, step_rate, augment_ms, augment_rate, _ in report["rows"]:
        assert batch == 4 and step_ms > 0 and augment_ms > 0
        assert step_rate == pytest.approx(batch / step_ms * 1e3) and augment_rate == pytest.approx(
            batch / augment_ms * 1e3
        )
    assert report["device"] == "cpu" and report["config"] == "smoke"
