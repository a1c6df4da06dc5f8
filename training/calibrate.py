"""Calibration on validation logits: temperature per member, weighted-mean ensemble, an ensemble
temperature, operating points.

The rule the ensemble service applies at serving time (pcam_core.rule), frozen here
(docs/architecture.md#calibration-and-operating-points): p_member = sigmoid(logit / T_member); p_mean = sum(w * p_member) / sum(w);
p = sigmoid(logit(p_mean) / T_ensemble); label = p >= threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.metrics import roc_auc_score, roc_curve

from pcam_core.conformal import DEFAULT_COVERAGE, conformal_quantile, prediction_sets
from pcam_core.release import (
    OPERATING_POINTS,
    ConformalRule,
    EnsembleRule,
    OperatingPoint,
    Precision,
    ReviewRules,
)
from pcam_core.rule import combine, ensemble_logit
from training.metrics import BOOTSTRAP_ROUNDS, Bootstrap, Interval, binary_intervals, ece

log = logging.getLogger(__name__)
LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))
SENSITIVITY_FLOOR = 0.95  # screening
SPECIFICITY_FLOOR = 0.95  # high_specificity
NOT_PAST_BALANCED = ", never past the balanced threshold"
CRITERIA_LOWER_CI = {
    "screening": f"highest specificity with the 95 % CI lower bound of sensitivity >= {SENSITIVITY_FLOOR}"
    + NOT_PAST_BALANCED,
    "balanced": "Youden's J (sensitivity + specificity - 1) maximal",
    "high_specificity": "highest sensitivity with the 95 % CI lower bound of specificity >= "
    f"{SPECIFICITY_FLOOR}" + NOT_PAST_BALANCED,
}
CRITERIA = {
    "screening": f"highest specificity with sensitivity >= {SENSITIVITY_FLOOR}" + NOT_PAST_BALANCED,
    "balanced": "Youden's J (sensitivity + specificity - 1) maximal",
    "high_specificity": f"highest sensitivity with specificity >= {SPECIFICITY_FLOOR}" + NOT_PAST_BALANCED,
}


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean binary negative log-likelihood of sigmoid(logits / T), computed stably from logits."""
    z = np.asarray(logits, np.float64) / temperature
    return float(np.mean(np.logaddexp(0.0, z) - np.asarray(labels, np.float64) * z))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimizing validation NLL (searched over log T, so T stays positive)."""
    if not np.all(np.isfinite(logits)):
        raise ValueError("temperature scaling needs finite logits")
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    temperature = float(np.exp(result.x))
    if min(abs(result.x - bound) for bound in LOG_T_BOUNDS) < 1e-3:
        log.warning(
            "fitted temperature %.3g sits at the search bound: the logits may be degenerate", temperature
        )
    return temperature


def ensemble_probability(
    logits: Mapping[str, np.ndarray],
    temperatures: Mapping[str, float],
    weights: Mapping[str, float],
    ensemble_temperature: float = 1.0,
) -> np.ndarray:
    """The ensemble's probability from member logits, by the serving code's own rule."""
    return combine(*_in_member_order(logits, temperatures, weights), ensemble_temperature).probability


def _in_member_order(
    logits: Mapping[str, np.ndarray], temperatures: Mapping[str, float], weights: Mapping[str, float]
) -> tuple[np.ndarray, list[float], list[float]]:
    """(N, M) logits with the members' temperatures and weights, as the serving rule takes them."""
    names = list(logits)
    stacked = np.stack([np.asarray(logits[n], np.float64).reshape(-1) for n in names], axis=1)
    return stacked, [temperatures[n] for n in names], [weights[n] for n in names]


def rates(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of the rule score >= threshold."""
    predicted = scores >= threshold
    positive = labels == 1
    return float(predicted[positive].mean()), float((~predicted[~positive]).mean())


def operating_points(
    labels: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray | None = None,
    guarantee: Literal["point", "lower_ci"] = "lower_ci",
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
) -> dict[str, OperatingPoint]:
    """screening, balanced and high_specificity thresholds on probabilities, chosen on validation.

    With `guarantee="lower_ci"` (docs/architecture.md#operating-point-rule) a floor must hold for the lower bound of the
    95 % bootstrap interval (by group when given), not only for the point estimate. Thresholds are
    always ordered: screening <= balanced <= high_specificity.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, np.float64)
    if len(np.unique(labels)) != 2:
        raise ValueError("operating points need both classes in the validation labels")
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    spec = 1 - fpr
    # roc_curve's first threshold is +inf (nothing positive); a probability threshold must be <= 1.
    thresholds = np.minimum(thresholds, 1.0)
    # Thresholds decrease along the curve: the first point meeting the sensitivity floor has the
    # highest threshold there, hence the highest specificity; symmetric for the other floor.
    chosen = {
        "screening": float(thresholds[np.flatnonzero(tpr >= SENSITIVITY_FLOOR)[0]]),
        "balanced": float(thresholds[np.argmax(tpr - fpr)]),
        "high_specificity": float(thresholds[np.flatnonzero(spec >= SPECIFICITY_FLOOR)[-1]]),
    }
    if guarantee == "lower_ci":
        bounds = _BootstrapBounds(labels, scores, groups, rounds, seed)
        chosen["screening"] = bounds.highest_threshold_keeping_sensitivity(
            SENSITIVITY_FLOOR, chosen["screening"]
        )
        chosen["high_specificity"] = bounds.lowest_threshold_keeping_specificity(
            SPECIFICITY_FLOOR, chosen["high_specificity"]
        )
    # A strong model meets both floors over a whole range of thresholds, where the two rules taken
    # literally cross. Screening is never meant to be less sensitive than balanced, nor
    # high_specificity less specific: clamp at balanced, where both floors still hold.
    chosen["screening"] = min(chosen["screening"], chosen["balanced"])
    chosen["high_specificity"] = max(chosen["high_specificity"], chosen["balanced"])
    criteria = CRITERIA if guarantee == "point" else CRITERIA_LOWER_CI
    points = {}
    for name in OPERATING_POINTS:
        sensitivity, specificity = rates(labels, scores, chosen[name])
        points[name] = OperatingPoint(
            threshold=chosen[name], sensitivity=sensitivity, specificity=specificity, criterion=criteria[name]
        )
    return points


class _BootstrapBounds:
    """Lower 2.5 % bootstrap bounds of sensitivity/specificity over candidate thresholds.

    Resamples groups (slides) when given, patches otherwise, with `training.metrics.Bootstrap`'s draws;
    weights are per-resample counts of each unit, so one (rounds x patches) weighted cumulative sum gives a rate at every threshold at once.
    """

    def __init__(
        self, labels: np.ndarray, scores: np.ndarray, groups: np.ndarray | None, rounds: int, seed: int
    ):
        bootstrap = Bootstrap(len(labels), groups, rounds, seed)
        units = bootstrap.units
        counts = np.concatenate([d.astype(np.float32) for d in bootstrap.draws()])
        self.candidates = np.unique(scores)
        self._below = {}  # class -> (rounds x candidates) weighted count of class scores < candidate
        self._total = {}
        for cls in (0, 1):
            order = np.argsort(scores[labels == cls], kind="stable")
            sorted_scores = scores[labels == cls][order]
            weights = counts[:, units[labels == cls][order]]
            cumulative = np.concatenate(
                [np.zeros((rounds, 1), np.float32), np.cumsum(weights, axis=1)], axis=1
            )
            self._below[cls] = cumulative[:, np.searchsorted(sorted_scores, self.candidates, side="left")]
            self._total[cls] = cumulative[:, -1]

    def _lower(self, cls: int, rate_of_below: bool) -> np.ndarray:
        # A resample without the class has no rate at any threshold: its whole row is left out.
        drawn = self._total[cls] > 0
        if not drawn.any():
            return np.full(len(self.candidates), np.nan)
        share_below = self._below[cls][drawn] / self._total[cls][drawn, None]
        return np.percentile(share_below if rate_of_below else 1.0 - share_below, 2.5, axis=0)

    def highest_threshold_keeping_sensitivity(self, floor: float, at_most: float) -> float:
        """The highest candidate <= at_most whose sensitivity lower bound reaches floor."""
        ok = (self._lower(1, rate_of_below=False) >= floor) & (self.candidates <= at_most)
        return float(self.candidates[np.flatnonzero(ok)[-1]]) if ok.any() else float(self.candidates[0])

    def lowest_threshold_keeping_specificity(self, floor: float, at_least: float) -> float:
        """The lowest candidate >= at_least whose specificity lower bound reaches floor."""
        ok = (self._lower(0, rate_of_below=True) >= floor) & (self.candidates >= at_least)
        return float(self.candidates[np.flatnonzero(ok)[0]]) if ok.any() else 1.0


def bootstrap_rates(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    groups: np.ndarray | None = None,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
) -> dict[str, Interval | None]:
    """95 % percentile intervals of sensitivity, specificity and accuracy at a fixed threshold.

    Resamples groups (slides) when given, patches otherwise (`training.metrics.Bootstrap`).
    """
    intervals = binary_intervals(labels, scores, threshold, Bootstrap(len(labels), groups, rounds, seed))
    return {k: intervals[k] for k in ("sensitivity", "specificity", "accuracy")}


def fit_conformal(labels: np.ndarray, probability: np.ndarray, coverage: float) -> ConformalRule:
    """The split-conformal rule for the ensemble's calibrated probabilities on the calibration split."""
    labels = np.asarray(labels).astype(int).reshape(-1)
    quantile = conformal_quantile(probability, labels, coverage)
    sets = prediction_sets(probability, quantile)
    return ConformalRule(
        coverage=coverage,
        quantile=quantile,
        calibration_patches=len(labels),
        calibration_coverage=float(sets[np.arange(len(labels)), labels].mean()),
        both_labels_share=float(sets.all(axis=1).mean()),
    )


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
    # Defaulted: calibration.json files written before the field existed were fitted on fp32 logits.
    precision: Precision = Field("fp32", description="Whose validation logits: the fp32 or the INT8 graphs.")
    review: ReviewRules | None = Field(None, description="The review flags' rules (training.review).")


def calibrate(
    logits: Mapping[str, np.ndarray],
    labels: np.ndarray,
    weights: Mapping[str, float],
    groups: np.ndarray | None = None,
    recalibrate_ensemble: bool = True,
    coverage: float | None = DEFAULT_COVERAGE,
) -> Calibration:
    """Fit temperatures, combine, choose operating points and measure everything on validation.

    With recalibrate_ensemble, a temperature on the logit of the weighted mean is fitted by NLL too:
    calibrated members do not make a calibrated mean (averaging pulls toward 0.5). With a coverage,
    the split-conformal quantile of the final probabilities is fitted too (None: no prediction sets).
    """
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
    mean = ensemble_probability(logits, temperatures, weights)
    ensemble_temperature = 1.0
    if recalibrate_ensemble:
        z = ensemble_logit(*_in_member_order(logits, temperatures, weights))
        ensemble_temperature = fit_temperature(z, labels)
    p = ensemble_probability(logits, temperatures, weights, ensemble_temperature)
    points = operating_points(labels, p, groups)
    uncalibrated = ensemble_probability(logits, dict.fromkeys(logits, 1.0), weights)
    metrics = {
        "auc": float(roc_auc_score(labels, p)),
        "nll": float(np.mean(-np.log(np.clip(np.where(labels == 1, p, 1 - p), 1e-12, None)))),
        "ece_before": ece(uncalibrated, labels),
        "ece_members_calibrated": ece(mean, labels),
        "ece_after": ece(p, labels),
        "temperature": ensemble_temperature,
        "validation_patches": float(len(labels)),
        "validation_prevalence": float(labels.mean()),
    }
    for name, point in points.items():
        intervals = bootstrap_rates(labels, p, point.threshold, groups)
        for rate in ("sensitivity", "specificity"):
            metrics[f"{name}_{rate}_ci_low"], metrics[f"{name}_{rate}_ci_high"] = intervals[rate]
    return Calibration(
        members=members,
        ensemble=EnsembleRule(
            temperature=ensemble_temperature,
            operating_points=points,
            metrics=metrics,
            conformal=None if coverage is None else fit_conformal(labels, p, coverage),
        ),
    )
