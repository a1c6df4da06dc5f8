"""docs/tutorials/bring-your-own-model.md as a user follows it: a config naming an ONNX graph, the stain
reference, their own training code and export, the digest, the release built, served by a real stack
and validated; every marked block runs as written (the stack's address stands in for 8080)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import LocalStack
from pcam_core.flags import FEATURE_OUTLIER
from pcam_core.release import load_release
from tests.integration.conftest import own_stack
from tests.integration.test_quickstart import DOCUMENTED_URL, documents
from tests.unit.deploy.walkthrough import Block, block, blocks

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorials" / "bring-your-own-model.md"
BUILD = ("byo-config", "byo-stain", "byo-train", "byo-digest", "byo-build")
AFTER = ("byo-serve", "byo-validate")


def run(step: Block, workdir: Path, url: str | None = None) -> subprocess.CompletedProcess[str]:
    code = step.code.replace(DOCUMENTED_URL, url) if url else step.code
    command = (
        ["bash", "-euo", "pipefail", "-c", code] if step.lang == "bash" else [sys.executable, "-c", code]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCAM_")}
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tutorial's working directory after steps 1-4 ran there, as written."""
    workdir = tmp_path_factory.mktemp("byo")
    (workdir / "tests").symlink_to(ROOT / "tests")
    (workdir / ".venv").symlink_to(Path(sys.executable).parents[1])
    for name in BUILD:
        done = run(block(TUTORIAL, name), workdir)
        assert done.returncode == 0, f"{name}:\n{done.stdout}\n{done.stderr}"
    return workdir


@pytest.fixture(scope="module")
def served(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with own_stack(built / "byo_repository", tmp_path_factory.mktemp("byo-stack")) as stack:
        yield stack


def test_the_release_holds_the_imported_member_as_the_page_says(built: Path):
    release = load_release(built / "byo_repository")
    (member,) = release.members
    assert (member.name, member.architecture, member.activation_map) == ("mine", "onnx:mine.onnx", None)
    assert release.release_id.startswith("byo-") and release.data.source == "synthetic"
    assert set(release.ensemble.operating_points) == {"screening", "balanced", "high_specificity"}
    assert release.review is not None and FEATURE_OUTLIER not in release.review.flags
    assert (built / "byo-work" / "members" / "mine" / "model.onnx").is_file()
    digest = json.loads((built / "byo-work" / "members" / "mine" / "export.json").read_text())[
        "imported_from"
    ]
    assert digest["file"] == "mine.onnx" and digest["sha256"] in (built / "byo.yaml").read_text()


def test_the_stack_serves_it(built: Path, served: LocalStack):
    done = run(block(TUTORIAL, "byo-serve"), built, served.config.url("gateway").rstrip("/"))
    assert done.returncode == 0, done.stderr
    release, answer = documents(done.stdout)
    assert [m["name"] for m in release["members"]] == ["mine"]
    assert answer["release"] == release["release_id"] and answer["operating_point"] == "screening"
    assert 0 <= answer["probability"] <= 1 and list(answer["members"]) == ["mine"]


def test_validate_judges_it_and_writes_its_report(built: Path):
    done = run(block(TUTORIAL, "byo-validate"), built)
    assert done.returncode in (0, 1), done.stderr  # met or not met: both are verdicts
    verdict = json.loads((built / "byo-report" / "verdict.json").read_text())
    assert verdict["operating_point"] == "screening"


def test_every_marked_block_is_run() -> None:
    assert [b.name for b in blocks(TUTORIAL)] == [*BUILD, *AFTER]
