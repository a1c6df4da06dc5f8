"""`pcam cv`: stratified, slide-grouped folds and held-out AUCs that can be recomputed from the folds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from training.cli import app
from training.cv import FoldResult, LabelledSubset, fold_indices, summarize_folds
from training.data.pcam_h5 import PCamH5Dataset, slide_ids
from training.train import load_checkpoint, predict_logits


def test_folds_partition_the_data_stratified_and_never_split_a_slide():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 25)
    labels = (rng.random(len(groups)) < 0.4).astype(int)
    folds = fold_indices(labels, 5, seed=0, groups=groups)
    held = np.concatenate([h for _, h in folds])
    assert len(folds) == 5 and sorted(held) == list(range(len(labels)))
    for train, held_out in folds:
        assert not set(groups[train]) & set(groups[held_out])
        assert abs(labels[held_out].mean() - labels.mean()) < 0.1


def test_folds_without_slides_are_stratified_by_patch():
    labels = np.array([0] * 80 + [1] * 20)
    for _, held_out in fold_indices(labels, 5, seed=1):
        assert labels[held_out].sum() == 4 and len(held_out) == 20


def test_summary_is_mean_and_sample_sd():
    folds = [
        FoldResult(fold=i, train_patches=8, held_out_patches=2, best_epoch=1, valid_auc=0.5, held_out_auc=a)
        for i, a in enumerate((0.7, 0.8, 0.9), 1)
    ]
    summary = summarize_folds(folds)
    assert summary.mean_auc == pytest.approx(0.8) and summary.std_auc == pytest.approx(0.1)


def test_pcam_cv_reports_held_out_aucs_of_its_fold_checkpoints(tmp_path: Path, tiny_config, staged):
    config, work = staged(tiny_config("cv", train=256, seed=3), tmp_path)
    result = CliRunner().invoke(app, ["cv", "-c", str(config), "-w", str(work), "--folds", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads((work / "cv" / "report.json").read_text())
    assert report["k"] == 2 and report["grouped_by"] == "slide" and report["data_source"] == "synthetic"

    train_set = PCamH5Dataset(work / "normalized" / "train.h5")
    slides = slide_ids(work / "data", "train", len(train_set))
    folds = fold_indices(train_set.labels, 2, 3, slides)
    member = report["members"]["resnet"]
    for fold, (train_idx, held_idx) in zip(member["folds"], folds, strict=True):
        assert fold["train_patches"] == len(train_idx) and fold["held_out_patches"] == len(held_idx)
        model = load_checkpoint(work / "cv" / "resnet" / f"fold-{fold['fold']}" / "checkpoint.pt")
        held_out = LabelledSubset(train_set, held_idx)
        expected = roc_auc_score(held_out.labels, predict_logits(model, held_out))
        assert fold["held_out_auc"] == pytest.approx(expected, abs=1e-12)
    assert member["mean_auc"] == pytest.approx(np.mean([f["held_out_auc"] for f in member["folds"]]))
    assert "2-fold cross-validation" in result.output


def test_cv_with_more_folds_than_slides_says_so(tmp_path: Path, tiny_config, staged):
    config, work = staged(tiny_config("cv", train=64), tmp_path)
    result = CliRunner().invoke(app, ["cv", "-c", str(config), "-w", str(work), "--folds", "5"])
    assert result.exit_code == 1
    assert "n_splits=5" in result.output and "groups" in result.output


def test_slide_ids_fall_back_to_none_without_a_wsi_column_and_refuse_a_wrong_length(tmp_path: Path, caplog):
    from training.data.pcam_h5 import meta_file

    meta_file(tmp_path, "valid").write_text(",coord_y,coord_x,wsi\n0,0,0,a\n1,0,96,b\n")
    assert list(slide_ids(tmp_path, "valid", 2)) == ["a", "b"]
    with pytest.raises(ValueError, match="2 rows but the split has 3 patches"):
        slide_ids(tmp_path, "valid", 3)
    meta_file(tmp_path, "test").write_text(",coord_y,coord_x\n0,0,0\n")
    assert slide_ids(tmp_path, "test", 1) is None
    assert "no 'wsi' column" in caplog.text
    assert slide_ids(tmp_path, "train", 5) is None  # no CSV at all
