"""Evaluate a built model repository on a PCam-layout split, with the serving code's own rules.

The split is stain-normalized with the release's reference (as the preprocess service does), each
member's ONNX graph runs through onnxruntime, and the logits are combined with the manifest's
temperatures and weights by `services.ensemble.calibration.combine`. Research use only.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import roc_auc_score

from services.common.release import ReleaseManifest, load_release
from services.ensemble.calibration import combine, decide, sigmoid
from training import stain
from training.calibrate import BOOTSTRAP_ROUNDS, bootstrap_rates, ece
from training.data import pcam_h5
from training.export import onnx_logits, session

log = logging.getLogger(__name__)
SYNTHETIC_NOTE = "synthetic data: not a PCam result"
SLIDE_COLUMN = "wsi"


class PointResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    threshold: float
    sensitivity: float | None
    specificity: float | None
    accuracy: float
    sensitivity_ci: tuple[float, float] | None
    specificity_ci: tuple[float, float] | None
    accuracy_ci: tuple[float, float]


class MemberResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    auc: float | None
    ece: float
    temperature: float
    weight: float


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
    auc: float | None
    ece: float
    members: dict[str, MemberResult]
    operating_points: dict[str, PointResult]


def member_onnx(repository: Path, name: str, version: int = 1) -> Path:
    """Where a member's ONNX graph lives in a model repository."""
    return repository / name / str(version) / "model.onnx"


def slide_groups(directory: Path, split: str, n: int) -> np.ndarray | None:
    """The slide of each patch from the split's meta CSV, as the pipeline reads it; None without one."""
    path = pcam_h5.meta_file(directory, split)
    if not path.exists():
        return None
    with path.open(newline="") as f:
        header = next(csv.reader(f), [])
    if SLIDE_COLUMN not in header:
        log.warning("%s has no %r column: intervals resample patches", path, SLIDE_COLUMN)
        return None
    slides = pcam_h5.read_slide_ids(path)
    if slides is not None and len(slides) != n:
        raise ValueError(f"{path}: {len(slides)} rows but {n} patches")
    return slides


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else None


def score_split(manifest: ReleaseManifest, repository: Path, x_path: Path, threads: int = 1) -> np.ndarray:
    """(N, M) member logits of a normalized split, members in manifest order."""
    return np.stack(
        [
            onnx_logits(
                session(member_onnx(repository, m.name, m.version), threads), pcam_h5.iter_images(x_path)
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
    temperatures = [m.temperature for m in manifest.members]
    weights = [m.weight for m in manifest.members]
    combined = combine(logits, temperatures, weights)
    p = combined.probability
    groups = slide_groups(data, split, len(labels))

    members = {
        m.name: MemberResult(
            auc=_auc(labels, logits[:, i]),
            ece=ece(sigmoid(logits[:, i].astype(np.float64) / m.temperature), labels),
            temperature=m.temperature,
            weight=m.weight,
        )
        for i, m in enumerate(manifest.members)
    }
    positive = labels == 1
    points = {}
    for name, point in manifest.ensemble.operating_points.items():
        predicted = decide(p, point.threshold)
        intervals = bootstrap_rates(labels, p, point.threshold, groups, rounds, seed)
        points[name] = PointResult(
            threshold=point.threshold,
            sensitivity=float(predicted[positive].mean()) if positive.any() else None,
            specificity=float((predicted[~positive] == 0).mean()) if (~positive).any() else None,
            accuracy=float((predicted == labels).mean()),
            sensitivity_ci=intervals["sensitivity"] if positive.any() else None,
            specificity_ci=intervals["specificity"] if (~positive).any() else None,
            accuracy_ci=intervals["accuracy"],
        )
    return EvaluationReport(
        release_id=manifest.release_id,
        research_use_only=True,
        data_source=manifest.data.source,
        data_description=manifest.data.description,
        note=SYNTHETIC_NOTE if manifest.data.source == "synthetic" else None,
        split=split,
        data_dir=str(data),
        patches=len(labels),
        prevalence=float(labels.mean()),
        bootstrap="slide" if groups is not None else "patch",
        auc=_auc(labels, p),
        ece=ece(p, labels),
        members=members,
        operating_points=points,
    )
