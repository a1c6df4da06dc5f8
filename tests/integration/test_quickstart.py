"""docs/quickstart.md as a user follows it: every marked block runs, as written, against a real stack.

The only change to a block is the gateway's address (the session's stack listens on free ports, not
8080). Blocks run from a scratch directory that sees the repository's tests/ and .venv/ as the
quickstart's working directory does, so the files they write (overlay.png, predictions.csv) land there.
The sample answer shown in the page must match a real answer: each field it shows exists, with that
type, and the fields it explains are in it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from devstack.stack import LocalStack
from tests.unit.deploy.walkthrough import Block, block, run_block, user_workdir

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "docs" / "quickstart.md"
PATCHES = sorted((ROOT / "tests" / "data" / "he" / "patches").glob("*.png"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quickstart's working directory: the checkout's tests/ and virtualenv, nothing else."""
    return user_workdir(tmp_path_factory.mktemp("quickstart"), tests=ROOT / "tests")


def run(step: Block, stack: LocalStack, workdir: Path) -> str:
    """The block run there as written, against the session's stack; its stdout."""
    return run_block(step, workdir, stack.config.url("gateway")).stdout


def documents(output: str) -> list[dict]:
    """Every JSON document curl printed, one after another with nothing between them."""
    decoder, found, index = json.JSONDecoder(), [], 0
    while index < len(output):
        if output[index].isspace():
            index += 1
            continue
        document, index = decoder.raw_decode(output, index)
        found.append(document)
    return found


def step(name: str) -> Block:
    return block(QUICKSTART, name)


def test_the_gateway_reports_ready(stack: LocalStack, workdir: Path):
    (answer,) = documents(run(step("quickstart-ready"), stack, workdir))
    assert answer["status"] == "ready"


def test_the_first_prediction_answers_what_the_page_shows(stack: LocalStack, workdir: Path):
    (answer,) = documents(run(step("quickstart-predict"), stack, workdir))
    shown = json.loads(step("quickstart-answer").code)
    for field, value in shown.items():
        assert field in answer, f"the page shows `{field}`, the answer has no such field"
        assert isinstance(answer[field], type(value)) or value is None, field
    for field, value in shown["quality"].items():
        assert field in answer["quality"] and isinstance(answer["quality"][field], type(value) | type(None))
    assert answer["operating_point"] == shown["operating_point"] == "balanced"
    assert answer["label"] == int(answer["probability"] >= answer["threshold"])
    assert answer["members"] and all(0 <= p <= 1 for p in answer["members"].values())


def test_the_release_lists_its_operating_points(stack: LocalStack, workdir: Path):
    (release,) = documents(run(step("quickstart-models"), stack, workdir))
    assert set(release["operating_points"]) == {"screening", "balanced", "high_specificity"}


def test_operating_point_and_tta_are_applied(stack: LocalStack, workdir: Path):
    screening, tta = documents(run(step("quickstart-options"), stack, workdir))
    assert screening["operating_point"] == "screening" and not screening["tta"]
    assert tta["tta"] is True and tta["operating_point"] == "balanced"


def test_the_explanation_overlay_is_saved_as_a_png(stack: LocalStack, workdir: Path):
    run(step("quickstart-explain"), stack, workdir)
    with Image.open(workdir / "overlay.png") as overlay:
        assert overlay.format == "PNG" and overlay.size[0] >= 96


def test_a_batch_answers_each_file_in_order(stack: LocalStack, workdir: Path):
    (answer,) = documents(run(step("quickstart-batch"), stack, workdir))
    assert len(answer["results"]) == 2
    assert all(0 <= result["probability"] <= 1 for result in answer["results"])


def test_pcam_predict_writes_a_row_per_patch(stack: LocalStack, workdir: Path):
    run(step("quickstart-pcam-predict"), stack, workdir)
    with (workdir / "predictions.csv").open() as table:
        rows = list(csv.DictReader(table))
    assert sorted(Path(row["file"]).name for row in rows) == [path.name for path in PATCHES]
    assert all(row["error"] == "" and 0 <= float(row["probability"]) <= 1 for row in rows)


def test_the_python_client_example_runs(stack: LocalStack, workdir: Path):
    lines = run(step("quickstart-client"), stack, workdir).splitlines()
    assert len(lines) == 1 + min(8, len(PATCHES))
    probability, label, needs_review = lines[0].split()
    assert 0 <= float(probability) <= 1 and label in ("0", "1") and needs_review in ("True", "False")
