"""Split-conformal prediction sets for the tumor decision (Vovk et al. 2005; the LAC score of Sadinle,
Lei and Wasserman 2019).

A label's nonconformity is 1 - p_label (p_1 = the ensemble's probability, p_0 = 1 - p). On a
calibration split of n patches the quantile q is the ceil((n + 1) * coverage)-th smallest score of the
true labels; a patch's set holds every label whose score is at most q. For a new patch exchangeable
with the calibration split, the set contains its true label with probability at least `coverage`.
Where no label qualifies (possible when q < 0.5: a patch near 0.5 under an accurate model), the set
holds the more probable label (1 on a tie, as p >= 0.5 would decide) instead of being empty: adding
a label never lowers coverage.

The single implementation: training fits the quantile, the ensemble service applies it. numpy only.
"""

import math

import numpy as np

LABELS = (0, 1)
DEFAULT_COVERAGE = 0.95


def _label_probabilities(probability: np.ndarray) -> np.ndarray:
    """(N, 2): p_0, p_1 per patch."""
    p = np.asarray(probability, np.float64).reshape(-1)
    return np.stack([1.0 - p, p], axis=1)


def conformal_quantile(probability: np.ndarray, labels: np.ndarray, coverage: float) -> float:
    """q fitted on a calibration split: the ceil((n + 1) * coverage)-th smallest 1 - p_true.

    1.0 (every set holds both labels) when the split is too small for that coverage.
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must lie in (0, 1), got {coverage}")
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    scores = 1.0 - _label_probabilities(probability)[np.arange(len(labels)), labels]
    rank = math.ceil((len(scores) + 1) * coverage)
    if rank > len(scores):
        return 1.0
    return float(np.partition(scores, rank - 1)[rank - 1])


def prediction_sets(probability: np.ndarray, quantile: float) -> np.ndarray:
    """(N, 2) bool: whether label 0 and label 1 are in each patch's set (never both false)."""
    label_p = _label_probabilities(probability)
    members = 1.0 - label_p <= quantile
    empty = ~members.any(axis=1)
    members[empty, (label_p[empty, 1] >= label_p[empty, 0]).astype(np.int64)] = True
    return members


def as_lists(sets: np.ndarray) -> list[list[int]]:
    """Each row of `prediction_sets` as the labels it holds: [0], [1] or [0, 1]."""
    return [[label for label, held in zip(LABELS, row, strict=True) if held] for row in sets.tolist()]
