"""The ensemble rule: member logits to one calibrated probability and a decision (DESIGN.md section 5).

The single implementation: training imports it to choose operating points on exactly what serving
computes. Depends on numpy only, so the training image needs no web stack.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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


def combine(logits: np.ndarray, temperatures: Sequence[float], weights: Sequence[float]) -> EnsembleOutput:
    """Temperature-scale (N, M) logits per member and average with the members' weights."""
    weights = np.asarray(weights, dtype=np.float64)
    temperatures = np.asarray(temperatures, dtype=np.float64)
    member_probabilities = sigmoid(logits.astype(np.float64) / temperatures)
    probability = member_probabilities @ (weights / weights.sum())
    return EnsembleOutput(probability, member_probabilities, member_probabilities.std(axis=1))


def decide(probability: np.ndarray, threshold: float) -> np.ndarray:
    """Label 1 where the probability reaches the operating point's threshold."""
    return (probability >= threshold).astype(np.int64)
