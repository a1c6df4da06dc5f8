"""Figures, report.md and the clinical-target verdict on reports built from simulated scores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcam_core.release import (
    OPERATING_POINTS,
    ConformalRule,
    DataProvenance,
    EnsembleRule,
    Member,
    OperatingPoint,
    ReleaseManifest,
)
from pcam_core.rule import combine_release
from services.preprocess.stain import DEFAULT_REFERENCE
from training import plots
from training.evaluate import SYNTHETIC_NOTE, EvaluationReport, summarize
from training.report import REPORT_JSON, REPORT_MD, VERDICT_JSON, markdown, write_report
from training.validate import SENSITIVITY_TARGET, SPECIFICITY_TARGET, verdict

THRESHOLDS = {"screening": 0.2, "balanced": 0.5, "high_specificity": 0.8}


def manifest(source: str = "synthetic", thresholds: dict[str, float] = THRESHOLDS) -> ReleaseManifest:
    points = {
        name: OperatingPoint(
            threshold=thresholds[name], sensitivity=0.9, specificity=0.9, criterion=f"test {name}"
        )
        for name in OPERATING_POINTS
    }
    return ReleaseManifest(
        release_id="unit-eval-1",
        created_at="2026-11-25T00:00:00Z",
        data=DataProvenance(source=source, description="simulated for tests"),
        stain_reference=DEFAULT_REFERENCE,
        members=(
            Member(name="a", architecture="x", sha256="0" * 64, temperature=1.5, weight=1.0),
            Member(name="b", architecture="y", sha256="1" * 64, temperature=0.8, weight=2.0),
        ),
        ensemble=EnsembleRule(operating_points=points),
    )


def simulated(
    n: int = 1200, separation: float = 2.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, (N, 2) member logits and slide ids (40 patches a slide)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    logits = (2 * labels[:, None] - 1) * separation + rng.normal(0, 1.5, (n, 2))
    return labels, logits, np.arange(n) // 40


def report_of(source: str = "synthetic", separation: float = 2.0, **kwargs) -> EvaluationReport:
    labels, logits, slides = simulated(separation=separation)
    return summarize(manifest(source, **kwargs), labels, logits, slides, "test", "/data", rounds=200)


@pytest.fixture(scope="module")
def synthetic_report() -> EvaluationReport:
    return report_of("synthetic")


def is_png(path: Path) -> bool:
    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG" and path.stat().st_size > 0


def test_report_is_json_safe_and_round_trips(synthetic_report: EvaluationReport):
    text = synthetic_report.model_dump_json()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert EvaluationReport.model_validate_json(text) == synthetic_report
    assert synthetic_report.bootstrap == "slide" and synthetic_report.bootstrap_units == 30
    for p in synthetic_report.operating_points.values():
        c = p.confusion
        assert c.tp + c.fp + c.tn + c.fn == synthetic_report.patches


def test_write_report_writes_json_markdown_and_valid_pngs(tmp_path: Path, synthetic_report: EvaluationReport):
    written = write_report(synthetic_report, tmp_path / "out")
    names = {p.name for p in (tmp_path / "out").iterdir()}
    pngs = {"roc.png", "reliability.png", *(f"confusion_{n}.png" for n in OPERATING_POINTS)}
    assert names == {REPORT_JSON, REPORT_MD, *pngs}
    for name in pngs:
        assert is_png(tmp_path / "out" / name), name
    assert EvaluationReport.model_validate_json(written["json"].read_text()) == synthetic_report
    md = written["markdown"].read_text()
    for name in pngs:
        assert f"]({name})" in md  # linked relative to report.md


def test_markdown_puts_the_synthetic_note_and_disclaimer_first(synthetic_report: EvaluationReport):
    md = markdown(synthetic_report)
    assert SYNTHETIC_NOTE in md and "Research use only" in md
    assert md.index(SYNTHETIC_NOTE) < md.index("## Data") < md.index("## Ensemble")
    assert "resamples of 30 slides" in md
    for label in (
        "sensitivity",
        "specificity",
        "PPV",
        "NPV",
        "accuracy",
        "Cohen's kappa",
        "Brier",
        "ECE",
        "AUC",
    ):
        assert label in md
    assert "## Verdict" not in md


def test_markdown_of_a_pcam_release_has_no_note():
    md = markdown(report_of("pcam"))
    assert SYNTHETIC_NOTE not in md and "Research use only" in md


def test_every_figure_is_titled_with_release_and_note(monkeypatch, tmp_path: Path, synthetic_report):
    titles = {}

    def keep(figure, path):
        titles[path.name] = figure.get_suptitle()
        return path

    monkeypatch.setattr(plots, "_save", keep)
    plots.write_figures(synthetic_report, tmp_path)
    assert len(titles) == 2 + len(OPERATING_POINTS)
    for name, title in titles.items():
        assert synthetic_report.release_id in title and SYNTHETIC_NOTE in title, name
    plots.write_figures(report_of("pcam"), tmp_path)
    assert all(SYNTHETIC_NOTE not in t for t in titles.values())


def test_one_class_split_has_no_roc_figure(tmp_path: Path):
    labels, logits, slides = simulated()
    report = summarize(manifest(), np.zeros_like(labels), logits, slides, rounds=50)
    assert report.roc is None and report.auc is None and report.auc_ci is None
    figures = plots.write_figures(report, tmp_path)
    assert "roc" not in figures and is_png(figures["reliability"])


def test_plots_and_targets_import_without_matplotlib():
    code = (
        "import sys, training.plots, training.metrics, training.validate, pcam_core.rule; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])


# --- the verdict --------------------------------------------------------------------------------


def test_a_strong_model_meets_the_targets():
    result = verdict(
        report_of(separation=4.0, thresholds={"screening": 0.3, "balanced": 0.5, "high_specificity": 0.7})
    )
    assert result.met and result.operating_point == "screening"
    assert result.meeting == list(OPERATING_POINTS)
    assert result.statement[0].startswith("Clinical targets MET")
    assert SYNTHETIC_NOTE in " ".join(result.statement)


def test_a_weak_model_misses_and_says_which_target():
    report = report_of(separation=0.5)
    result = verdict(report)
    assert not result.met and result.meeting == []
    assert result.statement[0].startswith("Clinical targets NOT MET")
    screening = report.operating_points["screening"]
    # Low threshold: sensitive but not specific enough.
    assert screening.sensitivity >= SENSITIVITY_TARGET > 0 and screening.specificity < SPECIFICITY_TARGET
    assert "specificity" in result.statement[1] and "misses the target >= 0.9" in result.statement[1]
    assert "by point estimate: none" in result.statement[2]


def test_verdict_by_point_estimate_or_by_ci_lower_bound():
    # A threshold just inside the sensitivity target: met by the estimate, not by the interval's
    # lower bound (600 positives in 30 slides leave about +-0.01 of sampling error).
    labels, logits, slides = simulated(separation=3.0)
    release = manifest()
    p = combine_release(logits, release).probability
    threshold = float(np.quantile(p[labels == 1], 0.045, method="lower"))
    point = OperatingPoint(threshold=threshold, sensitivity=0.96, specificity=0.9, criterion="test")
    report = summarize(
        release, labels, logits, slides, rounds=200, operating_points=dict.fromkeys(OPERATING_POINTS, point)
    )
    at = report.operating_points["screening"]
    assert at.sensitivity >= SENSITIVITY_TARGET and at.specificity >= SPECIFICITY_TARGET
    assert at.sensitivity_ci[0] < SENSITIVITY_TARGET
    assert verdict(report).met
    assert not verdict(report, require_ci=True).met
    assert verdict(report).meeting_lower_ci == []
    assert "by 95 % CI lower bound: none" in verdict(report).statement[3]


def test_verdict_accepts_aliases_and_refuses_unknown_points(synthetic_report):
    assert verdict(synthetic_report, "conservative").operating_point == "screening"
    assert verdict(synthetic_report, "aggressive").operating_point == "high_specificity"
    with pytest.raises(ValueError, match="unknown operating point 'nonsense': choose one of screening"):
        verdict(synthetic_report, "nonsense")


def test_validate_report_carries_the_verdict(tmp_path: Path, synthetic_report):
    result = verdict(synthetic_report)
    written = write_report(synthetic_report, tmp_path, result)
    md = written["markdown"].read_text()
    assert md.index(SYNTHETIC_NOTE) < md.index("## Verdict") < md.index("## Data")
    assert result.statement[0] in md
    assert json.loads((tmp_path / VERDICT_JSON).read_text())["met"] == result.met


def test_markdown_warns_when_there_are_too_few_slides_to_resample(synthetic_report):
    labels, logits, _ = simulated()
    few = summarize(manifest(), labels, logits, np.arange(len(labels)) // 400, rounds=50)
    assert "Only 3 slides to resample" in markdown(few)
    assert "to resample: too few" not in markdown(synthetic_report)


def test_markdown_reports_the_prediction_sets_only_when_the_release_has_them(synthetic_report):
    assert "## Prediction sets" not in markdown(synthetic_report)
    labels, logits, slides = simulated()
    release = manifest()
    rule = ConformalRule(
        coverage=0.9, quantile=0.3, calibration_patches=500, calibration_coverage=0.9, both_labels_share=0.1
    )
    ruled = release.model_copy(update={"ensemble": release.ensemble.model_copy(update={"conformal": rule})})
    report = summarize(ruled, labels, logits, slides, "test", "/data", rounds=200)
    assert report.conformal is not None and report.conformal.quantile == 0.3
    low, high = report.conformal.coverage_ci
    assert low <= report.conformal.coverage <= high < 1.0
    md = markdown(report)
    assert "## Prediction sets" in md and "fitted on validation for 90% coverage" in md
    assert f"{report.conformal.coverage:.4f} [{low:.4f}, {high:.4f}]" in md
