"""`pcam cv`: k-fold stratified cross-validation of members on the training split.

Each fold trains on k-1 parts of the normalized training split, picks its best epoch on the official
validation split (as `pcam train` does) and is scored on the held-out part, which never steers any
choice, so the fold AUCs are unbiased. Folds are grouped by slide when the meta CSV has slide ids,
so patches of one slide never sit on both sides of a split.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from torch.utils.data import Dataset, Subset

from training.config import MemberConfig
from training.distributed import SINGLE, Distributed
from training.tracking import NullTracker, Tracker
from training.train import auc, load_checkpoint, predict_logits, train_member, training_device

log = logging.getLogger(__name__)
DEFAULT_FOLDS = 5


class LabelledSubset(Subset):
    """A Subset that keeps the `labels` array the trainer uses (loss weights, run fingerprint)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        super().__init__(dataset, indices)
        self.labels = np.asarray(dataset.labels)[np.asarray(indices)]


class FoldResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    fold: int
    train_patches: int
    held_out_patches: int
    best_epoch: int
    valid_auc: float
    held_out_auc: float


class MemberCV(BaseModel):
    model_config = ConfigDict(frozen=True)
    folds: list[FoldResult]
    mean_auc: float
    std_auc: float


class CVReport(BaseModel):
    model_config = ConfigDict(frozen=True)
    research_use_only: bool = True
    data_source: str
    k: int
    grouped_by: str
    """'slide' (meta CSV) or 'patch'."""
    members: dict[str, MemberCV]


def fold_indices(
    labels: np.ndarray, k: int, seed: int, groups: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) index pairs of k stratified folds, grouped when groups are given."""
    placeholder = np.zeros(len(labels))
    if groups is not None:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return list(splitter.split(placeholder, labels, groups))
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(placeholder, labels))


def summarize_folds(folds: list[FoldResult]) -> MemberCV:
    """Mean and sample standard deviation of the held-out AUCs."""
    aucs = [f.held_out_auc for f in folds]
    return MemberCV(
        folds=folds, mean_auc=statistics.fmean(aucs), std_auc=statistics.stdev(aucs) if len(aucs) > 1 else 0.0
    )


def cross_validate_member(
    member: MemberConfig,
    train_set: Dataset,
    valid_set: Dataset,
    folds: list[tuple[np.ndarray, np.ndarray]],
    seed: int,
    directory: Path,
    tracker: Tracker | None = None,
    job: Distributed = SINGLE,
) -> MemberCV:
    """Train and score one member on every fold; each fold checkpoints (and resumes) in its own folder."""
    tracker = tracker or NullTracker()
    results = []
    for number, (train_idx, held_idx) in enumerate(folds, start=1):
        checkpoint = directory / f"fold-{number}" / "checkpoint.pt"
        with tracker.child(f"{member.name}/fold-{number}") as run:
            run.log_params({"member": member.name, "fold": number, "seed": seed + number})
            trained = train_member(
                member, LabelledSubset(train_set, train_idx), valid_set, valid_set.labels, seed + number,
                checkpoint, job=job,
            )  # fmt: skip
            held_out = LabelledSubset(train_set, held_idx)
            model = load_checkpoint(checkpoint).to(job.device() if job.enabled else training_device())
            held_out_auc = auc(held_out.labels, predict_logits(model, held_out))
            result = FoldResult(
                fold=number,
                train_patches=len(train_idx),
                held_out_patches=len(held_idx),
                best_epoch=trained.best_epoch,
                valid_auc=trained.best_auc,
                held_out_auc=held_out_auc,
            )
            run.log_metrics({"valid_auc": result.valid_auc, "held_out_auc": held_out_auc})
        log.info("%s fold %d/%d: held-out AUC %.4f", member.name, number, len(folds), held_out_auc)
        results.append(result)
    return summarize_folds(results)
