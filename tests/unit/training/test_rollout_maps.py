"""A ViT member's attention rollout, served: where it puts the evidence on fresh synthetic patches.

The demo release has no ViT (docs/architecture.md#explanations measures its two CNNs' maps in
test_quality_bars), so this builds a one-member release with the real `pcam build-repository`: the
demo's data and settings with a 6-block ViT-Tiny trained for 2 epochs (about three minutes on 2
cores: slow, `make test-slow`). Its validation AUC is about 0.91: weak, and enough to show where the
rollout looks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pcam_core.release import load_release
from tests.activation_maps import center_share, served_maps
from training.cli import app
from training.config import resolve_config

pytestmark = pytest.mark.slow

VIT = {
    "name": "vit",
    "architecture": "vit_tiny_patch16_224",
    "model_kwargs": {"depth": 6},
    "epochs": 2,
    "batch_size": 64,
    "lr": 0.001,
    "weight_decay": 0.05,
}


@pytest.fixture(scope="module")
def vit_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vit-maps")
    config = yaml.safe_load(resolve_config("demo").read_text())
    config.update(release_prefix="vit-maps", members=[VIT])
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    args = ["build-repository", "--config", str(root / "config.yaml"), "--output", str(root / "repo")]
    result = CliRunner().invoke(app, [*args, "--workdir", str(root / "work")])
    assert result.exit_code == 0, result.output
    return root / "repo"


def test_a_vit_members_rollout_lies_in_the_center_for_center_positives_and_outside_for_decoys(
    vit_release: Path,
) -> None:
    assert [m.activation_map for m in load_release(vit_release).members] == ["attention_rollout"]
    maps = served_maps(vit_release)
    assert maps.center_positives.sum() >= 200 and maps.decoys.sum() >= 80, "too few patches to judge"
    assert np.mean(center_share(maps.ensemble[maps.center_positives])) > 0.5
    assert np.median(center_share(maps.ensemble[maps.decoys])) < 0.2
