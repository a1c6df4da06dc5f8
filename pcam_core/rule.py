"""The ensemble rule: member logits to one calibrated probability and a decision.

p_member = sigmoid(logit / T_member); p_mean = sum(w * p_member) / sum(w);
p = sigmoid(logit(p_mean) / T_ensemble) (averaging calibrated members pulls toward 0.5, so the mean
is recalibrated once more; T_ensemble = 1 leaves it as is); label = p >= threshold. When only some
members answered (a degraded answer, opt-in in serving), the same rule runs over those members: their
weights renormalized, T_ensemble unchanged.

The single implementation: training imports it to choose operating points on exactly what serving
computes. Depends on numpy only, so the training image needs no web stack.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pcam_core.release import ReleaseManifest


@dataclass(frozen=True)
class EnsembleOutput:
    probability: np.ndarray
    """(N,) the ensemble's calibrated probability (recalibrated weighted mean of the members')."""
    member_probabilities: np.ndarray
    """(N, M) calibrated probability per member, in manifest order."""
    uncertainty: np.ndarray
    """(N,) standard deviation of the member probabilities (with TTA: across views and members)."""
    view_spread: np.ndarray | None = None
    """With TTA: (N,) standard deviation of the ensemble's probability across the views."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return np.exp(-np.logaddexp(0.0, -x))


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log(sigmoid(x)), finite for every finite x."""
    return -np.logaddexp(0.0, -x)


def _normalized(weights: Sequence[float]) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    return weights / weights.sum()


def ensemble_logit(logits: np.ndarray, temperatures: Sequence[float], weights: Sequence[float]) -> np.ndarray:
    """logit of the weighted mean of calibrated member probabilities, computed in log space.

    Stays finite where the mean itself rounds to exactly 0 or 1 (confident members emit logits in the
    hundreds), so an ensemble temperature can still be fitted and applied there.
    """
    z = logits.astype(np.float64) / np.asarray(temperatures, dtype=np.float64)
    log_w = np.log(_normalized(weights))
    log_p = np.logaddexp.reduce(log_w + log_sigmoid(z), axis=1)
    log_not_p = np.logaddexp.reduce(log_w + log_sigmoid(-z), axis=1)
    return log_p - log_not_p


def combine(
    logits: np.ndarray,
    temperatures: Sequence[float],
    weights: Sequence[float],
    ensemble_temperature: float = 1.0,
) -> EnsembleOutput:
    """Temperature-scale (N, M) logits per member, average with the members' weights, recalibrate the mean."""
    member_probabilities = sigmoid(logits.astype(np.float64) / np.asarray(temperatures, dtype=np.float64))
    if ensemble_temperature == 1.0:
        probability = member_probabilities @ _normalized(weights)
    else:
        probability = sigmoid(ensemble_logit(logits, temperatures, weights) / ensemble_temperature)
    return EnsembleOutput(probability, member_probabilities, member_probabilities.std(axis=1))


def member_rule(
    release: "ReleaseManifest", members: Sequence[str] | None = None
) -> tuple[list[float], list[float]]:
    """Temperatures and weights of the named members (default: all, in manifest order)."""
    chosen = release.members
    if members is not None:
        by_name = {m.name: m for m in release.members}
        unknown = [name for name in members if name not in by_name]
        if unknown:
            raise ValueError(f"not members of release {release.release_id}: {unknown}")
        chosen = tuple(by_name[name] for name in members)
    return [m.temperature for m in chosen], [m.weight for m in chosen]


def combine_release(
    logits: np.ndarray, release: "ReleaseManifest", members: Sequence[str] | None = None
) -> EnsembleOutput:
    """combine() with a release's member temperatures and weights and its ensemble temperature.

    `members` names the columns of `logits` when only some members answered (a degraded answer): the
    weights are renormalized over those members and the ensemble temperature still applies.
    """
    temperatures, weights = member_rule(release, members)
    if logits.shape[-1] != len(weights):
        raise ValueError(f"{logits.shape[-1]} logit columns for {len(weights)} members")
    return combine(logits, temperatures, weights, release.ensemble.temperature)


def combine_views(
    view_logits: np.ndarray, release: "ReleaseManifest", members: Sequence[str] | None = None
) -> EnsembleOutput:
    """Test-time augmentation: (V, N, M) logits of V views of N patches to one output per patch.

    The probability is the mean of the views' calibrated ensemble probabilities (docs/architecture.md#test-time-augmentation);
    the uncertainty is the spread across views and members; member probabilities are view means.
    `members` as in combine_release.
    """
    views, n, m = view_logits.shape
    out = combine_release(view_logits.reshape(views * n, m), release, members)
    members_p = out.member_probabilities.reshape(views, n, m)
    by_view = out.probability.reshape(views, n)
    return EnsembleOutput(
        probability=by_view.mean(axis=0),
        member_probabilities=members_p.mean(axis=0),
        uncertainty=members_p.transpose(1, 0, 2).reshape(n, views * m).std(axis=1),
        view_spread=by_view.std(axis=0),
    )


def feature_score(distances: np.ndarray, scales: Sequence[float], weights: Sequence[float]) -> np.ndarray:
    """(N,) the feature_outlier flag's score: the members' weighted mean of their (N, M) feature
    distances, each divided by its scale (its median on validation), so members count alike."""
    return (np.asarray(distances, np.float64) / np.asarray(scales, np.float64)) @ _normalized(weights)


def decide(probability: np.ndarray, threshold: float) -> np.ndarray:
    """Label 1 where the probability reaches the operating point's threshold."""
    return (probability >= threshold).astype(np.int64)
