"""Evaluate a built model repository on a PCam-layout split, with the serving code's own rules.

The split is stain-normalized with the release's reference (as the preprocess service does), each
member's ONNX graph runs through onnxruntime, and the logits are combined with the manifest's
temperatures and weights by `pcam_core.rule.combine`. Research use only.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import roc_curve

from pcam_core.conformal import prediction_sets
from pcam_core.release import ConformalRule, OperatingPoint, ReleaseManifest, load_release
from pcam_core.rule import combine_release
from training import metrics, stain
from training.data import pcam_h5
from training.graphs import member_onnx, onnx_logits, session
from training.metrics import BOOTSTRAP_ROUNDS, ECE_BINS, Confusion, Interval
from training.progress import with_progress

log = logging.getLogger(__name__)
SYNTHETIC_NOTE = "synthetic data: not a PCam result"


class PointResult(BaseModel):
    """The serving rule p >= threshold on the split: counts, BINARY_METRICS and their 95 % intervals."""

    model_config = ConfigDict(frozen=True)
    threshold: float
    criterion: str = ""
    """How the threshold was chosen on validation (the manifest's words)."""
    confusion: Confusion
    sensitivity: float | None
    specificity: float | None
    ppv: float | None
    npv: float | None
    accuracy: float
    kappa: float | None
    sensitivity_ci: Interval | None
    specificity_ci: Interval | None
    ppv_ci: Interval | None
    npv_ci: Interval | None
    accuracy_ci: Interval
    kappa_ci: Interval | None


class ConformalResult(BaseModel):
    """The release's prediction sets on the split: how often they hold the true label, and their size."""

    model_config = ConfigDict(frozen=True)
    target_coverage: float
    quantile: float
    coverage: float
    coverage_ci: Interval | None
    both_labels_share: float
    """Sets holding both labels: the patches the rule cannot decide at this coverage."""


def conformal_result(
    labels: np.ndarray, probability: np.ndarray, rule: ConformalRule, bootstrap: metrics.Bootstrap
) -> ConformalResult:
    """Empirical coverage of the rule's sets with its bootstrap interval (the same resamples as the rest)."""
    sets = prediction_sets(probability, rule.quantile)
    held = sets[np.arange(len(labels)), labels].astype(np.float64)
    totals = bootstrap.sums(np.stack([held, np.ones_like(held)], axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        resampled = totals[:, 0] / totals[:, 1]
    return ConformalResult(
        target_coverage=rule.coverage,
        quantile=rule.quantile,
        coverage=float(held.mean()),
        coverage_ci=metrics.interval(resampled),
        both_labels_share=float(sets.all(axis=1).mean()),
    )


class MemberResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    auc: float | None
    ece: float
    brier: float
    temperature: float
    weight: float


class RocCurve(BaseModel):
    """The ensemble's ROC curve (collinear points left out), for the figure."""

    model_config = ConfigDict(frozen=True)
    fpr: list[float]
    tpr: list[float]


class ReliabilityBin(BaseModel):
    """One equal-width probability bin of the ECE: its patches, mean probability, share of positives."""

    model_config = ConfigDict(frozen=True)
    lower: float
    upper: float
    patches: int
    confidence: float | None
    positive_rate: float | None


class EvaluationReport(BaseModel):
    model_config = ConfigDict(frozen=True)
    release_id: str
    research_use_only: bool = True
    data_source: str
    data_description: str
    note: str | None
    split: str
    data_dir: str
    patches: int
    prevalence: float
    bootstrap: str
    """What the intervals resample: 'slide' (meta CSV) or 'patch'."""
    bootstrap_units: int
    """How many slides (or patches) there are to resample."""
    bootstrap_rounds: int
    auc: float | None
    auc_ci: Interval | None
    ece: float
    ece_ci: Interval | None
    brier: float
    brier_ci: Interval | None
    members: dict[str, MemberResult]
    operating_points: dict[str, PointResult]
    roc: RocCurve | None
    """None when the split holds one class only."""
    reliability: list[ReliabilityBin]
    conformal: ConformalResult | None = None
    """None when the release has no conformal rule."""


def score_split(manifest: ReleaseManifest, repository: Path, x_path: Path, threads: int = 1) -> np.ndarray:
    """(N, M) member logits of a normalized split, members in manifest order."""
    patches = pcam_h5.count(x_path)
    return np.stack(
        [
            onnx_logits(
                session(member_onnx(repository, m.name, m.version), threads),
                with_progress(pcam_h5.iter_images(x_path), patches, f"scoring ({m.name})"),
            )
            for m in manifest.members
        ],
        axis=1,
    )


def evaluate(
    repository: Path,
    data: Path,
    split: str = "test",
    workdir: Path | None = None,
    threads: int = 1,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
) -> EvaluationReport:
    """Normalize, score, combine and measure; the normalized split goes to workdir (or a temp dir)."""
    manifest = load_release(repository)
    x_path, y_path = pcam_h5.split_files(data, split)
    missing = [str(p) for p in (x_path, y_path) if not p.exists()]
    if missing:
        raise FileNotFoundError(f"PCam files missing: {missing}")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="pcam-eval-") as tmp:
            return evaluate(repository, data, split, Path(tmp), threads, rounds, seed)
    normalized = stain.normalize_split(x_path, y_path, workdir / f"{split}.h5", manifest.stain_reference)
    labels = pcam_h5.read_labels(normalized.path).astype(int)
    logits = score_split(manifest, repository, normalized.path, threads)
    groups = pcam_h5.slide_ids(data, split, len(labels))
    return summarize(manifest, labels, logits, groups, split, str(data), rounds, seed)


def point_result(
    labels: np.ndarray, probability: np.ndarray, point: OperatingPoint, bootstrap: metrics.Bootstrap
) -> PointResult:
    """Every binary metric of one operating point, with its bootstrap intervals."""
    values = metrics.binary_metrics(labels, probability, point.threshold)
    intervals = metrics.binary_intervals(labels, probability, point.threshold, bootstrap)
    return PointResult(
        threshold=point.threshold,
        criterion=point.criterion,
        confusion=metrics.confusion(labels, probability, point.threshold),
        **values,
        **{f"{name}_ci": interval for name, interval in intervals.items()},
    )


def reliability_bins(
    probability: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> list[ReliabilityBin]:
    """The ECE's bins, for the reliability diagram."""
    count, summed, positives = metrics.reliability(probability, labels, bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence, rate = summed / count, positives / count
    return [
        ReliabilityBin(
            lower=i / bins,
            upper=(i + 1) / bins,
            patches=int(count[i]),
            confidence=float(confidence[i]) if count[i] else None,
            positive_rate=float(rate[i]) if count[i] else None,
        )
        for i in range(bins)
    ]


def summarize(
    manifest: ReleaseManifest,
    labels: np.ndarray,
    logits: np.ndarray,
    groups: np.ndarray | None = None,
    split: str = "test",
    data_dir: str = "",
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
    operating_points: Mapping[str, OperatingPoint] | None = None,
) -> EvaluationReport:
    """Measure (N, M) member logits against labels with the manifest's serving rule.

    operating_points defaults to the manifest's; every interval comes from one set of resamples.
    """
    labels = np.asarray(labels).astype(int).reshape(-1)
    combined = combine_release(logits, manifest)
    p = combined.probability
    bootstrap = metrics.Bootstrap(len(labels), groups, rounds, seed)
    members = {
        m.name: MemberResult(
            auc=metrics.auc(labels, logits[:, i]),
            ece=metrics.ece(combined.member_probabilities[:, i], labels),
            brier=metrics.brier(combined.member_probabilities[:, i], labels),
            temperature=m.temperature,
            weight=m.weight,
        )
        for i, m in enumerate(manifest.members)
    }
    points = operating_points if operating_points is not None else manifest.ensemble.operating_points
    both_classes = len(np.unique(labels)) == 2
    roc = None
    if both_classes:
        fpr, tpr, _ = roc_curve(labels, p)  # the curve calibration chose the operating points on
        roc = RocCurve(fpr=fpr.tolist(), tpr=tpr.tolist())
    return EvaluationReport(
        release_id=manifest.release_id,
        research_use_only=True,
        data_source=manifest.data.source,
        data_description=manifest.data.description,
        note=SYNTHETIC_NOTE if manifest.data.source == "synthetic" else None,
        split=split,
        data_dir=data_dir,
        patches=len(labels),
        prevalence=float(labels.mean()),
        bootstrap=bootstrap.unit,
        bootstrap_units=bootstrap.n_units,
        bootstrap_rounds=rounds,
        auc=metrics.auc(labels, p),
        auc_ci=metrics.auc_interval(labels, p, bootstrap),
        ece=metrics.ece(p, labels),
        ece_ci=metrics.ece_interval(p, labels, bootstrap),
        brier=metrics.brier(p, labels),
        brier_ci=metrics.brier_interval(p, labels, bootstrap),
        members=members,
        operating_points={name: point_result(labels, p, point, bootstrap) for name, point in points.items()},
        roc=roc,
        reliability=reliability_bins(p, labels),
        conformal=None
        if manifest.ensemble.conformal is None
        else conformal_result(labels, p, manifest.ensemble.conformal, bootstrap),
    )
