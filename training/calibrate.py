"""Calibration on validation logits: temperature per member, weighted-mean ensemble, operating points.

The rules the ensemble service applies at serving time, frozen here (DESIGN.md section 5):
p_member = sigmoid(logit / T_member); p = sum(w * p_member) / sum(w); label = p >= threshold.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.metrics import roc_auc_score, roc_curve

from services.common.release import OPERATING_POINTS, EnsembleRule, OperatingPoint
from services.ensemble.calibration import combine

LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))
ECE_BINS = 15
SENSITIVITY_FLOOR = 0.95  # screening
SPECIFICITY_FLOOR = 0.95  # high_specificity
BOOTSTRAP_ROUNDS = 1000
CRITERIA = {
    "screening": f"highest specificity with sensitivity >= {SENSITIVITY_FLOOR}",
    "balanced": "Youden's J (sensitivity + specificity - 1) maximal",
    "high_specificity": f"highest sensitivity with specificity >= {SPECIFICITY_FLOOR}",
}


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean binary negative log-likelihood of sigmoid(logits / T), computed stably from logits."""
    z = np.asarray(logits, np.float64) / temperature
    return float(np.mean(np.logaddexp(0.0, z) - np.asarray(labels, np.float64) * z))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimizing validation NLL (searched over log T, so T stays positive)."""
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: bin-weighted |mean confidence - accuracy| over equal-width bins."""
    p = np.asarray(probabilities, np.float64)
    y = np.asarray(labels, np.float64)
    index = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins)
    gap = np.abs(
        np.bincount(index, weights=p, minlength=bins) - np.bincount(index, weights=y, minlength=bins)
    )
    return float(gap.sum() / max(count.sum(), 1))


def ensemble_probability(
    logits: Mapping[str, np.ndarray], temperatures: Mapping[str, float], weights: Mapping[str, float]
) -> np.ndarray:
    """Weighted mean of the members' calibrated probabilities, by the serving code's own rule."""
    names = list(logits)
    stacked = np.stack([np.asarray(logits[n], np.float64).reshape(-1) for n in names], axis=1)
    return combine(stacked, [temperatures[n] for n in names], [weights[n] for n in names]).probability


def rates(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of the rule score >= threshold."""
    predicted = scores >= threshold
    positive = labels == 1
    return float(predicted[positive].mean()), float((~predicted[~positive]).mean())


def operating_points(labels: np.ndarray, scores: np.ndarray) -> dict[str, OperatingPoint]:
    """screening, balanced and high_specificity thresholds on probabilities, chosen on validation."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, np.float64)
    if len(np.unique(labels)) != 2:
        raise ValueError("operating points need both classes in the validation labels")
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    spec = 1 - fpr
    # roc_curve's first threshold is +inf (nothing positive); a probability threshold must be <= 1.
    thresholds = np.minimum(thresholds, 1.0)
    chosen = {
        # Thresholds decrease along the curve: the first point meeting the sensitivity floor has the
        # highest threshold there, hence the highest specificity; symmetric for the other floor.
        "screening": int(np.flatnonzero(tpr >= SENSITIVITY_FLOOR)[0]),
        "balanced": int(np.argmax(tpr - fpr)),
        "high_specificity": int(np.flatnonzero(spec >= SPECIFICITY_FLOOR)[-1]),
    }
    points = {}
    for name in OPERATING_POINTS:
        threshold = float(thresholds[chosen[name]])
        sensitivity, specificity = rates(labels, scores, threshold)
        points[name] = OperatingPoint(
            threshold=threshold, sensitivity=sensitivity, specificity=specificity, criterion=CRITERIA[name]
        )
    return points


def bootstrap_rates(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    groups: np.ndarray | None = None,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of sensitivity and specificity at a fixed threshold.

    Resamples groups (slides) when given, patches otherwise: patches of one slide are not independent.
    """
    groups = np.arange(len(labels)) if groups is None else np.unique(groups, return_inverse=True)[1]
    predicted = scores >= threshold
    positive = labels == 1
    # Per group: true positives, positives, true negatives, negatives; resampling groups sums these.
    counts = np.stack(
        [np.bincount(groups, weights=w, minlength=groups.max() + 1) for w in
         (predicted & positive, positive, ~predicted & ~positive, ~positive)],
        axis=1,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(counts), size=(rounds, len(counts)))
    totals = np.stack([counts[d].sum(axis=0) for d in draws])
    with np.errstate(invalid="ignore", divide="ignore"):
        sens, spec = totals[:, 0] / totals[:, 1], totals[:, 2] / totals[:, 3]
    return {
        "sensitivity": tuple(np.nanpercentile(sens, [2.5, 97.5]).tolist()),
        "specificity": tuple(np.nanpercentile(spec, [2.5, 97.5]).tolist()),
    }


class MemberCalibration(BaseModel):
    model_config = ConfigDict(frozen=True)
    temperature: float
    weight: float
    metrics: dict[str, float]


class Calibration(BaseModel):
    """What calibration decides, in the manifest's own types (written to the work dir as JSON)."""

    model_config = ConfigDict(frozen=True)
    members: dict[str, MemberCalibration]
    ensemble: EnsembleRule


def calibrate(
    logits: Mapping[str, np.ndarray],
    labels: np.ndarray,
    weights: Mapping[str, float],
    groups: np.ndarray | None = None,
) -> Calibration:
    """Fit temperatures, combine, choose operating points and measure everything on validation."""
    labels = np.asarray(labels).astype(int)
    members, temperatures = {}, {}
    for name, z in logits.items():
        t = temperatures[name] = fit_temperature(z, labels)
        members[name] = MemberCalibration(
            temperature=t,
            weight=weights[name],
            metrics={
                "auc": float(roc_auc_score(labels, z)),
                "nll_before": nll(z, labels),
                "nll_after": nll(z, labels, t),
                "ece_before": ece(expit(z), labels),
                "ece_after": ece(expit(z / t), labels),
            },
        )
    p = ensemble_probability(logits, temperatures, weights)
    points = operating_points(labels, p)
    uncalibrated = ensemble_probability(logits, dict.fromkeys(logits, 1.0), weights)
    metrics = {
        "auc": float(roc_auc_score(labels, p)),
        "nll": float(np.mean(-np.log(np.clip(np.where(labels == 1, p, 1 - p), 1e-12, None)))),
        "ece_before": ece(uncalibrated, labels),
        "ece_after": ece(p, labels),
        "validation_patches": float(len(labels)),
        "validation_prevalence": float(labels.mean()),
    }
    for name, point in points.items():
        for rate, (low, high) in bootstrap_rates(labels, p, point.threshold, groups).items():
            metrics[f"{name}_{rate}_ci_low"], metrics[f"{name}_{rate}_ci_high"] = low, high
    return Calibration(members=members, ensemble=EnsembleRule(operating_points=points, metrics=metrics))
