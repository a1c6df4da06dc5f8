"""`pcam evaluate` on a smoke-built model repository's test split (builds one: about 15-60 s on 2 cores)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as sk
from typer.testing import CliRunner

from pcam_core.release import OPERATING_POINTS, load_release
from pcam_core.rule import combine_release
from training import stain
from training.cli import app
from training.data.pcam_h5 import iter_images, read_labels, split_files
from training.evaluate import SYNTHETIC_NOTE, EvaluationReport
from training.graphs import onnx_logits, session

runner = CliRunner()


@pytest.fixture(scope="module")
def evaluated(built, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    repo, work = built
    root = tmp_path_factory.mktemp("evaluate")
    report = root / "report.json"
    args = ["evaluate", "--repository", str(repo), "--data", str(work / "data"), "--split", "test",
            "--output", str(report), "--workdir", str(root / "work"),
            "--report-dir", str(root / "report")]  # fmt: skip
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
        assert sum(point["confusion"].values()) == len(labels)
        assert {"ppv", "npv", "kappa", "ppv_ci", "npv_ci", "kappa_ci", "criterion"} <= set(point)
    assert report["bootstrap_rounds"] == 1000 and report["bootstrap_units"] >= 1
    assert 0.0 <= report["brier"] <= 1.0
    for key in ("auc", "brier", "ece"):
        low, high = report[f"{key}_ci"]
        # An interval can end at the estimate itself, computed along another path: equal to rounding.
        assert low - 1e-12 <= report[key] <= high + 1e-12
    assert report["roc"]["fpr"][0] == 0.0 and report["roc"]["tpr"][-1] == 1.0
    assert sum(b["patches"] for b in report["reliability"]) == len(labels)


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
    p = combine_release(logits, manifest).probability
    for name, point in manifest.ensemble.operating_points.items():
        predicted = p >= point.threshold
        got = report["operating_points"][name]
        assert got["threshold"] == point.threshold
        assert got["sensitivity"] == pytest.approx(predicted[labels == 1].mean())
        assert got["specificity"] == pytest.approx((~predicted[labels == 0]).mean())
        assert got["accuracy"] == pytest.approx((predicted == (labels == 1)).mean())
        called = predicted.astype(int)
        tn, fp, fn, tp = sk.confusion_matrix(labels, called, labels=[0, 1]).ravel()
        assert got["confusion"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # undefined metrics: scikit-learn warns, we say None
            expected = {
                "ppv": sk.precision_score(labels, called, zero_division=np.nan),
                "npv": sk.precision_score(labels, called, pos_label=0, zero_division=np.nan),
                "kappa": sk.cohen_kappa_score(labels, called),
            }
        for key, value in expected.items():
            assert got[key] is None if np.isnan(value) else got[key] == pytest.approx(value)
    assert report["auc"] == pytest.approx(sk.roc_auc_score(labels, p))
    assert report["brier"] == pytest.approx(sk.brier_score_loss(labels, p))
    # The release's prediction sets, fitted on validation, measured on this split.
    rule = manifest.ensemble.conformal
    assert rule is not None and rule.coverage == 0.95
    sets = 1 - np.stack([1 - p, p], axis=1) <= rule.quantile
    sets[~sets.any(axis=1), (p[~sets.any(axis=1)] >= 0.5).astype(int)] = True
    conformal = report["conformal"]
    assert conformal["target_coverage"] == 0.95 and conformal["quantile"] == rule.quantile
    assert conformal["coverage"] == pytest.approx(sets[np.arange(len(labels)), labels].mean())
    assert conformal["both_labels_share"] == pytest.approx(sets.all(axis=1).mean())
    low, high = conformal["coverage_ci"]
    assert low <= conformal["coverage"] <= high


def test_table_is_printed_with_the_note(evaluated):
    report, output, _ = evaluated
    assert report["release_id"] in output
    assert "operating points" in output and SYNTHETIC_NOTE in output
    assert "prediction sets (fitted for 95% coverage): coverage" in output


def test_missing_split_is_a_user_error(built, tmp_path: Path):
    repo, _ = built
    result = runner.invoke(app, ["evaluate", "--repository", str(repo), "--data", str(tmp_path)])
    assert result.exit_code == 1 and "missing" in result.output


def test_report_dir_holds_json_markdown_and_figures(evaluated):
    report, output, eval_work = evaluated
    directory = eval_work.parent / "report"
    assert json.loads((directory / "report.json").read_text()) == report
    md = (directory / "report.md").read_text()
    assert SYNTHETIC_NOTE in md and report["release_id"] in md and "Research use only" in md
    pngs = ["roc.png", "reliability.png", *(f"confusion_{n}.png" for n in OPERATING_POINTS)]
    for name in pngs:
        with Image.open(directory / name) as image:
            image.verify()
            assert image.format == "PNG" and (directory / name).stat().st_size > 0
        assert f"]({name})" in md
    assert str(directory / "report.md") in output.replace("\n", "")


# --- pcam validate --------------------------------------------------------------------------------


def _validate(built, evaluated, tmp_path: Path, *extra: str):
    repo, work = built
    _, _, eval_work = evaluated
    args = ["validate", "--repository", str(repo), "--data", str(work / "data"),
            "--workdir", str(eval_work), "--report-dir", str(tmp_path), *extra]  # fmt: skip
    return runner.invoke(app, args)


def test_validate_on_the_smoke_release_exits_with_its_verdict(built, evaluated, tmp_path: Path):
    result = _validate(built, evaluated, tmp_path)
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert result.exit_code == (0 if verdict["met"] else 1), result.output
    assert verdict["operating_point"] == "screening" and not verdict["require_ci"]
    assert "Clinical targets" in result.output and SYNTHETIC_NOTE in result.output
    report = EvaluationReport.model_validate_json((tmp_path / "report.json").read_text())
    assert report.operating_points == EvaluationReport.model_validate(evaluated[0]).operating_points
    md = (tmp_path / "report.md").read_text()
    assert "## Verdict" in md and verdict["statement"][0] in md


def _fake_logits(kind: str):
    def score_split(manifest, repository, x_path, threads=1):
        labels = read_labels(x_path)
        # +-1000 stays 1.0 / ~0 after any temperature the fit allows (at most 20): a perfect ranking.
        column = np.where(labels == 1, 1000.0, -1000.0) if kind == "perfect" else np.zeros(len(labels))
        return np.repeat(column[:, None], len(manifest.members), axis=1)

    return score_split


def test_validate_exits_0_when_the_targets_are_met(built, evaluated, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("training.evaluate.score_split", _fake_logits("perfect"))
    result = _validate(built, evaluated, tmp_path)
    assert result.exit_code == 0, result.output
    assert "Clinical targets MET" in result.output and SYNTHETIC_NOTE in result.output


def test_validate_exits_1_when_the_targets_are_missed(built, evaluated, tmp_path: Path, monkeypatch):
    # One probability for every patch: either everything is called tumor or nothing is.
    monkeypatch.setattr("training.evaluate.score_split", _fake_logits("constant"))
    result = _validate(built, evaluated, tmp_path, "--operating-point", "conservative")
    assert result.exit_code == 1, result.output
    assert "Clinical targets NOT MET" in result.output
    assert "meeting both targets by point estimate: none" in result.output


def test_validate_exits_2_when_it_cannot_tell(built, evaluated, tmp_path: Path):
    result = _validate(built, evaluated, tmp_path, "--operating-point", "nonsense")
    assert result.exit_code == 2 and "unknown operating point 'nonsense'" in result.output
    repo, _ = built
    result = runner.invoke(app, ["validate", "--repository", str(repo), "--data", str(tmp_path)])
    assert result.exit_code == 2 and "missing" in result.output


def test_validate_refuses_ci_bounds_it_cannot_estimate_and_flags_a_fitted_split(
    built, evaluated, tmp_path: Path
):
    # The smoke test split comes from one synthetic slide: nothing to resample.
    result = _validate(built, evaluated, tmp_path, "--require-ci")
    assert result.exit_code == 2, result.output
    assert "--require-ci needs at least 20 slide units" in " ".join(result.output.split())
    result = _validate(built, evaluated, tmp_path, "--split", "valid")
    assert result.exit_code in (0, 1), result.output
    assert "not a held-out result" in " ".join(result.output.split())


def test_validate_of_a_repository_missing_a_model_exits_2_with_a_message(built, evaluated, tmp_path: Path):
    import shutil

    repo, work = built
    broken = tmp_path / "repo"
    shutil.copytree(repo, broken)
    (next(broken.glob("*/1/model.onnx"))).unlink()
    args = [
        "validate",
        "--repository",
        str(broken),
        "--data",
        str(work / "data"),
        "--workdir",
        str(evaluated[2]),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "Traceback" not in result.output
    assert "model.onnx" in "".join(result.output.split())
