"""docs/tutorials/bring-your-own-model.md as a user follows it: a config naming an ONNX graph, the stain
reference, their own training code and export, the digest, the release built, served by a real stack
and validated; every marked block runs as written (the stack's address stands in for 8080)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import LocalStack
from pcam_core.flags import FEATURE_OUTLIER
from pcam_core.release import load_release
from tests.integration.conftest import own_stack
from tests.integration.test_quickstart import documents
from tests.unit.deploy.walkthrough import block, blocks, run_block, user_workdir

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorials" / "bring-your-own-model.md"
BUILD = ("byo-config", "byo-stain", "byo-train", "byo-digest", "byo-build")
AFTER = ("byo-serve", "byo-validate")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tutorial's working directory after steps 1-4 ran there, as written."""
    workdir = user_workdir(tmp_path_factory.mktemp("byo"), tests=ROOT / "tests")
    for name in BUILD:
        run_block(block(TUTORIAL, name), workdir)
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
    done = run_block(block(TUTORIAL, "byo-serve"), built, served.config.url("gateway"))
    release, answer = documents(done.stdout)
    assert [m["name"] for m in release["members"]] == ["mine"]
    assert answer["release"] == release["release_id"] and answer["operating_point"] == "screening"
    assert 0 <= answer["probability"] <= 1 and list(answer["members"]) == ["mine"]


def test_validate_judges_it_and_writes_its_report(built: Path):
    done = run_block(block(TUTORIAL, "byo-validate"), built, check=False)
    assert done.returncode in (0, 1), done.stderr  # met or not met: both are verdicts
    verdict = json.loads((built / "byo-report" / "verdict.json").read_text())
    assert verdict["operating_point"] == "screening"


def test_every_marked_block_is_run() -> None:
    assert [b.name for b in blocks(TUTORIAL)] == [*BUILD, *AFTER]
