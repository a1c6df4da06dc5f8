"""Turning member logits into one calibrated probability and a decision (DESIGN.md section 5)."""

from dataclasses import dataclass

import numpy as np

from services.common.inference import EnsemblePrediction, InferResponse
from services.common.release import Member, ReleaseManifest


@dataclass(frozen=True)
class EnsembleOutput:
    probability: np.ndarray
    """(N,) weighted mean of calibrated member probabilities."""
    member_probabilities: np.ndarray
    """(N, M) calibrated probability per member, in manifest order."""
    uncertainty: np.ndarray
    """(N,) standard deviation of the member probabilities."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return np.exp(-np.logaddexp(0.0, -x))


def combine(logits: np.ndarray, members: tuple[Member, ...]) -> EnsembleOutput:
    """Temperature-scale (N, M) logits per member and average with the members' weights."""
    temperatures = np.array([m.temperature for m in members])
    weights = np.array([m.weight for m in members])
    member_probabilities = sigmoid(logits.astype(np.float64) / temperatures)
    probability = member_probabilities @ (weights / weights.sum())
    return EnsembleOutput(probability, member_probabilities, member_probabilities.std(axis=1))


def decide(probability: np.ndarray, threshold: float) -> np.ndarray:
    """Label 1 where the probability reaches the operating point's threshold."""
    return (probability >= threshold).astype(np.int64)


def answer(logits: np.ndarray, release: ReleaseManifest, operating_point: str) -> InferResponse:
    """Calibrated probabilities, decisions and uncertainty for (N, M) member logits."""
    point = release.ensemble.operating_points[operating_point]
    output = combine(logits, release.members)
    labels = decide(output.probability, point.threshold)
    names = [m.name for m in release.members]
    results = [
        EnsemblePrediction(
            probability=float(probability),
            label=int(label),
            uncertainty=float(uncertainty),
            members=dict(zip(names, map(float, member_probabilities), strict=True)),
        )
        for probability, label, uncertainty, member_probabilities in zip(
            output.probability, labels, output.uncertainty, output.member_probabilities, strict=True
        )
    ]
    return InferResponse(
        release=release.release_id,
        operating_point=operating_point,
        threshold=point.threshold,
        results=results,
    )
