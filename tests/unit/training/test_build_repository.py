"""`pcam build-repository` with the smoke config, end to end (about 15-60 s on 2 cores)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pcam_core.release import OPERATING_POINTS, ReleaseManifest, load_release
from pcam_core.rule import combine_release
from training.cli import app
from training.config import load_config
from training.data.pcam_h5 import data_files, iter_images, read_labels
from training.graphs import onnx_logits, session
from training.repository import BACKEND_SOURCE, config_pbtxt, sha256_file

runner = CliRunner()


def test_manifest_validates_and_names_the_members(built):
    repo, _ = built
    raw = json.loads((repo / "release.json").read_text())
    manifest = ReleaseManifest.model_validate(raw)
    assert re.fullmatch(r"smoke-\d{14}-[0-9a-f]{8}", manifest.release_id)
    assert [m.name for m in manifest.members] == [m.name for m in load_config("smoke").members]
    assert set(manifest.ensemble.operating_points) == set(OPERATING_POINTS)
    for member in manifest.members:
        assert member.temperature > 0
        assert {"auc", "nll_before", "nll_after"} <= set(member.metrics)


def test_repository_files_match_the_manifest(built):
    repo, work = built
    manifest = load_release(repo)
    smoke = load_config("smoke")
    assert sorted(p.name for p in repo.iterdir()) == sorted(
        [*(m.name for m in manifest.members), "release.json"]
    )
    for member in manifest.members:
        assert sha256_file(repo / member.name / "1" / "model.onnx") == member.sha256
        assert (repo / member.name / "1" / "model.py").read_bytes() == BACKEND_SOURCE.read_bytes()
        assert (repo / member.name / "config.pbtxt").read_text() == config_pbtxt(member.name, smoke.triton)
    data = {f.name: sha256_file(f) for f in data_files(work / "data")}
    assert manifest.data.source == "synthetic" and manifest.data.checksums == data
    assert len(data) >= 6


def test_manifest_carries_the_fitted_stain_reference(built):
    repo, work = built
    fitted = json.loads((work / "stain_reference.json").read_text())
    assert load_release(repo).stain_reference.model_dump(mode="json") == fitted


def test_served_graph_reproduces_the_recorded_operating_points(built):
    repo, work = built
    manifest = load_release(repo)
    valid = work / "normalized" / "valid.h5"
    labels = read_labels(valid)
    logits = np.stack(
        [
            onnx_logits(session(repo / m.name / "1" / "model.onnx"), iter_images(valid))
            for m in manifest.members
        ],
        axis=1,
    )
    # The serving rule itself: thresholds sit exactly on validation scores, so only it reproduces them.
    p = combine_release(logits, manifest).probability
    for point in manifest.ensemble.operating_points.values():
        predicted = p >= point.threshold
        assert predicted[labels == 1].mean() == pytest.approx(point.sensitivity)
        assert (~predicted[labels == 0]).mean() == pytest.approx(point.specificity)


def test_existing_repository_is_refused_without_force(built):
    repo, work = built
    before = (repo / "release.json").read_bytes()
    result = runner.invoke(app, ["build-repository", "-c", "smoke", "-o", str(repo), "-w", str(work)])
    assert result.exit_code != 0 and "--force" in result.output
    assert (repo / "release.json").read_bytes() == before
    assert not [p for p in repo.parent.iterdir() if p.name.startswith(".")]


def test_steps_report_what_is_missing(tmp_path: Path):
    result = runner.invoke(app, ["train", "--config", "smoke", "--workdir", str(tmp_path)])
    assert result.exit_code == 1 and "pcam stain-reference" in result.output


def test_help_lists_the_subcommands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("data", "stain-reference", "train", "export", "calibrate", "build-repository"):
        assert command in result.output
    assert "synthesize" in runner.invoke(app, ["data", "--help"]).output


def test_smoke_members_reach_useful_validation_logits(built):
    _, work = built
    labels = read_labels(work / "normalized" / "valid.h5")
    for member in load_config("smoke").members:
        logits = np.load(work / "members" / member.name / "valid_logits.npy")
        assert logits.shape == labels.shape and np.isfinite(logits).all()


def test_review_flags_are_fitted_on_validation_as_served(built):
    """Every threshold is a validation score's own, fitted at the configured rate: recomputed here
    from the served graphs and the preprocess service's measures, the flags fire as recorded."""
    from pcam_core.contract import FEATURE_DISTANCE_NAME, OUTPUT_NAME
    from pcam_core.flags import FEATURE_OUTLIER, INPUT_FLAGS
    from pcam_core.review import fires
    from pcam_core.rule import feature_score
    from services.preprocess.quality import input_scores
    from training.data.pcam_h5 import split_files
    from training.graphs import onnx_outputs
    from training.review import measure_split

    repo, work = built
    manifest = load_release(repo)
    review = manifest.review
    rate = load_config("smoke").calibration.flag_rate
    assert review is not None and review.validation_flagged <= 0.05
    assert all(rule.target_rate == rate and rule.validation_rate <= rate for rule in review.flags.values())
    measures = measure_split(split_files(work / "data", "valid")[0], manifest.stain_reference, review.stain)
    for name, score in input_scores(measures).items():
        assert fires(review.flags[name], score).mean() == pytest.approx(review.flags[name].validation_rate)
    valid = work / "normalized" / "valid.h5"
    outputs = [
        onnx_outputs(
            session(repo / m.name / "1" / "model.onnx"),
            iter_images(valid),
            (OUTPUT_NAME, FEATURE_DISTANCE_NAME),
        )
        for m in manifest.members
    ]
    distances = np.stack([o[FEATURE_DISTANCE_NAME] for o in outputs], axis=1)
    score = feature_score(
        distances,
        [review.feature_scales[m.name] for m in manifest.members],
        [m.weight for m in manifest.members],
    )
    assert fires(review.flags[FEATURE_OUTLIER], score).mean() == pytest.approx(
        review.flags[FEATURE_OUTLIER].validation_rate
    )
    assert set(INPUT_FLAGS) <= set(review.flags)
