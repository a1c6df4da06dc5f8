"""`pcam evaluate` on a smoke-built model repository's test split (builds one: about 15-60 s on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from services.common.release import OPERATING_POINTS, load_release
from services.ensemble.calibration import combine
from training import stain
from training.cli import app
from training.data.pcam_h5 import iter_images, read_labels, split_files
from training.evaluate import SYNTHETIC_NOTE
from training.export import onnx_logits, session

runner = CliRunner()


@pytest.fixture(scope="module")
def evaluated(built, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    repo, work = built
    root = tmp_path_factory.mktemp("evaluate")
    report = root / "report.json"
    args = ["evaluate", "--repository", str(repo), "--data", str(work / "data"), "--split", "test",
            "--output", str(report), "--workdir", str(root / "work")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(report.read_text()), result.output, root / "work"


def test_report_fields(built, evaluated):
    repo, work = built
    report, _, _ = evaluated
    manifest = load_release(repo)
    labels = read_labels(split_files(work / "data", "test")[1])
    assert report["release_id"] == manifest.release_id
    assert report["research_use_only"] is True
    assert report["data_source"] == manifest.data.source == "synthetic"
    assert report["note"] == SYNTHETIC_NOTE
    assert report["split"] == "test"
    assert report["patches"] == len(labels)
    assert report["prevalence"] == pytest.approx(labels.mean())
    assert report["bootstrap"] == "slide"  # the synthetic set writes a meta CSV with a wsi column
    assert 0.0 <= report["auc"] <= 1.0 and 0.0 <= report["ece"] <= 1.0
    assert list(report["members"]) == [m.name for m in manifest.members]
    for name, member in report["members"].items():
        assert 0.0 <= member["auc"] <= 1.0
        assert (
            member["temperature"]
            == manifest.members[[m.name for m in manifest.members].index(name)].temperature
        )
    assert set(report["operating_points"]) == set(OPERATING_POINTS)
    for point in report["operating_points"].values():
        for key in ("sensitivity", "specificity", "accuracy"):
            low, high = point[f"{key}_ci"]
            assert 0.0 <= low <= high <= 1.0


def test_operating_points_match_a_direct_recomputation(built, evaluated):
    repo, work = built
    report, _, eval_work = evaluated
    manifest = load_release(repo)
    x, y = split_files(work / "data", "test")
    normalized = stain.normalize_split(x, y, eval_work / "test.h5", manifest.stain_reference)
    assert normalized.reused  # the evaluation's own normalized split, same reference
    labels = read_labels(y)
    logits = np.stack(
        [onnx_logits(session(repo / m.name / "1" / "model.onnx"), iter_images(normalized.path))
         for m in manifest.members],
        axis=1,
    )  # fmt: skip
    p = combine(
        logits, [m.temperature for m in manifest.members], [m.weight for m in manifest.members]
    ).probability
    for name, point in manifest.ensemble.operating_points.items():
        predicted = p >= point.threshold
        got = report["operating_points"][name]
        assert got["threshold"] == point.threshold
        assert got["sensitivity"] == pytest.approx(predicted[labels == 1].mean())
        assert got["specificity"] == pytest.approx((~predicted[labels == 0]).mean())
        assert got["accuracy"] == pytest.approx((predicted == (labels == 1)).mean())


def test_table_is_printed_with_the_note(evaluated):
    report, output, _ = evaluated
    assert report["release_id"] in output
    assert "operating points" in output and SYNTHETIC_NOTE in output


def test_missing_split_is_a_user_error(built, tmp_path: Path):
    repo, _ = built
    result = runner.invoke(app, ["evaluate", "--repository", str(repo), "--data", str(tmp_path)])
    assert result.exit_code == 1 and "missing" in result.output
