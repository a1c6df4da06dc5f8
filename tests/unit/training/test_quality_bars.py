"""Quality bars of the demo ensemble on held-out synthetic data (issue 4, item 10), on the CPU.

One real `pcam build-repository --config demo` (about four minutes on 2 cores), then a fresh
synthetic set from another seed (new slides, new stains), normalized and scored exactly as served.
8192 patches, so that the ECE comparison is not noise (a paired bootstrap of the ECE difference was
negative in 200 of 200 resamples at this size). Synthetic data: these bars say the pipeline learns
the center-32 rule and calibrates, not how a model does on PCam.
"""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from pcam_core.explain import ensemble_map
from pcam_core.release import load_release
from pcam_core.rule import combine, combine_release, member_rule
from services.preprocess.stain import MacenkoNormalizer
from training import stain
from training.cli import app
from training.data import pcam_h5
from training.data.synthetic import CENTER_HI, CENTER_LO, Kind, generate_split, synthesize
from training.evaluate import score_split
from training.metrics import ece
from training.predict import OnnxMembers

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


MAP_PATCHES = 1024
MAP_SEED = 103
CENTER = slice(CENTER_LO, CENTER_HI)


def center_share(heat: np.ndarray) -> np.ndarray:
    """(N,) share of each (N, 96, 96) map's positive mass (the evidence for tumor) in the center 32x32."""
    evidence = np.maximum(heat, 0)
    return evidence[:, CENTER, CENTER].sum(axis=(1, 2)) / np.maximum(evidence.sum(axis=(1, 2)), 1e-12)


@pytest.fixture(scope="module")
def activation_maps(demo: Path) -> dict:
    """The demo members' served maps of fresh synthetic patches, the ensemble's map, and the patches'
    kinds and tumor masks."""
    patches, _ = generate_split(MAP_PATCHES, seed=MAP_SEED)
    manifest = load_release(demo)
    images = MacenkoNormalizer(manifest.stain_reference).normalize(patches.images).images
    answers = asyncio.run(
        OnnxMembers(demo, manifest, threads=2).try_logits(manifest.members, images, maps=True)
    )
    names = [m.name for m in manifest.members]
    members = np.stack([answers.activation_maps[name] for name in names], axis=1)
    temperatures, weights = member_rule(manifest)
    mask = patches.tumor_mask
    inside = mask[:, CENTER, CENTER].sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1)
    return {
        "ensemble": ensemble_map(members, temperatures, weights),
        "members": dict(zip(names, np.moveaxis(members, 1, 0), strict=True)),
        # Positives whose tumor lies mostly in the center: their evidence is there to be found.
        "center_positives": (patches.kinds == Kind.POSITIVE) & (inside >= 0.5),
        "decoys": patches.kinds == Kind.DECOY,
    }


def test_the_cam_of_a_periphery_only_decoy_lies_outside_the_center(activation_maps: dict) -> None:
    decoys = activation_maps["decoys"]
    assert decoys.sum() >= 80, "too few decoys to judge"
    assert np.median(center_share(activation_maps["ensemble"][decoys])) < 0.2


def test_the_cam_of_a_center_positive_concentrates_on_the_center(activation_maps: dict) -> None:
    """The center is 1/9 of the patch. The resnet member's map puts most of a center positive's
    evidence there; the mobilenet member's does not (its last 3x3 cells carry the center's evidence
    in the periphery cells, measured in docs/architecture.md#explanations), so the ensemble's map
    holds about half of it there: well above the area's share, short of "mostly"."""
    positives = activation_maps["center_positives"]
    assert positives.sum() >= 200, "too few center positives to judge"
    assert np.mean(center_share(activation_maps["members"]["resnet"][positives])) > 0.5
    assert np.mean(center_share(activation_maps["ensemble"][positives])) > 3 / 9
