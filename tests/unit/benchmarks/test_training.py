"""benchmarks.training reports, per member of a config, its training step against its augmentation."""

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
    for _, batch, *timed, _ in report["rows"]:
        assert batch == 4
        for milliseconds, rate in zip(timed[::2], timed[1::2], strict=True):  # step, device and CPU augment
            assert milliseconds > 0 and rate == pytest.approx(batch / milliseconds * 1e3)
        assert len(timed) == 6
    assert report["device"] == "cpu" and report["config"] == "smoke"
