"""The production members of `training/configs/pcam-gpu.yaml` (seresnet50, efficientnet_b3, ViT-B/16 at
96 px), each trained a few steps on a small synthetic set, exported with the ONNX parity check and
served together by the real Triton under the model I/O contract, so the GPU recipe cannot rot unseen.

The config is pcam-gpu itself with only what a 2-core CPU box needs changed
(`benchmarks.members.production_smoke`). Slow (about two minutes on 2 cores): `make test` leaves it
out, `make test-slow` runs it, and so does CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from benchmarks import members
from pcam_core.contract import INPUT_NAME, OUTPUT_NAME
from pcam_core.release import load_release
from tests.integration.conftest import own_stack
from tests.integration.test_predict import unique_png
from training.config import load_config
from training.export import PARITY_ATOL

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def production_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return members.production_repository(tmp_path_factory.mktemp("pcam-gpu-smoke") / "model_repository")


def test_the_smoke_config_keeps_the_profiles_architectures(tmp_path: Path) -> None:
    profile, smoke = (
        load_config(members.PROFILE),
        load_config(members.production_smoke(tmp_path / "config.yaml")),
    )
    keep = ("name", "architecture", "model_kwargs", "loss", "augment", "weight")
    assert [m.model_dump(include=set(keep)) for m in smoke.members] == [
        m.model_dump(include=set(keep)) for m in profile.members
    ]


def test_every_production_member_is_exported_and_served_under_the_contract(
    production_repository: Path, patch_paths: list[Path], tmp_path: Path
) -> None:
    release = load_release(production_repository)
    architectures = {m.architecture for m in release.members}
    assert architectures == {"seresnet50", "efficientnet_b3", "vit_base_patch16_224"}
    for member in release.members:
        config = (production_repository / member.name / "config.pbtxt").read_text()
        assert f'name: "{INPUT_NAME}"' in config and f'name: "{OUTPUT_NAME}"' in config
    files = [
        ("files", (f"{i}.png", unique_png(path, 77_000 + i), "image/png"))
        for i, path in enumerate(patch_paths[:4])
    ]
    with own_stack(production_repository, tmp_path) as stack:
        url = f"{stack.config.url('gateway')}/v1/predict/batch"
        response = httpx.post(url, files=files, timeout=120)
        explained = httpx.post(url, params={"explain": "cam"}, files=files[:1], timeout=120)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 4
    for result in results:
        assert set(result["members"]) == {m.name for m in release.members}
        assert all(0.0 <= p <= 1.0 for p in result["members"].values())
        assert result["release"] == release.release_id
    # Both kinds of activation map come through Triton with the logits: CAM and attention rollout.
    assert explained.status_code == 200, explained.text
    explanation = explained.json()["results"][0]["explanation"]
    kinds = {m.architecture: explanation["members"][m.name] for m in release.members}
    assert kinds == {
        "seresnet50": "cam",
        "efficientnet_b3": "cam",
        "vit_base_patch16_224": "attention_rollout",
    }
    assert len(explanation["grid"]) == 96 and all(len(row) == 96 for row in explanation["grid"])


def test_each_export_passed_its_parity_check(production_repository: Path) -> None:
    reports = sorted((production_repository.parent / "work").rglob("export.json"))
    architectures = set()
    for report in map(json.loads, (path.read_text() for path in reports)):
        architectures.add(report["architecture"])
        # The build fails past PARITY_ATOL + PARITY_RTOL * |logit|; the measured difference is recorded.
        assert 0.0 <= report["formats"]["onnx"]["parity_max_abs_diff"] <= PARITY_ATOL * 10
    assert architectures == {"seresnet50", "efficientnet_b3", "vit_base_patch16_224"}
