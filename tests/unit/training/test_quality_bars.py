"""Quality bars of the demo ensemble on held-out synthetic data (issue 4, item 10), on the CPU.

One real `pcam build-repository --config demo` (about three minutes on 2 cores), then a fresh
synthetic set from another seed (new slides, new stains), normalized and scored exactly as served.
8192 patches, so that the ECE comparison is not noise (a paired bootstrap of the ECE difference was
negative in 200 of 200 resamples at this size). Synthetic data: these bars say the pipeline learns
the center-32 rule and calibrates, not how a model does on PCam.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from pcam_core.release import load_release
from pcam_core.rule import combine, combine_release
from tests.activation_maps import ServedMaps, center_share, served_maps
from training import stain
from training.cli import app
from training.data import pcam_h5
from training.data.synthetic import synthesize
from training.evaluate import score_split
from training.metrics import ece
from training.slides.evaluate import evaluate_slides
from training.slides.run import predict_slide
from training.slides.scorers import LocalScorer
from training.slides.synthetic import write_synthetic_slide

# The demo build happens in the first test's setup (163-208 s on 2 cores since 2026-12-04; 677-928 s
# before the demo's members were halved), and then 8192 held-out patches and three slides are scored:
# `make test-slow` runs them (CI does both).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

DEMO_AUC = 0.98
DECOY_AUC = 0.95
CALIBRATED_ECE = 0.03


HELD_OUT_PATCHES = 8192
HELD_OUT_SEED = 101  # the demo trains on seed 0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo release's model repository, built by the CLI."""
    root = tmp_path_factory.mktemp("demo")
    args = [
        "build-repository",
        "--config",
        "demo",
        "--output",
        str(root / "repo"),
        "--workdir",
        str(root / "work"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return root / "repo"


@pytest.fixture(scope="module")
def held_out(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Labels, meta columns and the release's probabilities on a fresh held-out synthetic set."""
    root = tmp_path_factory.mktemp("held-out")
    synthesize(root, {"train": 16, "valid": 16, "test": HELD_OUT_PATCHES}, HELD_OUT_SEED)
    manifest = load_release(demo)
    x, y = pcam_h5.split_files(root, "test")
    normalized = stain.normalize_split(x, y, root / "normalized.h5", manifest.stain_reference)
    with pcam_h5.meta_file(root, "test").open(newline="") as f:
        rows = list(csv.DictReader(f))
    logits = score_split(manifest, demo, normalized.path, threads=2)
    return {
        "labels": pcam_h5.read_labels(normalized.path).astype(int),
        "any_tumor": np.array([r["tumor_patch"] == "True" for r in rows]),
        "center_tumor": np.array([r["center_tumor_patch"] == "True" for r in rows]),
        "calibrated": combine_release(logits, manifest).probability,
        "uncalibrated": combine(
            logits, [1.0] * logits.shape[1], [m.weight for m in manifest.members]
        ).probability,
        "synthetic": manifest.data.source == "synthetic",
    }


def test_demo_ensemble_held_out_auc(held_out: dict):
    assert held_out["synthetic"]
    assert roc_auc_score(held_out["labels"], held_out["calibrated"]) >= DEMO_AUC


def test_periphery_only_decoys_score_below_center_positives(held_out: dict):
    decoys = held_out["any_tumor"] & ~held_out["center_tumor"]
    positives = held_out["center_tumor"]
    assert np.array_equal(positives, held_out["labels"] == 1)  # the meta CSV agrees with the labels
    assert decoys.sum() >= 200, "too few decoys to judge"
    scores = np.concatenate([held_out["calibrated"][positives], held_out["calibrated"][decoys]])
    truth = np.concatenate([np.ones(positives.sum()), np.zeros(decoys.sum())])
    assert roc_auc_score(truth, scores) >= DECOY_AUC


def test_calibration_lowers_held_out_ece_below_the_bar(held_out: dict):
    after = ece(held_out["calibrated"], held_out["labels"])
    before = ece(held_out["uncalibrated"], held_out["labels"])
    assert after <= CALIBRATED_ECE, (after, before)
    assert after < before, (after, before)


@pytest.fixture(scope="module")
def maps(demo: Path) -> ServedMaps:
    return served_maps(demo)


def test_the_cam_of_a_periphery_only_decoy_lies_outside_the_center(maps: ServedMaps) -> None:
    assert maps.decoys.sum() >= 80, "too few decoys to judge"
    assert np.median(center_share(maps.ensemble[maps.decoys])) < 0.2


def test_the_cam_of_a_center_positive_concentrates_on_the_center(maps: ServedMaps) -> None:
    """The center is 1/9 of the patch. The resnet member's map puts most of a center positive's
    evidence there; the mobilenet member's does not (its last 3x3 cells carry the center's evidence
    in the periphery cells: docs/architecture.md#explanations), so the ensemble's map holds about
    half of it there: well above the area's share, short of "mostly"."""
    positives = maps.center_positives
    assert positives.sum() >= 200, "too few center positives to judge"
    assert np.mean(center_share(maps.members["resnet"][positives])) > 0.5
    assert np.mean(center_share(maps.ensemble[positives])) > 3 / 9


SLIDE_SEEDS = (1, 2, 3)
SLIDE_AUC = 0.95
"""Cell AUC of each slide (issue 17). The demo built 2026-12-04 on a 2-core machine: 0.989/0.997/0.994
(the full-width members before it: 0.971/0.993/0.985).
Before the generator drew positives inside tumor sheets it was 0.942/0.952/0.950 (lesion interiors
missed): docs/architecture.md#whole-slide-inference."""
SLIDE_FROC = 0.75
"""Camelyon16's score against seed 1's tumor outlines (1.0 measured: both lesions found above the
highest false positive)."""


def test_synthetic_slides_heatmaps_find_their_tumor_cells(demo: Path, tmp_path: Path) -> None:
    """`pcam slide predict`'s path in-process on slides the generator draws in one piece: each cell's
    probability against PCam's rule on the cell itself (any tumor nucleus pixel in it)."""
    scorer = LocalScorer(demo, "balanced", threads=2)
    for seed in SLIDE_SEEDS:
        slide = write_synthetic_slide(tmp_path / f"{seed}" / "section.tiff", seed=seed)
        out = tmp_path / f"{seed}" / "out"
        summary = predict_slide(slide.path, scorer, out, "balanced", show=False)
        with np.load(out / "section.heatmap.npz") as grid:
            probability, tissue = grid["probability"], grid["tissue"]
        truth = slide.cell_labels()
        # Otsu may leave out a pale tumor cell at a hole's edge (seed 3: 1 of 106): never more than 2 %.
        assert (truth & ~tissue).sum() <= 0.02 * truth.sum(), "tumor cells missed by the tissue detection"
        assert summary.tissue_cells == tissue.sum() and np.isnan(probability[~tissue]).all()
        assert roc_auc_score(truth[tissue], probability[tissue]) >= SLIDE_AUC, f"seed {seed}"
        if seed == SLIDE_SEEDS[0]:
            # `pcam slide evaluate` against the tumor outlines: Camelyon16's lesions, each one found.
            (out / "annotations").mkdir()
            (out / "annotations" / "section.geojson").write_text(json.dumps(slide.annotations()))
            evaluation = evaluate_slides([out / "section.heatmap.npz"], out / "annotations")
            (scored,) = evaluation.slides
            assert scored.lesions >= 1 and scored.lesions_found == scored.lesions
            assert evaluation.froc_score >= SLIDE_FROC
